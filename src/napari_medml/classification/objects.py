"""Object-level classification samples: one sample per object of instance labels.

Each object is cropped in a square (cubic) box around it, image and object mask as
channels, resized to the network's input size; the box is the object's own (shape and
texture) or one side for all objects (size too). numpy and SciPy only: no torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
from scipy import ndimage as ndi

from napari_medml.classification.data import (
    ClassSamples,
    _check_labels,
    _check_size,
    _label_dtype,
    _resize,
    _split_channels,
    check_finite_samples,
    majority_class,
    map_ids,
    mixed_keys,
    mixed_note,
)
from napari_medml.errors import InputError

__all__ = ["DEFAULT_OBJECT_SIZE", "OBJECT_BOXES", "ObjectBox", "object_level_labels", "object_samples"]

DEFAULT_OBJECT_SIZE = {2: (64, 64), 3: (32, 32, 32)}

ObjectBox = Literal["own", "common"]
OBJECT_BOXES: tuple[str, ...] = get_args(ObjectBox)


def object_samples(image: np.ndarray, instances: np.ndarray, *, class_labels: np.ndarray | None = None,
                   channel_axis: int | None = None, input_size: Sequence[int] | None = None,
                   margin: float = 0.2, min_margin: int = 2, box: ObjectBox = "own",
                   box_side: int | None = None, name: str = "image") -> ClassSamples:
    """One sample per object of an instance labels array.

    Each object is cut out in a square (cubic) box centred on its bounding box; outside
    the image is zero. With ``box="own"`` the box's side is the object's longest extent
    plus a margin on each side, so every object fills its sample whatever its size (the
    network sees shape and texture, not size). With ``box="common"`` every object gets
    a box of the same side, ``box_side`` voxels, so a larger object fills more of its
    sample (size is seen too); an object larger than the box is cut at its edges (the
    mask channel shows how much). The box is resized to ``input_size`` with two kinds of
    channel: the image (linear) and the object's own mask (nearest, 0/1).

    Parameters
    ----------
    image : np.ndarray
        2D or 3D image (plus a channel axis where ``channel_axis`` says).
    instances : np.ndarray
        Integer instance ids, the image's spatial shape; 0 = background.
    class_labels : np.ndarray, optional
        Classes painted on (some of) the objects; an object's class is the most
        frequent nonzero value inside it, 0 = unknown.
    channel_axis : int, optional
        The image's channel axis.
    input_size : sequence of int, optional
        Network input shape; default 64 x 64 (2D) or 32 x 32 x 32 (3D).
    margin : float
        Margin on each side as a fraction of the object's longest extent.
    min_margin : int
        At least this many voxels of margin.
    box : {"own", "common"}
        Each object's own box, or one side for all (see above).
    box_side : int, optional
        With ``box="common"``: the side in voxels. Default: the 95th percentile of the
        objects' own box sides (training); a model stores it in its ``params`` and
        predicts with the same side.
    name : str
        The image's name, for messages.

    Returns
    -------
    ClassSamples
        ``x`` is ``(N, C + 1, *input_size)``; ``index`` the instance ids; ``sizes``
        the voxels per object; ``params`` holds ``box`` and, for a common box, ``box_side``.

    Raises
    ------
    InputError
        Instance labels of the wrong shape, dimension or type, no objects, one id for
        several separate objects (a mask), a negative margin, an unknown ``box`` or a
        ``box_side`` below 1.
    """
    inst = np.asarray(instances)
    spatial_dims = inst.ndim
    if spatial_dims not in (2, 3):
        raise InputError(f"instance labels have shape {inst.shape}: they must be 2D or 3D")
    if not np.issubdtype(inst.dtype, np.integer):
        raise InputError(f"instance labels have dtype {inst.dtype}: they must be integer object ids")
    data = _split_channels(image, channel_axis, spatial_dims, name)
    if data.shape[1:] != inst.shape:
        raise InputError(
            f"instance labels have shape {inst.shape} but {name} has {data.shape[1:]} "
            "(without channels): use the instance labels of this image"
        )
    size = _check_size(input_size or DEFAULT_OBJECT_SIZE[spatial_dims], spatial_dims, "input_size")
    if margin < 0 or min_margin < 0:
        raise InputError("the object margin must be >= 0")
    if box not in OBJECT_BOXES:
        raise InputError(f"object box {box!r}: use 'own' (each object's own size) or 'common' (one size for all)")
    if box_side is not None and int(box_side) < 1:
        raise InputError(f"object box side {box_side}: give a side of 1 voxel or more")
    if inst.size and inst.min() < 0:
        raise InputError("instance labels contain negative ids: object ids must be >= 0 (0 = background)")
    # objects numbered 1..n here (any id size, e.g. 2**40, without a table of the largest id)
    object_ids = np.unique(inst)
    object_ids = object_ids[object_ids > 0].astype(np.int64)
    if object_ids.size == 0:
        raise InputError("the instance labels contain no objects: segment the objects first")
    if object_ids.size == 1:
        _, parts = ndi.label(inst > 0)
        if parts > 1:  # a foreground mask given as instances: one "object" of many parts
            raise InputError(f"the instance labels have one id ({object_ids[0]}) for {parts} separate objects: "
                             "that is a mask, not instances; give each object its own id (Predict with an "
                             "instance model, or skimage.measure.label)")
    inst = np.searchsorted(np.r_[0, object_ids], inst).astype(np.int64)
    boxes = ndi.find_objects(inst)
    ids = np.arange(1, object_ids.size + 1, dtype=np.int64)
    n_max = int(ids.max()) + 1
    sizes = np.bincount(inst.ravel(), minlength=n_max)[ids]
    if class_labels is not None:
        lab = _check_labels(class_labels, inst.shape, "class labels", name)
        y = majority_class(inst, lab, n_max)[ids]
        if not (y > 0).any():
            raise InputError(
                f"the class labels paint none of the {ids.size} objects: paint a class "
                "inside some objects (any painted pixel of an object gives its class)"
            )
        mixed = object_ids[mixed_keys(inst, lab) - 1]
    else:
        y, mixed = np.zeros(ids.size, np.int64), []
    extents = np.array([max(s.stop - s.start for s in boxes[oid - 1]) for oid in ids])
    own_sides = np.ceil(extents + 2 * np.maximum(margin * extents, min_margin)).astype(int)
    note = mixed_note(mixed, "object", "id")  # trial 38: resolved without a word
    if box == "common" and box_side is None:
        box_side = int(np.ceil(np.percentile(own_sides, 95)))
    elif box == "common":  # a stored side: objects larger than in training are cut
        cut = int((extents > int(box_side)).sum())
        if cut > 0.1 * ids.size:
            note += ("; " if note else "") + (
                f"{cut} of {ids.size} objects are larger than the model's common box ({int(box_side)} voxels): "
                "they are cut at its edges; if the image's scale differs from the training images', resample it "
                "to theirs")
    x = np.zeros((ids.size, data.shape[0] + 1, *size), np.float32)
    for n, oid in enumerate(ids):
        bounds = boxes[oid - 1]
        side = int(box_side) if box == "common" else int(own_sides[n])
        centre = [(s.start + s.stop) / 2.0 for s in bounds]
        lo = [int(np.floor(c - side / 2.0)) for c in centre]
        src, dst = _box(lo, side, inst.shape)
        crop = np.zeros((data.shape[0],) + (side,) * spatial_dims, np.float32)
        crop[(slice(None), *dst)] = data[(slice(None), *src)]
        mask = np.zeros((1,) + (side,) * spatial_dims, np.float32)
        mask[(0, *dst)] = inst[src] == oid
        x[n, :-1] = _resize(crop, size, order=1)
        x[n, -1] = _resize(mask, size, order=1)[0] >= 0.5
    check_finite_samples(x, name, "object")
    return ClassSamples(x=x, y=y, index=object_ids, level="object", source_shape=tuple(inst.shape),
                        image_channels=data.shape[0],
                        params={"spatial_dims": spatial_dims, "input_size": list(size),
                                "margin": float(margin), "min_margin": int(min_margin), "box": box,
                                **({"box_side": int(box_side)} if box == "common" else {})},
                        sizes=sizes.astype(np.int64), note=note)


def _box(lo: Sequence[int], side: int, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Source slices in the image and destination slices in a ``side``-wide box from ``lo``."""
    src, dst = [], []
    for start, n in zip(lo, shape):
        a, b = max(start, 0), min(start + side, n)
        src.append(slice(a, b))
        dst.append(slice(a - start, b - start))
    return tuple(src), tuple(dst)


def object_level_labels(instances: np.ndarray, object_ids: Sequence[int], classes: Sequence[int]) -> np.ndarray:
    """Instance labels recoloured: every object takes its class id (objects not listed: 0)."""
    inst = np.asarray(instances)
    ids = np.asarray(object_ids).astype(np.int64).ravel()
    cls = np.asarray(classes).astype(np.int64).ravel()
    if ids.size != cls.size:
        raise InputError(f"{ids.size} object ids but {cls.size} classes: one class per object")
    return map_ids(inst, ids, cls, _label_dtype(cls))
