"""Fitting an image's axes to a network: naming the axes its file leaves unnamed (``Q``) from
what the image meets (:func:`resolve_axes`), refusing a one-voxel-thick slab for a 2D
network (:func:`check_not_strips`), and cutting an image and its labels into the samples
a network trains on (:func:`split_samples`), and labels painted over an image's channel axis
as labels of its voxels (:func:`labels_over_channels`). Axes strings are those of :mod:`.axes`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medml.errors import InputError
from napari_medml.io.axes import canonical_order, layout

__all__ = ["check_not_strips", "labels_over_channels", "resolve_axes", "split_samples"]


def resolve_axes(axes: str, shape: Sequence[int], *, what: str, hint: str,
                 spatial_dims: int | None = None, labels_shape: Sequence[int] | None = None,
                 in_channels: int | None = None, labels_what: str = "labels") -> str:
    """Name the ``Q`` axes of an image from what it meets, or refuse when it matters.

    Each ``Q`` may be Z, T or C. A reading is kept when it fits every constraint
    given: the network's ``spatial_dims`` (a 3D network needs Z; Z and T are samples
    of a 2D one), the ``labels_shape`` (the image's shape without channels) and the
    network's ``in_channels``. Readings that differ only in calling a sample axis Z
    or T give the same result, so only the place of the channels must be unique.

    Raises
    ------
    InputError
        No reading fits, or two fit that disagree about the channels; the message
        names ``what`` and ``hint`` (the option that states the axes).
    """
    if "Q" not in axes:
        return axes
    fits: dict[int | None, str] = {}
    for text in _readings(axes):
        if not _fits(text, shape, spatial_dims, labels_shape, in_channels):
            continue
        key = text.index("C") if "C" in text else None
        # prefer Z over T for the same channel place (a stack is a volume unless told)
        if key not in fits or text.count("Z") > fits[key].count("Z"):
            fits[key] = text
    shape_text = "x".join(map(str, shape))
    # the hint's examples name 3 axes: a file of another number gets one of its own readings
    ordered = [t for t in _readings(axes) if canonical_order(t, rgb=t.endswith("C")) == list(range(len(t)))]

    def letters(example: str) -> str:
        return f" (one letter for each of its {len(shape)} axes, e.g. {example})" if hint else ""

    example = (sorted(fits.values()) or ordered or _readings(axes))[0]
    if len(fits) == 1:
        chosen = next(iter(fits.values()))
        stack = _imagej_stack(axes, chosen, shape, spatial_dims, labels_shape, in_channels)
        if stack:  # frames of a 2D network, or a Z-stack of channels as ImageJ stores it: only the user knows
            raise InputError(f"{what} has shape {shape_text} and its file does not say what the axes are "
                             f"(could be {chosen}: {_frames(chosen, shape)} for a 2D network, or {stack}: a "
                             f"Z-stack of {shape[stack.index('C')]} channels in ImageJ's order, for a 3D network): "
                             f"{hint}{letters(stack)}")  # fmt: skip
        return chosen
    stack = "" if fits else _imagej_stack(axes, "", shape, spatial_dims, labels_shape, in_channels)
    if stack:  # no reading in our order fits, one in ImageJ's does: it is what the user must say
        raise InputError(f"{what} has shape {shape_text} and its file does not say what the axes are; it fits "
                         f"as {stack}, a Z-stack of {shape[stack.index('C')]} channels in ImageJ's order: {hint} "
                         f"(here {stack})")  # fmt: skip
    if not fits and labels_shape is not None and any(
            _fits(t, shape, spatial_dims, None, in_channels) for t in _readings(axes)):
        raise InputError(f"{labels_what} have shape {tuple(labels_shape)} but {what} has shape {tuple(shape)}: "
                         "labels must have the image's shape (without its channel axis)"
                         f"{_interleaved(shape, labels_shape)}")  # fmt: skip
    if not fits and in_channels is not None and any(
            _fits(t, shape, spatial_dims, labels_shape, None) for t in _readings(axes)):
        # only the channels rule every reading out: naming the axes would not help
        raise InputError(f"the model was trained on {in_channels} channel(s) but {what} (shape {shape_text}) has "
                         "no axis that holds them: give an image with the same channels as the training images")
    if not fits:
        raise InputError(f"{what} has shape {shape_text} and its file does not say what the axes "
                         f"are; no reading fits ({_constraints(spatial_dims, labels_shape, in_channels)}): "
                         f"{hint}{letters(example)}")  # fmt: skip
    readings = " or ".join(sorted(fits.values()))
    raise InputError(f"{what} has shape {shape_text} and its file does not say what the axes are "
                     f"(could be {readings}): {hint}{letters(example)}")  # fmt: skip


def _interleaved(shape: Sequence[int], labels_shape: Sequence[int]) -> str:
    """The fix for a stack whose planes are slices times channels, saved without its axes (a
    TIFF of ``Z * C`` flat pages): its first axis a multiple of the labels', the rest equal."""
    shape, labels_shape = tuple(shape), tuple(labels_shape)
    if len(shape) != len(labels_shape) or shape[1:] != labels_shape[1:] or not 0 < labels_shape[0] < shape[0] \
            or shape[0] % labels_shape[0]:
        return ""
    z, c = labels_shape[0], shape[0] // labels_shape[0]
    parts = (z, c, *shape[1:])
    return (f"; if its {shape[0]} planes are {z} slices of {c} channels saved without their axes (the channels "
            f"of a slice next to each other, ImageJ's order), save it again with them: a TIFF in Python with "
            f"tifffile.imwrite(path, image.reshape{parts}, metadata={{'axes': 'ZCYX'}}) or in Fiji with Image > "
            f"Hyperstacks > Stack to Hyperstack; a .npy with np.save(path, image.reshape{parts}) and its axes named "
            "ZCYX (--axes ZCYX on the command line, the layer's axis labels in napari)")


def _imagej_stack(axes: str, chosen: str, shape: Sequence[int], spatial_dims: int | None,
                  labels_shape: Sequence[int] | None, in_channels: int | None) -> str:
    """The reading of ``axes`` in ImageJ's order (T, Z, C, Y, X; not ours) that makes a Z-stack of
    channels, which a plain ``tifffile.imwrite`` of case 06's hyperstack stores as ``(6, 2, Y, X)``.

    With ``chosen`` (the one reading in our order, T, C, Z, Y, X, that fits): only where it makes
    time frames with no Z and the network's dimensions are open (a 2D network takes frames and
    slices alike), and with the channels where it has them: ``ZCYX`` beside ``TCYX``. With
    ``chosen`` "" (no reading in our order fits): one that fits every constraint. "" when none.
    """
    if chosen and (spatial_dims is not None or "Z" in chosen or "T" not in chosen or "C" not in chosen):
        return ""
    for text in _readings(axes):
        imagej = [a for a in "TZCYX" if a in text] == [a for a in text if a in "TZCYX"]
        if not (imagej and "Z" in text and "C" in text) or (chosen and text.index("C") != chosen.index("C")):
            continue
        channels = shape[text.index("C")]
        without_c = tuple(n for n, a in zip(shape, text) if a != "C")
        if (in_channels is None or channels == in_channels) and (
                labels_shape is None or tuple(labels_shape) == without_c):
            return text
    return ""


def _frames(axes: str, shape: Sequence[int]) -> str:
    """``"6 frames of 2 channels"``: what a ``T...C`` reading makes of ``shape``."""
    frames = int(np.prod([n for n, a in zip(shape, axes) if a == "T"]))
    return f"{frames} frame{'s' if frames != 1 else ''} of {shape[axes.index('C')]} channels"


def _readings(axes: str) -> list[str]:
    """Every way of naming the Q axes Z, T or C with no letter twice."""
    import itertools

    slots = [i for i, a in enumerate(axes) if a == "Q"]
    out = []
    for letters in itertools.product("ZTC", repeat=len(slots)):
        cand = list(axes)
        for i, letter in zip(slots, letters):
            cand[i] = letter
        text = "".join(cand)
        if not any(text.count(a) > 1 for a in "TCZ"):
            out.append(text)
    return out


def _fits(axes: str, shape: Sequence[int], spatial_dims: int | None,
          labels_shape: Sequence[int] | None, in_channels: int | None) -> bool:
    # volumes keep T, C, Z, Y, X order; an RGB colour axis (a trailing C) stays last
    if canonical_order(axes, rgb=axes.endswith("C")) != list(range(len(axes))):
        return False
    spatial = sum(a in "ZYX" for a in axes)
    if spatial_dims is not None and spatial < spatial_dims:
        return False
    if spatial_dims is not None and spatial_dims == 3 and "Z" not in axes:
        return False
    channels = shape[axes.index("C")] if "C" in axes else 1
    if in_channels is not None and channels != in_channels:
        return False
    if labels_shape is not None:
        without_c = tuple(s for s, a in zip(shape, axes) if a != "C")
        if tuple(labels_shape) != without_c:
            return False
    return True


def _constraints(spatial_dims: int | None, labels_shape: Sequence[int] | None,
                 in_channels: int | None) -> str:
    parts = []
    if spatial_dims is not None:
        parts.append(f"a {spatial_dims}D network")
    if in_channels is not None:
        parts.append(f"{in_channels} channel(s)")
    if labels_shape is not None:
        parts.append("labels of shape " + "x".join(map(str, labels_shape)))
    return ", ".join(parts) or "none"


def check_not_strips(axes: str, shape: Sequence[int], spatial_dims: int, what: str) -> None:
    """Refuse a volume one voxel thick along Y or X (one sagittal or coronal slice, ``Z x Y x 1``)
    for a 2D network, which would take its Z rows as 1-voxel-wide strips.

    Raises
    ------
    InputError
        Naming the image, its axes and shape, and the fix (a 3D network, or a 2D image).
    """
    size = dict(zip(axes, shape))
    thin = [a for a in "YX" if size.get(a) == 1]
    if spatial_dims == 2 and size.get("Z", 1) > 1 and thin:
        raise InputError(f"{what} (axes {axes}, shape {tuple(shape)}) is one slice along {thin[0]}: a 2D network "
                         f"would see its {size['Z']} rows along Z as 1-voxel-wide strips; use a 3D network for "
                         "it (the default), or re-save the slice as a 2D image")


def split_samples(image: Any, labels: Any, axes: str, spatial_dims: int, spacing: Sequence[float] | None, *,
                  what: str = "image", hint: str = "", labels_what: str = "labels"
                  ) -> tuple[list, list, list, int | None]:
    """Cut an image and its labels into the samples a ``spatial_dims``-D network trains on.

    A time series gives one sample per frame, a volume under a 2D network one per
    slice; an image that is already ``spatial_dims``-D is one sample. The arrays are
    views (no copies).

    Parameters
    ----------
    image : array
        The image; ``axes`` names its axes (``Q`` axes are resolved from the labels).
    labels : array
        Labels of the image's shape without its channel axis.
    axes : str
        :attr:`Volume.axes` of ``image``.
    spatial_dims : int
        The network's dimensions.
    spacing : sequence of float or None
        Voxel size of the image's axes other than channels (or only the last
        ``spatial_dims``).
    what, hint, labels_what : str
        How messages name the image, the way to state its axes, and the labels.

    Returns
    -------
    tuple
        ``(images, labels, spacings, channel_axis)``: lists of samples, the spatial
        voxel size of each (None without spacing) and the samples' channel axis.

    Raises
    ------
    InputError
        Axes that cannot be told apart, too few for the network, or labels of
        another shape.
    """
    shape = np.shape(image)
    axes = resolve_axes(axes, shape, what=what, hint=hint, spatial_dims=spatial_dims,
                        labels_shape=np.shape(labels), labels_what=labels_what)  # fmt: skip
    check_not_strips(axes, shape, spatial_dims, what)
    lay = layout(axes, spatial_dims, what, hint)
    expected = tuple(n for n, a in zip(shape, axes) if a != "C")
    if tuple(np.shape(labels)) != expected:
        raise InputError(f"{labels_what} have shape {tuple(np.shape(labels))} but {what} (axes {axes}, shape "
                         f"{tuple(shape)}) has {expected} without channels: they must match")  # fmt: skip
    sizes = None if spacing is None else tuple(float(v) for v in spacing)[-spatial_dims:]
    channel = lay.channel_axis
    if channel is not None:
        channel -= sum(a < channel for a in lay.sample_axes)
    label_axes = [i for i, a in enumerate(axes) if a != "C"]
    images, label_parts = [], []
    for index in np.ndindex(*(shape[a] for a in lay.sample_axes)):
        where: list[Any] = [slice(None)] * len(shape)
        for axis, k in zip(lay.sample_axes, index):
            where[axis] = k
        images.append(image[tuple(where)])
        label_parts.append(labels[tuple(where[i] for i in label_axes)])
    return images, label_parts, [sizes] * len(images), channel


def sample_groups(image_shape: Sequence[int], labels_shape: Sequence[int], axes: str, spatial_dims: int, *,
                  what: str = "image", hint: str = "") -> tuple[int, ...]:
    """How :func:`split_samples` cuts an image: the runs of consecutive samples that are
    neighbours (the slices of one frame, or the frames of a time series), for the config's
    ``data.sample_groups``.

    Returns
    -------
    tuple of int
        ``(Z,) * T`` for a ``(T, Z, Y, X)`` series under a 2D network (frames follow each
        other in the list, but the last slice of one frame is no neighbour of the first of
        the next), ``(T,)`` for frames, ``(1,)`` for an image that is one sample.
    """
    axes = resolve_axes(axes, image_shape, what=what, hint=hint, spatial_dims=spatial_dims,
                        labels_shape=labels_shape)  # fmt: skip
    return neighbour_runs([image_shape[a] for a in layout(axes, spatial_dims, what, hint).sample_axes])


def neighbour_runs(lead: Sequence[int]) -> tuple[int, ...]:
    """The runs of neighbouring samples among those cut along the sample axes of sizes ``lead``
    (in :func:`split_samples`' order, the last axis fastest): ``(lead[-1],) * prod(lead[:-1])``,
    or ``(1,)`` for an image that is one sample."""
    import math

    return (int(lead[-1]),) * math.prod(int(n) for n in lead[:-1]) if len(lead) else (1,)


def labels_over_channels(labels: Any, image_shape: Sequence[int], axes: str, *, what: str = "image",
                         labels_what: str = "labels") -> tuple[Any, str | None]:
    """Labels that cover an image's channel axis too, painted on one channel, as labels of its voxels.

    napari's new-labels button makes a Labels layer of every axis of the image shown, so
    on a ``CZYX`` image (one layer with a channel slider) the user paints ``(C, Z, Y, X)``
    labels, on the channel the slider shows. The axis may hold slices that the file calls
    channels (a ZYX stack written without axes reads as CYX), so labels painted on several
    channels, and those over the channels of an image with no Z or T axis besides, are
    refused: reading them would move labels between slices, or train slices as channels.

    Parameters
    ----------
    labels : array
        Label ids, the image's shape without its channel axis, or with it.
    image_shape : sequence of int
        The image's shape; ``axes`` names its axes (:attr:`Volume.axes`, one ``C``).
    what, labels_what : str
        How messages name the image and the labels.

    Returns
    -------
    (array, str or None)
        The painted channel's labels (a view) and a note saying so; the labels as given and
        None when they do not cover the channel axis.

    Raises
    ------
    InputError
        Labels painted on more than one channel, or over the channels of a ``CYX`` image.
    """
    c = axes.find("C")
    if c < 0 or axes.endswith("C") or tuple(np.shape(labels)) != tuple(image_shape):
        return labels, None  # no channel axis, RGB's colour last (napari's labels never cover it), or labels without
    if not set(axes) & set("ZTQ"):  # CYX: a ZYX stack written without axes reads so; only the user can tell
        raise InputError(f"{labels_what} cover the channel axis of {what} (axes {axes}, shape {tuple(image_shape)}), "
                         "but labels are drawn per voxel: in napari, right-click the image > Split Stack, paint new "
                         "labels on one of its layers and choose all of them as the images; if that axis holds "
                         "slices, not channels, the image's file names its axes wrongly: give them (--axes on the "
                         "command line)")
    planes = np.moveaxis(np.asarray(labels), c, 0)
    painted = [k for k in range(planes.shape[0]) if planes[k].any()]
    if len(painted) > 1:
        raise InputError(f"{labels_what} cover the channel axis of {what} (axes {axes}, shape {tuple(image_shape)}) "
                         f"and are painted on {len(painted)} of its channels ({', '.join(map(str, painted))}): paint on "
                         "one channel only; if that axis holds slices or frames, the image's file names its axes "
                         "wrongly: give them (--axes on the command line)")
    on = f"painted on channel {painted[0]}" if painted else "none of its channels painted yet"
    return planes[painted[0] if painted else 0], (f"{labels_what} cover the channel axis of {what} (napari's new "
                                                  f"labels do): read as labels of its voxels, {on}")
