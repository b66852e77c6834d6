"""What each axis of an image is: axes strings, their canonical order, length-1 axes.

An axes string names every axis of an array with one letter:

- ``T`` time (frames), ``C`` channels (an RGB(A) colour axis too), ``Z``, ``Y``, ``X``;
- ``Q`` an axis the file does not name (a plain ``.npy`` stack, a TIFF without
  ImageJ/OME metadata): it may be z, time or channels, and is resolved from what
  the data meet (labels' shape, a model's dimensions and channels) by
  :func:`napari_medml.io.axes_resolve.resolve_axes`, or stated by the user (the ``--axes`` option,
  ``axes=`` in Python, a layer's ``axis_labels``).

Volumes are kept in one canonical order, napari's: non-spatial axes in front
(``T``/``Q``, then ``C``), spatial axes last (``Z``, ``Y``, ``X``), except that an
RGB colour axis stays last, where napari's ``rgb=True`` wants it. Length-1 axes other
than Y and X are dropped on reading and put back on writing (:func:`squeeze`,
:func:`unsqueeze`), so a 2D image stored as a one-slice NIfTI trains as 2D and its
prediction is written with the input's shape.

Hand-written: no library holds axis names next to a NumPy array with this rule set
(xarray would name axes but not carry NIfTI/ImageJ conventions or napari's order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from napari_medml.errors import InputError

__all__ = [
    "AXES_HINT",
    "AXIS_LETTERS",
    "CHANNEL_NAMES_KEY",
    "LAST",
    "SINGLETONS_KEY",
    "Layout",
    "axes_from_labels",
    "axes_to_labels",
    "canonical_order",
    "channel_names_of",
    "check_axes",
    "concrete_axes",
    "default_axes",
    "layout",
    "one_slice_volume",
    "placed_values",
    "samples_phrase",
    "squeeze",
    "unknown_axes",
    "unsqueeze",
]

AXIS_LETTERS = "TCZYXQ"
SINGLETONS_KEY = "singletons"  # Volume.meta key: the length-1 axes dropped on reading
LAST = "last"  # a dropped axis's fourth field: the file stored it after X (a channel-last (Y, X, 1))
CHANNEL_NAMES_KEY = "channel_names"  # Volume.meta key: the file's names of its C axis's channels, in order
_ORDER = {"T": 0, "Q": 0, "C": 1, "Z": 2, "Y": 3, "X": 4}
_LABEL_NAMES = {"t": "T", "time": "T", "frame": "T", "frames": "T", "c": "C", "ch": "C",
                "channel": "C", "channels": "C", "rgb": "C", "s": "C", "z": "Z", "depth": "Z",
                "slice": "Z", "y": "Y", "x": "X"}  # fmt: skip
_LETTER_LABELS = {"T": "t", "C": "c", "Z": "z", "Y": "y", "X": "x"}
AXES_HINT = ("name the axes: in napari the layer's axis labels (e.g. layer.axis_labels = ('z', 'y', 'x')), "
             "on the command line --axes (e.g. --axes CYX), in Python axes='ZYX'")


def placed_values(body: str, values: Sequence[float], axes: str, fill: float) -> tuple[float, ...]:
    """The values (voxel sizes or origins) of ``body``'s axes, for a result whose axes are ``axes``.

    Parameters
    ----------
    body : str
        The source's axis letters, one per value.
    values : sequence of float
        One per letter of ``body``.
    axes : str
        The result's axes: ``body``'s axes other than channels, or the last of them, with
        channel axes (``C``) of their own.
    fill : float
        The value of a channel axis, or of a letter ``body`` lacks.

    Returns
    -------
    tuple of float
        One per letter of ``axes``. Matched by position from the last axis, so the unnamed
        axes of a source (``QQYX``) keep their own values; by letter when ``axes`` are not
        such a tail.
    """
    own = [a for a in axes if a != "C"]
    kept = [(a, float(v)) for a, v in zip(body, values) if a != "C"]
    if len(own) <= len(kept) and own == [a for a, _ in kept[len(kept) - len(own):]]:
        tail = iter(v for _, v in kept[len(kept) - len(own):])
        return tuple(fill if a == "C" else next(tail) for a in axes)
    by_letter: dict[str, float] = {}
    for a, v in kept:
        by_letter.setdefault(a, v)
    return tuple(fill if a == "C" else by_letter.get(a, fill) for a in axes)


def default_axes(ndim: int, rgb: bool = False) -> str:
    """The axes an array built in code is taken to have: ``(…, C, Z, Y, X)`` from the right.

    A trailing RGB colour axis is ``C``; the others then come from ``T, Z, Y, X``.
    """
    n = ndim - int(rgb)
    letters = "TZYX" if rgb else "TCZYX"
    base = letters[-n:] if n <= len(letters) else "Q" * (n - len(letters)) + letters
    return base + ("C" if rgb else "")


def unknown_axes(ndim: int, rgb: bool = False) -> str:
    """Axes of an array whose file names none: Y and X last, ``Q`` in front."""
    n = ndim - int(rgb)
    return "Q" * max(n - 2, 0) + "YX"[-n:] + ("C" if rgb else "")


def check_axes(axes: str, ndim: int, what: str, hint: str = "") -> str:
    """Validate an axes string given for an array of ``ndim`` axes; return it upper-case.

    Raises
    ------
    InputError
        Unknown letters, a repeated letter (other than Q), no Y or X, or a length
        that differs from ``ndim``; the message names ``what`` and ``hint``.
    """
    text = str(axes).strip().upper()
    fix = f"; {hint}" if hint else ""
    bad = sorted(set(text) - set(AXIS_LETTERS))
    if bad:
        raise InputError(f"{what}: axes '{axes}' have unknown letter(s) {', '.join(bad)}: use T (time), "
                         f"C (channels), Z, Y, X{fix}")  # fmt: skip
    repeated = sorted({a for a in text if a != "Q" and text.count(a) > 1})
    if repeated:
        raise InputError(f"{what}: axes '{axes}' name {', '.join(repeated)} twice{fix}")
    if "Y" not in text or "X" not in text:
        raise InputError(f"{what}: axes '{axes}' must include Y and X{fix}")
    if len(text) != ndim:
        raise InputError(f"{what} has {ndim} axes but '{axes}' names {len(text)}{fix}")
    return text


def one_letter_each(ndim: int) -> str:
    """The ``--axes`` hint for a stored array of ``ndim`` axes, with an example of that many letters."""
    example = {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}.get(ndim)
    return f"give one letter per axis of the stored array ({ndim})" + (f", e.g. {example}" if example else "")


def canonical_order(axes: str, rgb: bool = False) -> list[int]:
    """The permutation that puts ``axes`` in canonical order (stable; RGB colour stays last)."""
    body = range(len(axes) - int(rgb))
    order = sorted(body, key=lambda i: _ORDER[axes[i]])
    return order + ([len(axes) - 1] if rgb else [])


def concrete_axes(axes: str, rgb: bool = False, labels: bool = False) -> str:
    """``axes`` with every ``Q`` given an unused letter (Z first, then T, then C), for
    file formats that must name each axis, placed in canonical order (``QQYX``: ``TZYX``):
    the formats store their axes in that order, so a file written from axes out of it
    (``ZTYX``) would read back transposed against the layer it was saved from. ``labels``:
    never C (a labels file with channels opens as images)."""
    out = list(axes)
    unnamed = [i for i in range(len(out) - int(rgb)) if out[i] == "Q"]
    free = [a for a in ("ZT" if labels else "ZTC") if a not in axes]  # labels with a C open as channel images
    if len(unnamed) > len(free):
        raise InputError(f"axes '{axes}' have more unnamed axes than a file can hold"
                         + (" without calling one of them channels (labels with channels open as images)"
                            if labels else "") + ": save as .npy")
    from itertools import combinations, permutations

    def filled(letters: Sequence[str]) -> str:
        return "".join(dict(zip(unnamed, letters)).get(i, a) for i, a in enumerate(out))

    if not unnamed:
        return axes  # named axes are written as they are
    for combo in combinations(free, len(unnamed)):  # in order of preference: Z, then T, then C
        for letters in permutations(combo):  # the first that keeps the whole string canonical (QCYX: TCYX)
            if canonical_order(filled(letters), rgb) == list(range(len(out))):
                return filled(letters)
    raise InputError(f"axes '{axes}': no letters for the unnamed axes keep the order files store (T, C, Z, Y, X), "
                     "so the file would open transposed: save as .npy")


def squeeze(data: Any, axes: str, spacing: Sequence[float], origin: Sequence[float],
            rgb: bool = False) -> tuple[Any, str, tuple[float, ...], tuple[float, ...], list]:
    """Drop length-1 axes other than Y, X and an RGB colour axis.

    Returns
    -------
    tuple
        ``(data, axes, spacing, origin, dropped)``; ``dropped`` lists
        ``[letter, spacing, origin]`` per removed axis (JSON-friendly), for :func:`unsqueeze`.
    """
    shape = np.shape(data)
    keep, dropped = [], []
    body = len(axes) - int(rgb)
    for i, letter in enumerate(axes):
        if i < body and shape[i] == 1 and letter not in "YX":
            dropped.append([letter, float(spacing[i]), float(origin[i])])
        else:
            keep.append(i)
    if not dropped:
        return data, axes, tuple(spacing), tuple(origin), []
    index = tuple(0 if i not in keep else slice(None) for i in range(len(axes)))
    kept_body = [i for i in keep if i < body]
    return (data[index], "".join(axes[i] for i in keep), tuple(float(spacing[i]) for i in kept_body),
            tuple(float(origin[i]) for i in kept_body), dropped)  # fmt: skip


def unsqueeze(data: Any, axes: str, spacing: Sequence[float], origin: Sequence[float],
              dropped: Sequence[Sequence[Any]], rgb: bool = False
              ) -> tuple[Any, str, tuple[float, ...], tuple[float, ...]]:
    """Put back the length-1 axes :func:`squeeze` removed that ``axes`` lacks (canonical places; after
    X for an axis marked :data:`LAST`)."""
    missing = [d for d in dropped if d[0] == "Q" or d[0] not in axes]
    if not missing:
        return data, axes, tuple(spacing), tuple(origin)
    body = axes[: len(axes) - int(rgb)]
    letters = list(body) + [str(d[0]) for d in missing]
    sizes = list(spacing) + [float(d[1]) for d in missing]
    offsets = list(origin) + [float(d[2]) for d in missing]
    places = [_ORDER[a] for a in body] + [len(_ORDER) if d[3:] == [LAST] else _ORDER[d[0]] for d in map(list, missing)]
    order = sorted(range(len(letters)), key=lambda i: places[i])
    arr = np.asarray(data).reshape(np.shape(data)[: len(body)] + (1,) * len(missing) + np.shape(data)[len(body):])
    arr = np.moveaxis(arr, order, range(len(order)))  # take axis order[j] to place j
    return (arr, "".join(letters[i] for i in order) + ("C" if rgb else ""),
            tuple(float(sizes[i]) for i in order), tuple(float(offsets[i]) for i in order))  # fmt: skip


def one_slice_volume(data: Any, axes: str, spacing: Sequence[float], origin: Sequence[float],
                     dropped: Sequence[Sequence[Any]], rgb: bool = False
                     ) -> tuple[Any, str, tuple[float, ...], tuple[float, ...], list] | None:
    """A one-slice volume with its slice axis put back as a length-1 ``Z``, for a 3D network.

    :func:`squeeze` drops a length-1 Z on reading (so a one-slice NIfTI is 2D), and a
    length-1 axis a file does not name (``Q``, e.g. a ``(1, Y, X)`` ``.npy``) too; a 3D
    network needs it back. The ``Z`` (else the first ``Q``) that :func:`squeeze` dropped
    goes back in front of Y, with the spacing and origin it had.

    Parameters
    ----------
    data : array-like
        The squeezed array, in canonical order.
    axes : str
        Its axes, without ``Z``.
    spacing, origin : sequence of float
        Per axis (the RGB colour axis excluded).
    dropped : sequence
        The ``[letter, spacing, origin]`` entries :func:`squeeze` returned.
    rgb : bool, optional
        Whether the last axis is an RGB colour axis.

    Returns
    -------
    tuple or None
        ``(data, axes, spacing, origin, dropped)`` with the slice axis back and out of
        ``dropped``; None when ``axes`` has a ``Z`` or no length-1 Z/Q was dropped.
    """
    if "Z" in axes or "Y" not in axes:
        return None
    picks = [k for k, d in enumerate(dropped) if d[0] == "Z"] or [k for k, d in enumerate(dropped) if d[0] == "Q"]
    if not picks:
        return None
    k = picks[0]
    _, size, offset = dropped[k]
    at = axes.index("Y")
    spacing, origin = list(spacing), list(origin)
    spacing.insert(at, float(size))
    origin.insert(at, float(offset))
    return (np.expand_dims(data, at), axes[:at] + "Z" + axes[at:], tuple(spacing), tuple(origin),
            [list(d) for j, d in enumerate(dropped) if j != k])  # fmt: skip


def axes_from_labels(labels: Sequence[Any] | None, ndim: int) -> str | None:
    """Axes from napari ``axis_labels`` (``"t"``, ``"c"``, ``"z"``, ``"y"``, ``"x"``, or names
    like ``"time"``/``"channel"``); None when they say nothing (napari's default labels)."""
    if labels is None or len(labels) != ndim:
        return None
    letters = [_LABEL_NAMES.get(str(label).strip().lower(), "Q") for label in labels]
    if set(letters) == {"Q"} or "Y" not in letters or "X" not in letters:
        return None
    text = "".join(letters)
    if any(a != "Q" and text.count(a) > 1 for a in text):
        return None
    return text


def axes_to_labels(axes: str, rgb: bool = False) -> tuple[str, ...] | None:
    """napari ``axis_labels`` for ``axes`` (an RGB colour axis has none); None with a ``Q``."""
    body = axes[: len(axes) - int(rgb)]
    if "Q" in body:
        return None
    return tuple(_LETTER_LABELS[a] for a in body)


class Layout(NamedTuple):
    """How an image meets a network: where its channels are, which axes are samples."""

    axes: str
    channel_axis: int | None
    sample_axes: tuple[int, ...]  # leading axes taken one index at a time (frames, slices)


def layout(axes: str, spatial_dims: int, what: str = "image", hint: str = "") -> Layout:
    """Where channels, samples and the ``spatial_dims`` spatial axes lie in ``axes``.

    Time and (for a 2D network) Z axes in front of the spatial ones are samples:
    trained on one by one and predicted frame by frame / slice by slice.

    Raises
    ------
    InputError
        Fewer axes than the network's dimensions, or an unknown (``Q``) axis left.
    """
    channel_axis = axes.index("C") if "C" in axes else None
    if "Q" in axes:
        raise InputError(f"{what}: what axes {axes} are is not known" + (f"; {hint}" if hint else ""))
    spatial = [i for i, a in enumerate(axes) if a in "ZYX"]
    if len(spatial) < spatial_dims:
        # naming axes helps only where some are not spatial yet (a T or C that is Z): a layer
        # (Y, X) cannot take the axis labels ('z', 'y', 'x'), as the hint said it could
        one_slice = (" (or give it a Z axis of length 1: a (1, Y, X) layer in napari, a (1, Y, X) .npy file "
                     "with --axes ZYX on the command line)" if len(spatial) == 2 and spatial_dims == 3
                     and len(axes) == 2 else "")
        before = [i for i, a in enumerate(axes[: axes.index("Y")]) if a in "TC"] if "Y" in axes else []
        if before and spatial_dims == 3 and len(spatial) == 2:  # only a Z can help, and only if it is one
            # (case 34 x02: the hint's --axes CYX gave the same refusal; a T read as Z mixes the frames)
            i = before[-1]
            name = {"T": "time", "C": "channel"}[axes[i]]
            reading = axes[:i] + "Z" + axes[i + 1:]
            fix = (f"; its {name} axis is not slices: a 3D network would mix them, so only if it really holds the "
                   f"slices of one volume, name it Z (--axes {reading} on the command line, the layer's axis "
                   "labels in napari)")
        else:
            fix = f"; {hint}" if hint and len(axes) > len(spatial) else ""
        raise InputError(f"{what} has axes {axes} ({len(spatial)} spatial) but the network is "
                         f"{spatial_dims}D: use a {len(spatial)}D network{one_slice}{fix}")
    kept = spatial[len(spatial) - spatial_dims:]
    samples = tuple(i for i, a in enumerate(axes) if a != "C" and i not in kept)
    return Layout(axes, channel_axis, samples)


def samples_phrase(axes: str, shape: Sequence[int], spatial_dims: int) -> str:
    """How many frames or slices a ``spatial_dims``-D network takes one at a time from an image
    of ``axes`` and ``shape`` (:func:`layout`'s sample axes), e.g. ``"4 frames"``, ``"31 slices"``,
    ``"12 frames/slices"``; ``""`` when the image is one sample. An unnamed (``Q``) axis is
    spatial where the network needs it, else slices.
    """
    spatial = [i for i, a in enumerate(axes) if a in "ZYXQ"][-spatial_dims:]
    lead = [i for i, a in enumerate(axes) if a != "C" and i not in spatial]
    if not lead:
        return ""
    count = int(np.prod([shape[i] for i in lead]))
    kinds = "/".join(("frame" if axes[i] == "T" else "slice") + ("s" if count != 1 else "") for i in lead)
    return f"{count} {kinds}"


def channel_names_of(volume: Any, axes: str | None = None) -> list[str]:
    """The names a file gave the channels of ``volume`` (OME ``Channel`` names, OME-Zarr
    ``omero`` labels), or [] when it has no ``C`` axis or the names do not count its channels.

    Parameters
    ----------
    volume : Volume
        ``meta[CHANNEL_NAMES_KEY]`` holds the names as read.
    axes : str, optional
        The axes letters of ``volume.data`` (default ``volume.axes``).
    """
    axes = volume.axes if axes is None else axes
    names = [str(n) for n in (volume.meta.get(CHANNEL_NAMES_KEY) or [])]
    c = axes.find("C")
    if c < 0 or c >= len(volume.data.shape) or len(names) != volume.data.shape[c]:
        return []
    return names
