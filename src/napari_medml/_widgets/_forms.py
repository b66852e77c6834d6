"""Form fields and values shared by the training widgets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_medml.config import OptimConfig, usual_learning_rate
from napari_medml.errors import InputError

__all__ = ["PLANNED", "add_loss_fields", "add_optimizer_fields", "class_weights", "is_planned", "optimizer_settings",
           "parse_size", "planned_choice", "planned_number", "planned_value", "status_label"]


def parse_size(text: str, dims: int, what: str = "patch size", of: str = "image") -> tuple[int, ...] | None:
    """``"0"``/``""`` -> None (automatic); ``"64"`` -> (64,)*dims; ``"16, 64, 64"`` -> a tuple.

    ``what`` names the field in the error message (``InputError``, shown as a notification), ``of``
    what has ``dims`` axes: ``"image"``, or ``"network"`` where the 2D/3D choice sets them.
    """
    parts = [p for p in text.replace("x", ",").replace(" ", ",").split(",") if p]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(f"{what} {text!r}: give whole numbers such as '64' or '16, 64, 64'") from None
    if not values or values == (0,):
        return None
    if min(values) < 1:
        raise InputError(f"{what} {text!r}: sizes must be 1 or more, such as '64' or '16, 64, 64' (or 0 alone: "
                         "automatic)")
    if len(values) == 1:
        values = values * dims
    if len(values) != dims:
        example = "'16, 64, 64'" if dims == 3 else "'128, 128'"
        raise InputError(f"{what} {text!r} has {len(values)} values, but the {of} is {dims}D: give {dims} "
                         f"values such as {example}, or one value for every axis"
                         + (", or set 2D/3D to the image's dimensions" if of == "network" else ""))
    return values


def status_label(value: str = "") -> object:
    """A magicgui Label for status lines, wrapped: a long line (a warning about the data,
    the plan, a score line) wraps inside the dock instead of widening it."""
    from magicgui.widgets import Label
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value=value, label="")
    label.native.setWordWrap(True)
    # magicgui's Label is Fixed, so the layout took the label's unwrapped width (a plan of
    # 200-character lines widened the form past its dock): Preferred lets it wrap narrower
    policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
    policy.setHeightForWidth(True)
    label.native.setSizePolicy(policy)
    return label


def add_optimizer_fields(w: dict[str, Any]) -> None:
    """Add *momentum* and *weight decay* to the form ``w`` (after its ``"optimizer"``).

    Momentum shows the chosen optimizer's default (SGD 0.99, RMSprop 0) when the optimizer
    changes, and is enabled for SGD and RMSprop only (Adam and AdamW have none).
    """
    from magicgui.widgets import FloatSpinBox

    w["momentum"] = FloatSpinBox(value=0.0, min=0.0, max=0.999, step=0.01, label="momentum",
                                 tooltip="SGD (with Nesterov) and RMSprop; the field shows the optimizer's "
                                 "default when you choose it: SGD 0.99 (nnU-Net's), RMSprop 0")
    w["momentum"].native.setDecimals(3)
    w["weight_decay"] = FloatSpinBox(value=OptimConfig.weight_decay, min=0.0, max=0.5, step=1e-5,
                                     label="weight decay", tooltip="L2 penalty (AdamW: decoupled)")
    w["weight_decay"].native.setDecimals(6)

    def follow(name: str) -> None:
        w["momentum"].value = OptimConfig(optimizer=name).momentum_in_use
        w["momentum"].enabled = name in ("sgd", "rmsprop")

    w["optimizer"].changed.connect(follow)
    follow(w["optimizer"].value)


def add_rate_field(w: dict[str, Any]) -> None:
    """Add *learning rate* to the form ``w`` (after its ``"optimizer"``): it shows the chosen
    optimizer's usual rate when the optimizer changes (SGD 0.01, the others 0.001), as
    *momentum* does, so that switching to SGD does not train it at Adam's rate."""
    from magicgui.widgets import FloatSpinBox

    w["lr"] = FloatSpinBox(value=usual_learning_rate(w["optimizer"].value), min=1e-6, max=1.0, step=1e-4,
                           label="learning rate", tooltip="shows the optimizer's usual rate when you choose it: "
                           "SGD 0.01 (nnU-Net's, with momentum 0.99), RMSprop, Adam and AdamW 0.001")
    w["lr"].native.setDecimals(6)
    w["optimizer"].changed.connect(lambda name: setattr(w["lr"], "value", usual_learning_rate(name)))


