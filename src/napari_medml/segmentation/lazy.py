"""Training data from images larger than memory (dask or zarr arrays): nothing is loaded whole.

- Patches are read when drawn: :class:`LazyImage` reads a region, casts it to float32
  and normalises it; :class:`LazyLabels` reads a region and encodes it.
- Class ids and the class-balanced crop centres come from one pass over the labels
  block by block (:meth:`LazyLabels.class_indices`, at most ``max_indices`` centres per
  class kept, a uniform sample of each class's voxels).
- Normalisation statistics are estimated from a random sample of patch-sized blocks of
  the training part (:func:`sample_blocks`).
- A preprocessing recipe of per-voxel steps (fill NaN, z-score, min-max, CT window) and
  small filters (gaussian, median) is replayed lazily on the whole image, its statistics
  computed first (:mod:`napari_medml.preprocessing.lazy_recipe`); other steps are refused.
- Validation: a block at the end of the longest axis (at most two patches thick and four
  patches wide), loaded into memory; training never draws from it.

``prepare.prepare_training_data`` hands lazy inputs here (:func:`prepare_lazy`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medml.errors import ConfigError, InputError, check_numeric
from napari_medml.preprocessing.inputs import FILL_NAN
from napari_medml.segmentation.split import axis_phrase

__all__ = ["LazyImage", "LazyLabels", "is_lazy", "prepare_lazy", "sample_blocks"]

_SAMPLE_BLOCKS = 24  # blocks read for the normalisation statistics


def is_lazy(array: Any) -> bool:
    """A dask or zarr array (read region by region), not a NumPy array."""
    kind = type(array).__module__.split(".")[0]
    return kind in ("dask", "zarr") and hasattr(array, "shape") and hasattr(array, "dtype")


class LazyImage:
    """A ``(C, *spatial)`` lazy image read region by region, as float32, normalised.

    Parameters
    ----------
    data : dask or zarr array
        ``(C, *spatial)``.
    normalization : dict
        ``normalization.fit_normalization`` statistics.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, data: Any, normalization: dict) -> None:
        self.data = data
        self.normalization = normalization
        self.shape = tuple(int(s) for s in data.shape)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        from napari_medml.preprocessing.normalization import apply_normalization

        arr = np.asarray(self.data[key], dtype=np.float32)
        if not np.isfinite(arr).all():
            raise InputError(f"image contains {int((~np.isfinite(arr)).sum())} NaN or infinite value(s): " + FILL_NAN)
        return apply_normalization(arr, self.normalization)


