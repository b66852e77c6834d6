"""The unit of a time axis's interval, as each format names it.

A volume's ``meta["time_unit"]`` holds nibabel's name (``"sec"``, ``"msec"``, ``"usec"``), the
three NIfTI can store; an interval in minutes or hours is read as seconds (its spacing times 60
or 3600), so every writer can say it. No library maps ImageJ's, OME's and OME-Zarr's names onto
each other: this table is it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TIME_UNIT_KEY", "canonical_time_unit", "display_time_unit", "imagej_time_unit", "ngff_time_unit",
           "ome_time_unit"]  # fmt: skip

TIME_UNIT_KEY = "time_unit"

_SECONDS = {
    "s": ("sec", 1.0), "sec": ("sec", 1.0), "secs": ("sec", 1.0), "second": ("sec", 1.0), "seconds": ("sec", 1.0),
    "ms": ("msec", 1.0), "msec": ("msec", 1.0), "millisecond": ("msec", 1.0), "milliseconds": ("msec", 1.0),
    "us": ("usec", 1.0), "µs": ("usec", 1.0), "μs": ("usec", 1.0), "\\u00b5s": ("usec", 1.0), "usec": ("usec", 1.0),
    "microsecond": ("usec", 1.0), "microseconds": ("usec", 1.0),
    "min": ("sec", 60.0), "mins": ("sec", 60.0), "minute": ("sec", 60.0), "minutes": ("sec", 60.0),
    "h": ("sec", 3600.0), "hr": ("sec", 3600.0), "hour": ("sec", 3600.0), "hours": ("sec", 3600.0),
}  # fmt: skip
_SHORT = {"sec": "s", "msec": "ms", "usec": "us"}  # napari's units (pint) and ImageJ's and OME's text
_NGFF = {"sec": "second", "msec": "millisecond", "usec": "microsecond"}


def canonical_time_unit(raw: Any) -> tuple[str | None, float]:
    """A file's time unit as nibabel names it, and the factor that brings its intervals to that unit.

    Parameters
    ----------
    raw : str or None
        The unit as the file gives it: ImageJ's ``tunit`` (``"sec"``, ``"min"``, ``"ms"``), OME's
        ``TimeIncrementUnit`` (``"s"``, ``"ms"``, ``"µs"``, ``"min"``, ``"h"``), OME-Zarr's
        (``"second"``, ``"millisecond"``, ``"minute"``) or nibabel's (``"sec"``, ``"msec"``, ``"usec"``).

    Returns
    -------
    (str or None, float)
        ``("sec" | "msec" | "usec", factor)``; ``(None, 1.0)`` for a unit that is not a time
        (``"frame"``, NIfTI's ``"hz"``) or none.
    """
    if raw is None:
        return None, 1.0
    text = str(raw).strip()
    return _SECONDS.get(text.lower(), _SECONDS.get(text, (None, 1.0)))


def display_time_unit(unit: Any) -> str | None:
    """napari's unit (pint's ``"s"``, ``"ms"``, ``"us"``) for a ``meta["time_unit"]``; None if unknown."""
    return _SHORT.get(str(unit)) if unit is not None else None


def imagej_time_unit(unit: Any) -> str | None:
    """ImageJ's ``tunit`` text for a ``meta["time_unit"]``; None for seconds (ImageJ's default)."""
    return None if unit in (None, "sec") else _SHORT.get(str(unit))


def ome_time_unit(unit: Any) -> str:
    """OME's ``TimeIncrementUnit`` for a ``meta["time_unit"]`` (seconds when none is known)."""
    return {"msec": "ms", "usec": "µs"}.get(str(unit), "s")


def ngff_time_unit(unit: Any) -> str | None:
    """OME-Zarr's time axis unit for a ``meta["time_unit"]``; None when none is known."""
    return _NGFF.get(str(unit)) if unit is not None else None
