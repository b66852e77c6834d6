"""The data side of an instance training run: instance Labels -> learned targets, the
train/validation split, normalisation, patch size and batches.

The images and labels are checked, preprocessed and split by the segmentation
package's own pieces (``segmentation.data``, ``segmentation.split``); what differs is
the target: each instance Labels array becomes the three classes and the normalised
distance of :func:`~napari_medml.instances.targets.instance_target` (measured with the
image's spacing, after the preprocessing recipe), and the true instance ids travel
with the held-out part so that validation can score objects, not voxels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_medml.config import TrainConfig
from napari_medml.errors import ConfigError, InputError
from napari_medml.instances.postprocess import InstanceParams, params_from_labels
from napari_medml.instances.targets import instance_target
from napari_medml.segmentation.data import PatchSampler, Region

__all__ = ["CLASS_IDS", "DISTANCE_SCALE", "InstanceData", "InstanceRegion", "InstanceSampler",
           "prepare_instance_data"]

CLASS_IDS = (0, 1, 2)  # background, interior, boundary: the network's first three channels
# The distance target rides through MONAI's label transforms (nearest neighbour, cast to
# int64 at the end) as an integer in thousandths: exact enough for a target in [0, 1].
DISTANCE_SCALE = 1000.0


@dataclass
class InstanceRegion(Region):
    """A ``Region`` (image ``(C, *spatial)``, classes encoded ``class + 1``, 0 = not scored)
    with the distance target and the true instance ids (``(*spatial)`` each)."""

    distance: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    instances: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))


@dataclass
class InstanceData:
    """What an instance run trains and validates on."""

    train_regions: list[InstanceRegion]
    val_regions: list[InstanceRegion]
    split_note: str
    in_channels: int
    spacing: tuple[float, ...] | None
    patch_size: tuple[int, ...]
    normalization: dict
    params: InstanceParams


def prepare_instance_data(images: Any, labels: Any, config: TrainConfig, *, spacing: Any,
                          channel_axis: int | None, base: Any = None,
                          max_patch_voxels: int | None = None) -> InstanceData:
    """Check the inputs of an instance run and derive its targets.

    Parameters
    ----------
    images : array or sequence of arrays
        ``(Y, X)`` or ``(Z, Y, X)`` (plus ``channel_axis``).
    labels : array or sequence of arrays
        Instance labels of each image's spatial shape: 0 background, each object its
        own id (ids need not be contiguous).
    config : TrainConfig
        ``data.label_mode`` must be ``"dense"`` (every object painted).
    spacing : tuple or list of tuples, optional
        Voxel size (one for all images, or one per image); distances are measured in it.
    channel_axis : int, optional
    base : InstanceModel, optional
        Resuming or fine-tuning: its channels, patch size, normalisation and
        post-processing are kept.
    max_patch_voxels : int, optional
        Cap on the automatic patch size (``devices.patch_voxel_cap``).

    Returns
    -------
    InstanceData

    Raises
    ------
    InputError
        Mismatched images and labels, labels without objects, a training part
        without objects, a patch larger than the data.
    ConfigError
        Scribble mode, or a patch size not divisible by the network's factor.
    """
    from napari_medml.nn.segmentation import patch_divisor
    from napari_medml.preprocessing.normalization import apply_normalization, fit_normalization
    from napari_medml.segmentation import data, split
    from napari_medml.segmentation.model import apply_preprocessing, labels_to_recipe_grid

    dc = config.data
    if dc.label_mode != "dense":
        raise ConfigError("instance training needs every object painted with its own id (dense labels): "
                          "use label mode 'dense'; scribbles cannot tell objects apart")
    image_list, label_list = data.as_list(images, "images"), data.as_list(labels, "labels")
    if len(image_list) != len(label_list):
        raise InputError(f"{len(image_list)} image(s) but {len(label_list)} instance labels array(s): give one "
                         "per image")
    spacings = _spacings(spacing, len(image_list))
    single = len(image_list) == 1
    stacked, encoded, grids = [], [], []
    for i, (img, lab) in enumerate(zip(image_list, label_list)):
        name = "image" if single else f"image {i}"
        arr = data.prepare_image(img, channel_axis=channel_axis, spatial_dims=dc.spatial_dims, name=name,
                                 in_channels=base.in_channels if base is not None else None)
        lab = data.prepare_labels(lab, arr.shape[1:], name="instance labels" if single else f"instance labels {i}",
                                  image_name=name)
        arr, spacings[i], recipe = apply_preprocessing(arr, spacings[i], dc.preprocessing)
        lab = labels_to_recipe_grid(lab, recipe)
        if lab.size and int(lab.max()) >= 2**24:  # ids travel as float32 through the split: keep them exact
            from skimage.segmentation import relabel_sequential

            lab = relabel_sequential(lab)[0]
        target = instance_target(lab, spacings[i])
        encoded.append(target.classes + np.uint8(1))  # 1 background, 2 interior, 3 boundary
        stacked.append(np.concatenate([arr, target.distance[None], lab[None].astype(np.float32)]))
        grids.append((lab, spacings[i]))
    channels = {a.shape[0] - 2 for a in stacked}
    if len(channels) > 1:
        raise InputError(f"images have different channel counts {sorted(channels)}: give the same channels")
    in_channels = channels.pop()
    if not any(int(lab.max(initial=0)) > 0 for lab, _ in grids):
        raise InputError("instance labels have no objects: paint each object with its own id (> 0)")
    params = base.params if base is not None else _params(grids)

    patch_size = _patch_size(stacked, encoded, config, spacings[0], base, single, max_patch_voxels,
                             patch_divisor(config.model))
    train, val, note = split.split_train_val(stacked, encoded, dc.val_fraction, context=patch_size,
                                             class_ids=CLASS_IDS)
    if not any((r.label >= 2).any() for r in train):
        raise InputError(f"the training part has no objects ({note}): set the validation fraction to 0 "
                         "(--val-fraction 0), or label objects in more of the data")
    train_regions = [_unpack(r, in_channels) for r in train]
    val_regions = [_unpack(r, in_channels) for r in val]
    val_regions = [r for r in val_regions if r.label.any()]
    normalization = (base.normalization if base is not None else
                     fit_normalization([r.image for r in train_regions], dc.normalization))
    for region in train_regions + val_regions:
        region.image = apply_normalization(np.array(region.image, dtype=np.float32), normalization)
    train_regions = [_pad_to(r, patch_size) for r in train_regions]
    return InstanceData(train_regions, val_regions, note, in_channels, spacings[0], patch_size, normalization,
                        params)


def _params(grids: list[tuple[np.ndarray, tuple[float, ...] | None]]) -> InstanceParams:
    """Post-processing defaults from every labelled image (the smallest ``min_size``)."""
    sizes = [params_from_labels(lab, sp).min_size for lab, sp in grids if lab.any()]
    return InstanceParams(min_size=min(sizes))


def _patch_size(stacked: list[np.ndarray], encoded: list[np.ndarray], config: TrainConfig,
                spacing: tuple[float, ...] | None, base: Any, single: bool, max_voxels: int | None,
                divisor: int) -> tuple[int, ...]:
    """The model's patch (resuming), the config's (checked), or the largest that fits."""
    from napari_medml.segmentation import data, split

    dc = config.data
    if base is not None:
        return tuple(base.patch_size)
    train, _, _ = split.split_train_val(stacked, encoded, dc.val_fraction)
    smallest = tuple(min(r.label.shape[a] for r in train) for a in range(dc.spatial_dims))
    largest = tuple(max(divisor, -(-s // divisor) * divisor) for s in smallest)
    if dc.patch_size is None:
        return data.auto_patch_size(smallest, spacing, dc.spatial_dims, dc.memory_budget_mb, divisor,
                                    bytes_per_voxel=96.0 * config.model.channels * dc.batch_size,
                                    max_voxels=max_voxels)
    patch = tuple(int(p) for p in dc.patch_size)
    if any(p % divisor for p in patch):
        fit = tuple(max(divisor, p // divisor * divisor) for p in patch)
        raise ConfigError(f"patch_size {patch} must be divisible by {divisor} (2 ** (depth - 1) for depth "
                          f"{config.model.depth}): use {fit}, or a smaller depth")
    if any(p > m for p, m in zip(patch, largest)):
        where = "training part of the image" if single and dc.val_fraction > 0 else "smallest training image"
        fit = tuple(min(p, m) for p, m in zip(patch, largest))
        raise InputError(f"patch size {patch} is larger than the {where} {smallest}: use a patch of at most "
                         f"{fit}, or leave it out to choose one automatically")
    return patch


def _unpack(region: Region, in_channels: int) -> InstanceRegion:
    """Split the stacked channels (image, distance, ids) of a region from the split."""
    ids = np.rint(region.image[in_channels + 1]).astype(np.int32)
    return InstanceRegion(region.image[:in_channels], region.label,
                          np.ascontiguousarray(region.image[in_channels], dtype=np.float32), ids)


def _pad_to(region: InstanceRegion, shape: tuple[int, ...]) -> InstanceRegion:
    """Pad a region thinner than the patch: image zeros, labels 0 (unlabeled, no loss)."""
    pad = [(0, max(0, int(p) - s)) for p, s in zip(shape, region.label.shape)]
    if not any(after for _, after in pad):
        return region
    return InstanceRegion(np.pad(region.image, [(0, 0), *pad]), np.pad(region.label, pad),
                          np.pad(region.distance, pad), np.pad(region.instances, pad))


def _spacings(spacing: Any, n: int) -> list[tuple[float, ...] | None]:
    if spacing is None:
        return [None] * n
    if len(spacing) and all(isinstance(s, (int, float, np.number)) for s in spacing):
        return [tuple(float(s) for s in spacing)] * n
    spacing = list(spacing)
    if len(spacing) != n:
        raise InputError(f"{len(spacing)} spacings for {n} images: give one per image or one for all")
    return [None if s is None else tuple(float(v) for v in s) for s in spacing]


class InstanceSampler(PatchSampler):
    """Segmentation's patch sampler (centres balanced between object interiors and the
    boundaries between touching objects) that also crops the distance target.

    ``batch()`` returns ``(images, (classes, distance))``: images ``(B, C, *patch)``
    float32, classes ``(B, 1, *patch)`` uint8 encoded ``class + 1`` (0 = padding, no
    loss), distance ``(B, 1, *patch)`` float32. Augmentation moves classes and
    distance with the image (nearest neighbour); intensity changes touch the image only.
    """

    def batch(self) -> tuple[Any, tuple[Any, Any]]:
        import torch

        images, classes, distances = [], [], []
        for _ in range(self.batch_size):
            region, window = self._window()
            image = np.ascontiguousarray(region.image[(slice(None), *window)])
            label = region.label[window][None]
            distance = region.distance[window][None]
            if self.transform is not None:
                out = self.transform({"image": torch.from_numpy(image),
                                      "label": torch.from_numpy(label.astype(np.float32)),
                                      "distance": torch.from_numpy(np.rint(distance * DISTANCE_SCALE))})
                images.append(torch.as_tensor(out["image"]).float())
                classes.append(torch.as_tensor(out["label"]).clamp(0, 255).to(torch.uint8))
                distances.append(torch.as_tensor(out["distance"]).float() / DISTANCE_SCALE)
            else:
                images.append(torch.from_numpy(image))
                classes.append(torch.from_numpy(np.ascontiguousarray(label)))
                distances.append(torch.from_numpy(np.ascontiguousarray(distance)))
        return torch.stack(images), (torch.stack(classes), torch.stack(distances))