class LazyLabels:
    """A lazy label map read region by region and encoded (``channel + 1``, 0 unlabeled).

    Parameters
    ----------
    data : dask or zarr array
        ``(*spatial)`` integer class ids.
    class_ids : sequence of int
    mode : str
        ``"dense"`` or ``"sparse"``.
    background_id : int
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, data: Any, class_ids: Sequence[int], mode: str, background_id: int) -> None:
        self.data = data
        self.class_ids, self.mode, self.background_id = tuple(class_ids), mode, background_id
        self.shape = tuple(int(s) for s in data.shape)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        from napari_medml.segmentation.data import encode_labels

        return encode_labels(np.asarray(self.data[key]), self.class_ids, self.mode, self.background_id)

    def class_indices(self, first_class: int, max_indices: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
        """Flat indices (into :attr:`shape`) of each encoded class ``>= first_class``, block by
        block; a uniform sample of at most ``max_indices`` per class, sorted."""
        found: dict[int, list[np.ndarray]] = {}
        counts: dict[int, int] = {}
        for where in _blocks(self.shape, _edge(self.shape)):
            block = self[where]
            offset = [w.start for w in where]
            for cls in np.unique(block):
                if cls < first_class:
                    continue
                local = np.nonzero(block == cls)
                flat = np.ravel_multi_index(tuple(a + o for a, o in zip(local, offset)), self.shape)
                found.setdefault(int(cls), []).append(flat)
                counts[int(cls)] = counts.get(int(cls), 0) + flat.size
                if counts[int(cls)] > 4 * max_indices:  # keep memory bounded: thin to a uniform sample
                    merged = np.concatenate(found[int(cls)])
                    found[int(cls)] = [np.sort(rng.choice(merged, 2 * max_indices, replace=False))]
                    counts[int(cls)] = 2 * max_indices
        out = {}
        for cls, parts in found.items():
            merged = np.concatenate(parts)
            if merged.size > max_indices:
                merged = rng.choice(merged, max_indices, replace=False)
            out[cls] = np.sort(merged)
        return out


def _edge(shape: Sequence[int]) -> int:
    """A block edge giving blocks of about 16 M voxels."""
    return max(16, int(round((2**24) ** (1 / len(shape)))))


def _blocks(shape: Sequence[int], edge: int, edges: Sequence[int] | None = None) -> list[tuple[slice, ...]]:
    """The tiling of ``shape`` into blocks of ``edge`` (or per-axis ``edges``) voxels."""
    edges = tuple(edges) if edges is not None else (edge,) * len(shape)
    starts = itertools.product(*[range(0, s, e) for s, e in zip(shape, edges)])
    return [tuple(slice(o, min(o + e, s)) for o, e, s in zip(origin, edges, shape)) for origin in starts]


def sample_blocks(image: Any, patch: Sequence[int], count: int, seed: int,
                  labels: Any = None) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Float32 blocks of a lazy ``(C, *spatial)`` image: its tiling into patch-sized blocks,
    or ``count`` of those tiles drawn at random (tiles, so that every part of the image is
    equally likely; random positions would favour the centre).

    Returns the image blocks and, when ``labels`` (a :class:`LazyLabels` over the same
    spatial grid) is given, each block's labelled-foreground mask (encoded labels ``>= 2``,
    for the normalisations fitted on the foreground); otherwise None.
    """
    rng = np.random.default_rng(seed)
    tiles = _blocks(image.shape[1:], 0, patch)
    order = rng.permutation(len(tiles))
    chosen = sorted(order[:count].tolist())
    blocks = [np.asarray(image[(slice(None), *tiles[i])], dtype=np.float32) for i in chosen]
    if labels is None:
        return blocks, None
    masks = [labels[tiles[i]] >= 2 for i in chosen]
    if not any(m.any() for m in masks):  # none drawn holds foreground: look for tiles that do, labels first
        for i in order[count:].tolist():
            mask = labels[tiles[i]] >= 2
            if mask.any():
                blocks.append(np.asarray(image[(slice(None), *tiles[i])], dtype=np.float32))
                masks.append(mask)
                if len(blocks) >= 2 * count:
                    break
    return blocks, masks


def _as_channels_first(image: Any, channel_axis: int | None, spatial_dims: int, in_channels: int | None,
                       name: str) -> Any:
    import dask.array as da

    arr = da.asarray(image)
    arr = da.moveaxis(arr, channel_axis, 0) if channel_axis is not None else arr[None]
    if arr.ndim - 1 != spatial_dims:
        raise InputError(f"{name} has {arr.ndim - 1} spatial dimensions (shape {tuple(image.shape)}) but the model "
                         f"is {spatial_dims}D: set the channel axis, or use a {arr.ndim - 1}D model")  # fmt: skip
    if in_channels is not None and arr.shape[0] != in_channels:
        raise InputError(f"{name} has {arr.shape[0]} channel(s) but {in_channels} are expected")
    check_numeric(arr.dtype, name)
    return arr


