"""The one check of a ``spacing`` argument (voxel size per spatial axis) that training
and prediction share: a sequence of finite positive numbers, one per spatial axis.

Plain Python; it sits below the task packages so that ``api.fit`` and every model's
``predict`` give the same message for the same mistake.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from napari_medml.errors import InputError

__all__ = ["check_spacing", "check_spacings"]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _shown(spacing: Any) -> str:
    if isinstance(spacing, (list, tuple)) and all(_is_number(v) for v in spacing):
        return str(tuple(float(v) for v in spacing))
    return repr(spacing) if isinstance(spacing, str) else str(spacing)


def _example(spacing: Any, ndim: int) -> tuple[float, ...]:
    """A spacing that works: the given sizes where usable (the last ``ndim``), 1.0 elsewhere."""
    if _is_number(spacing):
        given = [float(spacing)]
    elif isinstance(spacing, Sequence) and not isinstance(spacing, str):
        given = [float(v) if _is_number(v) else math.nan for v in spacing][-ndim:]
    else:
        given = []
    usable = [v if math.isfinite(v) and v > 0 else 1.0 for v in given]
    return tuple(usable + [1.0] * (ndim - len(usable)))


def check_spacing(spacing: Any, ndim: int, *, name: str = "spacing", what: str = "image",
                  extra: int = 0) -> tuple[float, ...] | None:
    """Return ``spacing`` as ``ndim`` floats (None stays None), or say how to fix it.

    Parameters
    ----------
    spacing : sequence of float or None
        Voxel size per spatial axis (physical units).
    ndim : int
        The number of spatial axes (2 or 3).
    name : str
        What to call it in the message (``"spacing"``, ``"spacing of image 2"``).
    what : str
        What has the axes (``"image"``, ``"model"``), for the message.
    extra : int
        How many leading sizes more may be given (a stack's or time series' own axes);
        only the last ``ndim`` are returned.

    Returns
    -------
    tuple of float or None

    Raises
    ------
    InputError
        A scalar, a sequence of another length, or a size that is not a finite number > 0.
    """
    if spacing is None:
        return None
    values: list[float] = []
    ok = (isinstance(spacing, Sequence) and not isinstance(spacing, str)) or hasattr(spacing, "__array__")
    if ok:
        try:
            items = list(spacing)
        except TypeError:  # a 0-d array
            items, ok = [], False
        ok = ok and ndim <= len(items) <= ndim + extra and all(_is_number(v) for v in items)
        values = [float(v) for v in items][-ndim:] if ok else []
        ok = ok and all(math.isfinite(v) and v > 0 for v in values)
    if not ok:
        raise InputError(f"{name} {_shown(spacing)} must give one positive voxel size per spatial axis "
                         f"({ndim} for this {ndim}D {what}), e.g. {_example(spacing, ndim)}")
    return tuple(values)


def check_spacings(spacing: Any, ndim: int) -> Any:
    """Check a training run's ``spacing``: one for all images, or one per image (each may be None).

    Parameters
    ----------
    spacing : sequence of float, sequence of (sequence of float or None), or None
    ndim : int
        The run's spatial axes (``DataConfig.spatial_dims``).

    Returns
    -------
    The spacing as given (tuples of float where checked), so the tasks read it as before.

    Raises
    ------
    InputError
        As :func:`check_spacing`, naming the image (1-based) when one per image is given.
    """
    if spacing is None or _is_number(spacing) or isinstance(spacing, str):
        return check_spacing(spacing, ndim)
    try:
        items = list(spacing)
    except TypeError:  # not a sequence at all, or a 0-d array
        return check_spacing(spacing, ndim)
    nested = [v is None or (hasattr(v, "__len__") and not isinstance(v, str)) for v in items]
    if not items or not all(nested):
        return check_spacing(spacing, ndim)
    return [check_spacing(v, ndim, name=f"spacing of image {i + 1} of {len(items)}")
            for i, v in enumerate(items)]
