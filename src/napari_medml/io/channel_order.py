"""Channels named by their files (OME ``Channel`` names, OME-Zarr ``omero`` labels), matched
against the order a model was trained on: the same stains stored in another order are
taken in the model's order, and names that differ are said. No library matches channels
by name across files, so this small table of names is ours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["in_channel_order", "match_channels"]


def match_channels(expected: Sequence[str] | None, given: Sequence[str], what: str,
                   trained: str = "the model was trained on") -> tuple[list[int] | None, str | None]:
    """How to take ``given``'s channels in ``expected``'s order.

    Parameters
    ----------
    expected : sequence of str or None
        The channel names in the order wanted (a model's ``config.data.channel_names``);
        None or empty when unknown.
    given : sequence of str
        The names an image's file gives its channels, in stored order; empty when it names none.
    what : str
        How the line names the image (``"image 'b.ome.tif'"``).
    trained : str
        What ``expected`` is, as the line says it.

    Returns
    -------
    (list of int or None, str or None)
        The indices of ``given`` to take, in order, when it holds the same names in another
        order (with a note); None and a warning when the names differ; None and None when
        either is unknown or they agree.
    """
    expected, given = [str(n) for n in expected or ()], [str(n) for n in given or ()]
    if not expected or not given or expected == given:
        return None, None
    shown = lambda names: ", ".join(names)  # noqa: E731
    if sorted(expected) == sorted(given) and len(set(given)) == len(given):
        return [given.index(n) for n in expected], (
            f"{what} stores its channels as {shown(given)}; {trained} {shown(expected)}: taken in that order")
    return None, (f"warning: {what} names its channels {shown(given)}, but {trained} {shown(expected)}: check "
                  "that they hold the same stains in the same order (or train on images named alike)")


def in_channel_order(data: Any, channel_axis: int, order: Sequence[int]) -> Any:
    """``data`` with the channels along ``channel_axis`` taken in ``order`` (NumPy or dask, lazily).

    Parameters
    ----------
    data : array-like
    channel_axis : int
    order : sequence of int
        Indices into the channel axis, as :func:`match_channels` gives them.
    """
    if isinstance(data, np.ndarray):
        return np.take(data, list(order), axis=channel_axis)
    import dask.array as da

    return da.take(da.asarray(data), list(order), axis=channel_axis)