def optimizer_settings(w: dict[str, Any]) -> dict[str, Any]:
    """``OptimConfig`` keywords from :func:`add_optimizer_fields`' fields."""
    with_momentum = w["optimizer"].value in ("sgd", "rmsprop")
    return {"momentum": float(w["momentum"].value) if with_momentum else None,
            "weight_decay": float(w["weight_decay"].value)}


PLANNED = "planned"
"""A field left to the plan (Train widget): its value comes from the data when *plan from the
data* is ticked, else it is the default. A field showing a number or a name is the user's,
even when that is the default: the form never shows one value and trains with another."""


def planned_choice(choices: Sequence[Any], default: Any, **kwargs: Any) -> Any:
    """A ComboBox whose first choice, selected, is :data:`PLANNED` (else ``default``)."""
    from magicgui.widgets import ComboBox

    tooltip = kwargs.pop("tooltip", "")
    return ComboBox(choices=[PLANNED, *choices], value=PLANNED, tooltip=_planned_tip(tooltip, default), **kwargs)


def planned_number(kind: str, default: float, minimum: float, **kwargs: Any) -> Any:
    """A number field that shows :data:`PLANNED` at its ``minimum`` (Qt's special value text),
    where it starts: whole numbers (``kind`` "int", no decimals) or decimals ("float")."""
    from magicgui.widgets import FloatSpinBox

    tooltip = kwargs.pop("tooltip", "")
    # a QDoubleSpinBox for whole numbers too: magicgui's SpinBox (superqt's) shows no special value text
    box = FloatSpinBox(value=minimum, min=minimum, tooltip=_planned_tip(tooltip, default),
                       **({"step": 1} if kind == "int" else {}), **kwargs)
    if kind == "int":
        box.native.setDecimals(0)
    box.native.setSpecialValueText(PLANNED)
    return box


def is_planned(field: Any) -> bool:
    """Whether a field of :func:`planned_choice` or :func:`planned_number` is left to the plan."""
    if isinstance(field.value, str):
        return field.value == PLANNED
    # a negative minimum (warm-up's): any value typed below 0 is the sentinel too
    return field.value == field.min or (field.min < 0 and field.value < 0)


def planned_value(field: Any, default: Any) -> Any:
    """The field's value (of ``default``'s type: an int for a width), or ``default`` when it is
    left to the plan (the plan replaces it)."""
    if is_planned(field):
        return default
    number = isinstance(default, int | float) and not isinstance(default, bool)
    return type(default)(field.value) if number else field.value


def _planned_tip(tooltip: str, default: Any) -> str:
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    return ((tooltip + "; ") if tooltip else "") + (f"'{PLANNED}': chosen from the data when 'plan from the data' "
                                                    f"is ticked, else {shown}; a value you set is kept")


def add_loss_fields(w: dict[str, Any]) -> None:
    """Add *label smoothing* and *class weights* to the form ``w`` (after its ``"loss"``)."""
    from magicgui.widgets import FloatSpinBox, LineEdit

    w["smoothing"] = FloatSpinBox(value=0.0, min=0.0, max=0.5, step=0.05, label="label smoothing",
                                  tooltip="cross-entropy's targets move this share towards the other classes")
    w["weights"] = LineEdit(value="", label="class weights",
                            tooltip="one weight per class in class-id order, e.g. '1, 3'; empty = equal")


def class_weights(w: dict[str, Any]) -> tuple[float, ...] | None:
    """The *class weights* field of :func:`add_loss_fields` (None: empty, equal weights).

    Raises
    ------
    InputError
        Text that is not numbers.
    """
    text = w["weights"].value.strip()
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise InputError(f"class weights {w['weights'].value!r}: give numbers such as '1, 3'") from None
