"""Errors the core raises for things a user can fix.

Every message names the input at fault and says what to change, e.g.
"labels 'seg' have shape (64, 128) but image 'ct' has (64, 128, 128): ...".
Widgets show these as napari notifications; the command line prints one line.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BundleError", "Cancelled", "ConfigError", "InputError", "MedMLError", "NothingLearned", "check_numeric",
           "raise_if_stopped"]

class MedMLError(ValueError):
    """Base class for user-fixable problems raised by napari-medml."""


class ConfigError(MedMLError):
    """A configuration value is out of range or of the wrong kind."""


class InputError(MedMLError):
    """An image, labels array or file is unusable as given (shape, dtype, content)."""


class BundleError(MedMLError):
    """A model bundle is missing, damaged, or does not fit the data it is used on."""


class Cancelled(Exception):
    """A long operation was stopped by the user (a stop token or Cancel button)."""


class NothingLearned(Cancelled):
    """A training run was stopped before its first step: there is no model to keep."""


def raise_if_stopped(stop: Any | None, message: str = "stopped") -> None:
    """Raise ``Cancelled(message)`` when ``stop`` (a ``StopToken``; None for a run that nobody
    stops) was tripped: the check an interruptible loop makes between its steps.

    Raises
    ------
    Cancelled
        When ``stop.stop()`` was called.
    """
    if stop is not None and stop.stopped:
        raise Cancelled(message)


def check_numeric(dtype: Any, name: str = "image") -> None:
    """Refuse an image whose dtype holds no real numbers (bool, text, objects, complex).

    Parameters
    ----------
    dtype : numpy dtype
        The array's dtype.
    name : str
        How the message names the array.

    Raises
    ------
    InputError
        Naming the dtype; for a complex one, the way to a real image (trial 47: its imaginary
        part was dropped with only NumPy's ComplexWarning).
    """
    kind = getattr(dtype, "kind", "")
    if kind == "c":
        raise InputError(f"{name} has dtype {dtype}: give a real image (np.abs or .real of the complex one)")
    if kind not in ("i", "u", "f"):
        raise InputError(f"{name} has dtype {dtype}: give a numeric image")
