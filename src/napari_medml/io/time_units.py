"""The unit of a time axis's interval, as each format names it.

A volume's ``meta["time_unit"]`` holds nibabel's name (``"sec"``, ``"msec"``, ``"usec"``), the
three NIfTI can store; an interval in minutes or hours is read as seconds (its spacing times 60
or 3600), so every writer can say it. No library maps ImageJ's, OME's and OME-Zarr's names onto
each other: this table is it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TIME_UNIT_KEY", "canonical_time_unit", "display_time_unit", "imagej_time_unit", "ngff_time_unit",
           "nifti_time_unit", "ome_time_unit"]  # fmt: skip

TIME_UNIT_KEY = "time_unit"

_SECONDS = {
    "s": ("sec", 1.0), "sec": ("sec", 1.0), "secs": ("sec", 1.0), "second": ("sec", 1.0), "seconds": ("sec", 1.0),
    "ms": ("msec", 1.0), "msec": ("msec", 1.0), "millisecond": ("msec", 1.0), "milliseconds": ("msec", 1.0),
    "us": ("usec", 1.0), "µs": ("usec", 1.0), "μs": ("usec", 1.0), "\\u00b5s": ("usec", 1.0), "usec": ("usec", 1.0),
    "microsecond": ("usec", 1.0), "microseconds": ("usec", 1.0),
    "min": ("sec", 60.0), "mins": ("sec", 60.0), "minute": ("sec", 60.0), "minutes": ("sec", 60.0),
    "h": ("sec", 3600.0), "hr": ("sec", 3600.0), "hour": ("sec", 3600.0), "hours": ("sec", 3600.0),
    "d": ("sec", 86400.0), "day": ("sec", 86400.0), "days": ("sec", 86400.0),
    "ns": ("usec", 1e-3), "nsec": ("usec", 1e-3), "nanosecond": ("usec", 1e-3), "nanoseconds": ("usec", 1e-3),
    "ps": ("usec", 1e-6), "picosecond": ("usec", 1e-6), "picoseconds": ("usec", 1e-6),
}  # fmt: skip
_NIFTI = ("sec", "msec", "usec", "hz", "ppm", "rads")  # nibabel's names of NIfTI's time-slot units
_SHORT = {"sec": "s", "msec": "ms", "usec": "us"}  # napari's units (pint) and ImageJ's text
_OME = {"sec": "s", "msec": "ms", "usec": "µs"}
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
        ``("sec" | "msec" | "usec", factor)`` for a time (days to picoseconds); a unit that is
        not one (``"frame"``, NIfTI's ``"hz"``) as the file writes it, with factor 1: kept, shown
        as napari's "pixel", and written back where the format can say it (ImageJ's free text,
        NIfTI's own units), left out where it cannot (trial 43: it was saved as seconds);
        ``(None, 1.0)`` for none.
    """
    if raw is None or not str(raw).strip():
        return None, 1.0
    text = str(raw).strip()
    return _SECONDS.get(text.lower(), _SECONDS.get(text, (text, 1.0)))


def display_time_unit(unit: Any) -> str | None:
    """napari's unit (pint's ``"s"``, ``"ms"``, ``"us"``) for a ``meta["time_unit"]``; None if unknown."""
    return _SHORT.get(str(unit)) if unit is not None else None


def imagej_time_unit(unit: Any) -> str | None:
    """ImageJ's ``tunit`` text for a ``meta["time_unit"]``; None for seconds (ImageJ's default)
    and for none; another unit's own text (ImageJ takes any)."""
    return None if unit in (None, "sec") else _SHORT.get(str(unit), str(unit))


def ome_time_unit(unit: Any) -> str | None:
    """OME's ``TimeIncrementUnit`` for a ``meta["time_unit"]``; None for a unit that is not a
    time (OME's time units are times only)."""
    return _OME.get(str(unit)) if unit is not None else None


def nifti_time_unit(unit: Any, frames: int) -> str:
    """nibabel's NIfTI time-slot unit for a ``meta["time_unit"]`` of a series of ``frames``
    frames: its own when NIfTI has it; else seconds, the only way NIfTI marks a 4th axis as
    time (``"unknown"`` reads back as an unnamed axis); ``"unknown"`` for one frame or none."""
    if frames <= 1:
        return "unknown"
    return str(unit) if str(unit) in _NIFTI else "sec"


def ngff_time_unit(unit: Any) -> str | None:
    """OME-Zarr's time axis unit for a ``meta["time_unit"]``; None when none is known."""
    return _NGFF.get(str(unit)) if unit is not None else None
