"""How an image file meets a network: its axes resolved, its channels checked against the
model's (or one of them taken, ``predict --channel``), and a fix in the options' words."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_medml.cli.common import AXES_HINT, info

__all__ = ["image_layout"]


def image_layout(vol: Any, path: Path, spatial_dims: int | None, *, labels_shape: Any = None,
                 in_channels: int | None = None, labels_what: str = "labels",
                 channel: int | None = None, channel_names: Any = None) -> tuple[Any, Any]:
    """An image volume with every axis named, and how it meets a ``spatial_dims``-D network.

    Unnamed axes (``Q``) are resolved from the labels' shape and the network's channels
    (:func:`napari_medml.io.axes_resolve.resolve_axes`); when that does not settle it, the error
    names ``--axes``. ``spatial_dims`` None: 3 when the image has a Z axis, else 2.
    A one-slice volume for a 3D network (its length-1 Z, or unnamed axis, came off on
    reading) gets that axis back as Z when predicting (``labels_shape`` None), with an
    info line; a 2D image, or one to train on, is refused as one slice.

    ``channel`` (``predict --channel``): the one channel of a multi-channel image the model
    takes; the others are left out. ``channel_names`` (a model's ``config.data.channel_names``):
    an image whose file names the same channels in another order is taken in this one, with
    an info line; names that differ get a warning line (``io.channel_order``).

    Returns
    -------
    tuple
        ``(volume, layout)``: the volume with resolved axes and its ``io_axes.Layout``.

    Raises
    ------
    InputError
        Axes that cannot be told apart, too few for the network, a 2D network on one
        sagittal or coronal slice, or channels other than ``in_channels``.
    """
    from dataclasses import replace

    from napari_medml.errors import InputError
    from napari_medml.io.axes import SINGLETONS_KEY, layout, one_slice_volume
    from napari_medml.io.axes_resolve import check_not_strips, resolve_axes

    what = f"image '{path}'"
    unnamed = "Q" in vol.axes  # axes the file does not name: --axes can say which holds the channels
    axes = resolve_axes(vol.axes, vol.data.shape, what=what, hint=AXES_HINT, spatial_dims=spatial_dims,
                        labels_shape=labels_shape, in_channels=in_channels, labels_what=labels_what)  # fmt: skip
    if spatial_dims == 2 and "Q" in vol.axes and any(d[0] == "Z" for d in vol.meta.get(SINGLETONS_KEY) or []):
        # the file's own Z has length 1 (it came off on reading): an unnamed axis that a 2D network takes
        # as slices is not that Z but frames, and the outputs keep the file's Z (case 33 j06)
        axes = "".join("T" if given == "Q" and a == "Z" else a for given, a in zip(vol.axes, axes))
    vol = replace(vol, axes=axes)
    dims = spatial_dims or (3 if "Z" in axes else 2)
    others = [(a, n) for a, n in zip(axes, vol.data.shape) if a not in "YX"]
    if dims == 3 and "Z" not in axes and all(a == "C" and n == in_channels for a, n in others):
        # one slice (its length-1 Z came off on reading, or the file holds a 2D image), channels aside
        dropped = vol.meta.get(SINGLETONS_KEY) or []
        rgb = bool(vol.meta.get("rgb"))
        back = None if labels_shape is not None else one_slice_volume(vol.data, axes, vol.spacing, vol.origin,
                                                                      dropped, rgb)
        if back is None:
            order = "; a NIfTI's x, y reversed" if "sform_code" in vol.meta else ""  # a NIfTI, with codes or not
            raise InputError(f"{what} is one 2D slice (axes {axes}, shape {tuple(vol.data.shape)}{order}) but the "
                             "network is 3D: it needs a volume of several slices; give the volume, or use a 2D network "
                             "(train --spatial-dims 2; the widget's 2D/3D)")
        data, axes, spacing, origin, left = back
        meta = {k: v for k, v in vol.meta.items() if k != SINGLETONS_KEY} | ({SINGLETONS_KEY: left} if left else {})
        vol = replace(vol, data=data, axes=axes, spacing=spacing, origin=origin, meta=meta)
        info(f"{what} has one slice: taken as a volume of 1 slice (axes {axes}) for the 3D network")
    check_not_strips(axes, vol.data.shape, dims, what)
    lay = layout(axes, dims, what, f"or {AXES_HINT}")
    if channel is not None:
        if in_channels is not None and in_channels > 1 and lay.channel_axis is not None and \
                int(vol.data.shape[lay.channel_axis]) == in_channels:  # trial 48: "has 1 channel", for --channel's
            raise InputError(f"--channel {channel} takes one channel, for a one-channel model; this model takes "
                             f"{in_channels} channels and {what} has them (axes {vol.axes}): drop --channel")
        vol = _one_channel(vol, lay.channel_axis, channel, what, unnamed)
        lay = layout(vol.axes, dims, what, f"or {AXES_HINT}")
    channels = 1 if lay.channel_axis is None else int(vol.data.shape[lay.channel_axis])
    if channel_names and lay.channel_axis is not None and channel is None:
        vol = in_model_channel_order(vol, lay.channel_axis, channel_names, what)
    if in_channels is not None and channels != in_channels:  # before any work, in the options' words
        fix = _channel_fix(vol.axes, vol.data.shape, in_channels, bool(vol.meta.get("rgb")), dims)
        if in_channels == 1 and channel is None and labels_shape is None:  # predicting: one channel can be taken
            fix += f", or take one of its channels with --channel (0 to {channels - 1})"
        raise InputError(f"the model was trained on {in_channels} channel(s) but {what} has {channels} "
                         f"(axes {vol.axes}, shape {tuple(vol.data.shape)}): {fix}")
    return vol, lay


def _one_channel(vol: Any, axis: int | None, channel: int, what: str, unnamed: bool = False) -> Any:
    """``vol`` with only channel ``channel`` of its channel axis ``axis`` (``predict --channel``);
    ``unnamed``: its file did not name its axes (they were worked out)."""
    from dataclasses import replace

    from napari_medml.errors import InputError

    if axis is None:
        if unnamed:  # review 44: a (2, Y, X) .npy read as ZYX was told to leave --channel out
            first = next(i for i, a in enumerate(vol.axes) if a not in "YX") if set(vol.axes) - set("YX") else None
            if first is not None:
                example = vol.axes[:first] + "C" + vol.axes[first + 1:]
                raise InputError(f"--channel {channel}: {what} has no channel axis (axes {vol.axes}, worked out: the "
                                 f"file does not name them): if axis {first} holds the channels, say so with --axes "
                                 f"{example}; else leave --channel out")
        raise InputError(f"--channel {channel}: {what} has no channel axis (axes {vol.axes}): leave --channel out")
    count = int(vol.data.shape[axis])
    if not 0 <= channel < count:
        raise InputError(f"--channel {channel}: {what} has {count} channels: give 0 to {count - 1}")
    data = vol.data[(slice(None),) * axis + (channel,)]
    rgb = bool(vol.meta.get("rgb"))
    keep = [k for k in range(len(vol.spacing)) if rgb or k != axis]  # an RGB colour axis has no spacing
    meta = {**vol.meta, "rgb": False} if rgb else vol.meta
    return replace(vol, data=data, axes=vol.axes[:axis] + vol.axes[axis + 1:], meta=meta,
                   spacing=tuple(vol.spacing[k] for k in keep), origin=tuple(vol.origin[k] for k in keep))


def _channel_fix(axes: str, shape: Sequence[int], in_channels: int, rgb: bool, dims: int) -> str:
    """The fix for an image with other channels than the model's: the ``--axes`` that names an
    axis of the right length as the channels and the others as the ``dims``-D network needs
    them (the last ``dims`` spatial, one axis before them time), or, when no axis has that
    length, an image with those channels."""
    same = "give an image with the same channels as the training images"
    body = axes[:-1] if rgb else axes  # an RGB colour axis is what it is
    candidates = [i for i, (a, n) in enumerate(zip(body, shape)) if n == in_channels and a not in "CYX"]
    if not candidates and in_channels == 1 and "C" in body and "Z" not in body:  # a stack stored as channels
        return f"{same}, or, if its channels are the slices of a volume, say so with --axes {body.replace('C', 'Z')}"
    rest = len(body) - 1 - dims  # axes left in front of the spatial ones once one holds the channels
    if not candidates or rest not in (0, 1):
        return same
    i = candidates[0]
    names = iter("T" * rest + "ZYX"[-dims:])
    letters = "".join("C" if k == i else next(names) for k in range(len(body)))
    return f"{same}, or, if axis {i} (length {in_channels}) holds them, say so with --axes {letters}"


def in_model_channel_order(vol: Any, axis: int, names: Any, what: str,
                           trained: str = "the model was trained on") -> Any:
    """``vol`` with its named channels in the model's order ``names`` (trial 48: the same stains
    stored in another order were segmented without a word, Dice 0.18 for 0.97); ``trained``: what
    ``names`` are, as the line says it."""
    from dataclasses import replace

    from napari_medml.io.axes import CHANNEL_NAMES_KEY, channel_names_of
    from napari_medml.io.channel_order import in_channel_order, match_channels

    order, line = match_channels(names, channel_names_of(vol), what, trained)
    if line:
        info(line)
    if order is None:
        return vol
    return replace(vol, data=in_channel_order(vol.data, axis, order), meta={**vol.meta, CHANNEL_NAMES_KEY: list(names)})
