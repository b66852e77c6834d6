"""Reading typed values out of form text (shared by the training widgets)."""

from __future__ import annotations

from napari_medml.errors import InputError

__all__ = ["parse_size", "status_label"]


def parse_size(text: str, dims: int, what: str = "patch size") -> tuple[int, ...] | None:
    """``"0"``/``""`` -> None (automatic); ``"64"`` -> (64,)*dims; ``"16, 64, 64"`` -> a tuple.

    ``what`` names the field in the error message (``InputError``, shown as a notification).
    """
    parts = [p for p in text.replace("x", ",").replace(" ", ",").split(",") if p]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(f"{what} {text!r}: give whole numbers such as '64' or '16, 64, 64'") from None
    if not values or values == (0,):
        return None
    if len(values) == 1:
        values = values * dims
    if len(values) != dims:
        raise InputError(f"{what} {text!r} has {len(values)} values for a {dims}D image")
    return values


def status_label() -> object:
    """An empty magicgui Label for status lines, wrapped: a long line (a warning about the
    data, the plan) wraps inside the dock instead of widening it."""
    from magicgui.widgets import Label

    label = Label(value="", label="")
    label.native.setWordWrap(True)
    return label