def _check_lazy_patch(patch: tuple[int, ...], factors: Sequence[int], shape: tuple[int, ...],
                      given: bool = True) -> None:
    """Refuse a patch that the network cannot take or the (unpadded) lazy image cannot hold,
    with a patch that works or, for an axis thinner than its factor, the ways out (``prepare``
    reads such an image into memory, where that axis is padded, when it fits)."""
    if not any(p % f for p, f in zip(patch, factors)) and all(p <= s for p, s in zip(patch, shape)):
        return
    by = factors[0] if len(set(factors)) == 1 else f"{tuple(factors)} along its axes"
    what = f"patch_size {patch} must" if given else f"the automatic patch {patch} would"
    thin = [a for a, (f, s) in enumerate(zip(factors, shape)) if s < f]
    if thin:  # blocks are read as stored: nothing pads a lazy image, so no patch fits this axis
        raise ConfigError(f"{what} be divisible by {by} and fit the image {shape}, which has {shape[thin[0]]} "
                          f"voxels along axis {thin[0]} and is too large to read into memory, where that axis "
                          "would be padded: use the DynUNet network ('dynunet'), which does not halve an axis that "
                          "short, or crop the image")
    fit = tuple(min(max(f, p // f * f), s // f * f) for p, f, s in zip(patch, factors, shape))
    raise ConfigError(f"{what} be divisible by {by} and fit the image {shape}: use {fit}")


def prepare_lazy(images: list, labels: list, config: Any, *, spacings: list, channel_axis: int | None,
                 base: Any = None, max_patch_voxels: int | None = None) -> Any:
    """``prepare.prepare_training_data`` for lazy (dask/zarr) images and labels.

    Raises
    ------
    InputError
        Shapes that do not match, non-integer labels, too few classes.
    ConfigError
        A recipe step that needs the whole image in memory (the fill NaN, z-score, min-max, CT
        window, gaussian and median steps are replayed block by block: ``preprocessing.lazy_recipe``), a patch size
        that does not fit.
    """
    import dask.array as da

    from napari_medml.nn.strides import patch_divisor, patch_divisors
    from napari_medml.preprocessing.normalization import apply_normalization, fit_normalization
    from napari_medml.segmentation import data
    from napari_medml.segmentation.data import TrainingData

    from napari_medml.preprocessing.lazy_recipe import blockwise_refusal, replay_lazy

    dc = config.data
    refusal = blockwise_refusal(dc.preprocessing, "training on lazy (Zarr) images",
                                "preprocess and save the image first, or train without those steps")
    if refusal:
        raise ConfigError(refusal)
    if len(images) != 1:
        raise InputError(f"lazy (Zarr/dask) training takes one image and its labels, got {len(images)}: "
                         "train on one large image, or on several in-memory images")  # fmt: skip
    image = _as_channels_first(images[0], channel_axis, dc.spatial_dims,
                               base.in_channels if base is not None else None, "image")  # fmt: skip
    label = da.asarray(labels[0])
    if tuple(label.shape) != tuple(image.shape[1:]):
        raise InputError(f"labels have shape {tuple(label.shape)} but image has spatial shape "
                         f"{tuple(image.shape[1:])}: labels must cover the image voxel for voxel")  # fmt: skip
    if label.dtype.kind not in "biu":
        raise InputError(f"labels have dtype {label.dtype}: labels must be integer class ids")
    if dc.preprocessing:  # over the whole image, as in memory: the held-out block takes part in the statistics
        image = replay_lazy(image, dc.preprocessing, spacing=spacings[0])
    present = np.asarray(da.unique(label).compute())  # block by block
    if present.size and present.min() < 0:
        raise InputError("labels contain negative ids: class ids must be >= 0")
    class_ids = data.find_class_ids([present], dc.label_mode, dc.background_id)
    if base is not None:
        extra = sorted(set(class_ids) - set(base.class_ids))
        if extra:
            raise InputError(f"labels contain class id(s) {extra} that the model {base.class_ids} does not know")
        class_ids = base.class_ids

    shape = tuple(int(s) for s in image.shape[1:])
    divisor = patch_divisor(config.model)
    if base is not None:  # (review 46: unchecked, a thin image's fine-tune crashed in the network)
        patch = tuple(base.patch_size)
        _check_lazy_patch(patch, patch_divisors(config.model, patch, spacings[0]), shape)
    elif dc.patch_size is not None:
        patch = tuple(int(p) for p in dc.patch_size)
        factors = patch_divisors(config.model, patch, spacings[0])
        _check_lazy_patch(patch, factors, shape)
    else:
        patch = data.auto_patch_size(shape, spacings[0], dc.spatial_dims, dc.memory_budget_mb, divisor,
                                     bytes_per_voxel=96.0 * config.model.channels * dc.batch_size,
                                     max_voxels=max_patch_voxels)  # fmt: skip
        _check_lazy_patch(patch, patch_divisors(config.model, patch, spacings[0]), shape, given=False)
    # held out: a block at the end of the longest axis, at most 2 patches thick and 4 wide
    axis = int(np.argmax(shape))
    half = shape[axis] // 2 // divisor * divisor  # a patch that leaves room for a block of its thickness
    if dc.val_fraction > 0 and base is None and dc.patch_size is None and divisor <= half < patch[axis]:
        patch = tuple(half if a == axis else p for a, p in enumerate(patch))  # the automatic patch gives way
    thick = 0 if dc.val_fraction <= 0 else min(2 * patch[axis], max(patch[axis], int(dc.val_fraction * shape[axis])))
    too_small = bool(thick) and shape[axis] - thick < patch[axis]
    if too_small:
        thick = 0
    train_where = tuple(slice(0, s - thick) if a == axis else slice(None) for a, s in enumerate(shape))
    train_image, train_label = image[(slice(None), *train_where)], label[train_where]
    train_labels = LazyLabels(train_label, class_ids, dc.label_mode, dc.background_id)
    if base is not None:
        normalization = base.normalization
    else:  # as in memory, the foreground's statistics where the method uses them (ct)
        blocks, masks = sample_blocks(train_image, patch, _SAMPLE_BLOCKS, config.seed,
                                      train_labels if dc.normalization == "ct" else None)
        normalization = fit_normalization(blocks, dc.normalization, masks=masks)
    train = data.Region(LazyImage(train_image, normalization), train_labels)
    val, note = [], "no validation (val_fraction 0)"
    if too_small:
        note = (f"no validation: the image's {shape[axis]} voxels along {axis_phrase(axis, len(shape))} hold no "
                f"held-out block next to a {patch[axis]}-voxel patch; give a smaller patch (at most "
                f"{max(half, divisor)} along that axis) to validate")
    if thick:
        val_where = []
        for a, s in enumerate(shape):
            if a == axis:
                val_where.append(slice(s - thick, s))
            else:
                width = min(s, 4 * patch[a])
                val_where.append(slice((s - width) // 2, (s - width) // 2 + width))
        val_where = tuple(val_where)
        region = data.Region(
            apply_normalization(np.asarray(image[(slice(None), *val_where)], dtype=np.float32), normalization),
            data.encode_labels(np.asarray(label[val_where]), class_ids, dc.label_mode, dc.background_id))
        val = [region] if region.label.any() else []
        size = "x".join(str(w.stop - w.start) for w in val_where)
        note = (f"validation on a {size} block at the end of {axis_phrase(axis, len(shape))}" if val else
                f"the held-out {size} block has no labelled voxels: validation off")  # fmt: skip
    note += f"; patches read lazily from the {'x'.join(map(str, shape))} image"
    from napari_medml.segmentation.validation import missing_from_validation

    every = np.arange(1, len(class_ids) + 1, dtype=np.uint8)  # the classes found in the labels, encoded
    unscored = missing_from_validation(val, [every], class_ids) if val else None
    return TrainingData([train], val, note, class_ids, int(image.shape[0]), spacings[0], patch, normalization,
                        warnings=[unscored] if unscored else [])

