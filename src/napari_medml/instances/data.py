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
from napari_medml.segmentation.data import PatchSampler, Region, pad_to

__all__ = ["CLASS_IDS", "DISTANCE_SCALE", "InstanceData", "InstanceRegion", "InstanceSampler",
           "prepare_instance_data"]

CLASS_IDS = (0, 1, 2)  # background, interior, boundary: the network's first three channels
# The distance target rides through MONAI's label transforms (nearest neighbour, cast to
# int64 at the end) as an integer in thousandths: exact enough for a target in [0, 1].
DISTANCE_SCALE = 1000.0
# Fewer held-out objects than this and F1/AP move by 0.05 or more for one object more or less
FEW_OBJECTS = 20


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
    from napari_medml.segmentation import split
    from napari_medml.segmentation.prepare import choose_patch_size, normalize_regions, read_images_and_labels

    dc = config.data
    if dc.label_mode != "dense":
        raise ConfigError("instance training needs every object painted with its own id (dense labels): "
                          "use label mode 'dense'; scribbles cannot tell objects apart")
    arrays, grid_labels, spacings = read_images_and_labels(images, labels, config, spacing=spacing,
                                                           channel_axis=channel_axis, base=base,
                                                           what="instance labels")
    stacked, encoded, grids, ids_seen = [], [], [], set()
    for number, (arr, lab, sp) in enumerate(zip(arrays, grid_labels, spacings)):
        ids_seen.update(_check_one_id_per_object(lab, f"instance labels {number + 1} of {len(arrays)}"
                                                 if len(arrays) > 1 else "the instance labels"))
        if lab.size and int(lab.max()) >= 2**24:  # ids travel as float32 through the split: keep them exact
            from skimage.segmentation import relabel_sequential

            lab = relabel_sequential(lab)[0]
        target = instance_target(lab, sp)
        encoded.append(target.classes + np.uint8(1))  # 1 background, 2 interior, 3 boundary
        stacked.append(np.concatenate([arr, target.distance[None], lab[None].astype(np.float32)]))
        grids.append((lab, sp))
    in_channels = arrays[0].shape[0]
    if not any(int(lab.max(initial=0)) > 0 for lab, _ in grids):
        raise InputError("instance labels have no objects: paint each object with its own id (> 0)")
    params = base.params if base is not None else _params(grids)

    # the model's patch (resuming), the config's (checked), or the largest that fits the training part
    patch_size = tuple(base.patch_size) if base is not None else choose_patch_size(
        [r.label.shape for r in split.split_train_val(stacked, encoded, dc.val_fraction, groups=dc.sample_groups)[0]],
        config, spacings[0],
        single=len(arrays) == 1, max_patch_voxels=max_patch_voxels)
    train, val, note = split.split_train_val(stacked, encoded, dc.val_fraction, context=patch_size,
                                             class_ids=CLASS_IDS, margin=dc.val_margin, groups=dc.sample_groups)
    if len(ids_seen) == 1:  # one object, or a mask of touching objects: say which fix applies
        note = "; ".join(n for n in (note, (
            f"the instance labels hold one object (id {ids_seen.pop()}): if it is a mask of several touching "
            "objects, give each object its own id, or the model learns them as one")) if n)
    if not any((r.label >= 2).any() for r in train):
        raise InputError(f"the training part has no objects ({note}): set the validation fraction to 0 "
                         "(--val-fraction 0), or label objects in more of the data")
    train_regions = [_unpack(r, in_channels) for r in train]
    val_regions = [_unpack(r, in_channels) for r in val]
    val_regions = [r for r in val_regions if r.label.any()]
    held = sum(int(np.count_nonzero(np.unique(r.instances))) for r in val_regions)
    if 0 < held < FEW_OBJECTS:  # its best epoch and post-processing rest on these few objects
        note += (f"; the validation part holds only {held} object(s): its scores (and the best epoch and "
                 "post-processing chosen on them) are rough; label more objects or images")
    normalization = normalize_regions(train_regions, val_regions, config, base)
    train_regions = [pad_to(r, patch_size) for r in train_regions]
    return InstanceData(train_regions, val_regions, note, in_channels, spacings[0], patch_size, normalization,
                        params)


def _check_one_id_per_object(labels: np.ndarray, name: str) -> list[int]:
    """The object ids of ``labels``, after refusing a mask given as instance labels: many
    separate objects under one or a few ids.

    ``skimage.measure.label`` joins neighbours of the same value only, so it counts the
    pieces of every id; real instance labels have about one piece per id.
    """
    from skimage.measure import label

    found = [int(i) for i in np.unique(labels) if i != 0]
    ids = len(found)
    pieces = int(label(labels, background=0).max()) if ids else 0
    if pieces >= 2 * ids + 3:
        raise InputError(
            f"{name} hold {pieces} separate objects under {ids} id(s): that is a mask, not one id per object, "
            "so nothing would tell objects apart; give each object its own id (skimage.measure.label(mask) "
            "does it for objects that do not touch), or train --task segmentation on the mask"
        )
    return found


def _params(grids: list[tuple[np.ndarray, tuple[float, ...] | None]]) -> InstanceParams:
    """Post-processing defaults from every labelled image (the smallest ``min_size``)."""
    sizes = [params_from_labels(lab, sp).min_size for lab, sp in grids if lab.any()]
    return InstanceParams(min_size=min(sizes))


def _unpack(region: Region, in_channels: int) -> InstanceRegion:
    """Split the stacked channels (image, distance, ids) of a region from the split."""
    ids = np.rint(region.image[in_channels + 1]).astype(np.int32)
    return InstanceRegion(region.image[:in_channels], region.label,
                          np.ascontiguousarray(region.image[in_channels], dtype=np.float32), ids)


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
