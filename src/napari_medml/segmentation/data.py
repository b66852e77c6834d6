"""Training data: input checks, class-id mapping, sparse-label masks, intensity
normalization, train/validation split, automatic patch size and patch sampling.

Labels are encoded once as ``channel + 1`` with 0 meaning "unlabeled" (uint8), so
that padding by augmentation (zeros) is ignored by the loss, never read as
background.  In dense mode every voxel is labelled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from napari_medml.errors import InputError
from napari_medml.segmentation.label_values import MAX_CLASSES, check_label_values
# every task checks its images the same way (task packages share it from below)
from napari_medml.preprocessing.inputs import as_list
from napari_medml.preprocessing.inputs import check_image as prepare_image

__all__ = [
    "TrainingData",
    "MAX_CLASSES",
    "PatchSampler",
    "Region",
    "auto_patch_size",
    "encode_labels",
    "find_class_ids",
    "pad_to",
    "prepare_image",
    "prepare_labels",
    "as_list",
]


def prepare_labels(labels, spatial_shape: Sequence[int], *, name: str = "labels",
                   image_name: str = "image") -> np.ndarray:
    """Validate a labels array against its image's spatial shape (a boolean mask is class 1)."""
    arr = check_label_values(labels, name)
    if tuple(arr.shape) != tuple(spatial_shape):
        raise InputError(
            f"{name} have shape {tuple(arr.shape)} but {image_name} has spatial shape {tuple(spatial_shape)}: "
            "labels must cover the image voxel for voxel"
        )
    return arr


def find_class_ids(labels: Sequence[np.ndarray], mode: str, background_id: int) -> tuple[int, ...]:
    """Class ids in output-channel order: background (0) first, then the others sorted.

    Raises
    ------
    InputError
        No labels at all, or fewer than two classes.
    """
    ids: set[int] = set()
    for lab in labels:
        ids.update(int(v) for v in np.unique(lab))
    if mode == "sparse":
        painted = ids - {0}
        if not painted:
            raise InputError("labels are empty (all 0 = unlabeled): paint some background and foreground scribbles")
        if background_id == 0 or background_id not in painted:
            raise InputError(
                f"scribble mode needs painted background: no voxel has background id {background_id}; "
                "paint background with that id, or set the background id (Train segmentation's 'background id', "
                "--background-id, data.background_id) to the id you used, not 0"
            )
        foreground = sorted(painted - {background_id})
        if len(foreground) + 1 > MAX_CLASSES:
            raise InputError(f"scribbles have {len(foreground) + 1} classes (background included): at most "
                             f"{MAX_CLASSES} are supported; merge classes or train on fewer")
        if not foreground:
            raise InputError(
                f"scribble labels contain only the background id {background_id}: paint at least one foreground class"
            )
        return (0, *foreground)
    foreground = sorted(ids - {0})
    if len(foreground) + 1 > MAX_CLASSES:
        raise InputError(f"labels have {len(foreground) + 1} classes (background included): at most "
                         f"{MAX_CLASSES} are supported; merge classes or train on fewer (if each id is one "
                         "object, train an instance model)")
    if not foreground:
        raise InputError("labels are empty (all 0 = background): paint at least one foreground class")
    if 0 not in ids:
        if len(foreground) < 2:
            raise InputError(
                f"labels contain only class {foreground[0]}: dense labels need background (0) and at least one class"
            )
    return (0, *foreground)


def encode_labels(labels: np.ndarray, class_ids: Sequence[int], mode: str, background_id: int) -> np.ndarray:
    """Map class ids to ``channel + 1`` (uint8), 0 = unlabeled (sparse mode only).

    Ids may be any non-negative integers (2**40 included): small ids go through a
    look-up table, large ones through a sorted search, never a table sized by the
    largest id. Ids not in ``class_ids`` become 0 (unlabeled).

    Raises
    ------
    InputError
        More than :data:`MAX_CLASSES` classes.
    """
    if len(class_ids) > MAX_CLASSES:
        raise InputError(f"labels have {len(class_ids)} classes (background included): at most "
                         f"{MAX_CLASSES} are supported; merge classes or train on fewer")
    pairs = {int(cid): channel + 1 for channel, cid in enumerate(class_ids)}
    if mode == "sparse":
        pairs[0] = 0
        pairs[int(background_id)] = 1
    keys = np.array(sorted(pairs), dtype=np.int64)
    codes = np.array([pairs[k] for k in keys.tolist()], dtype=np.uint8)
    labels = np.asarray(labels)
    if labels.dtype == bool:  # a mask is class 1; a bool array would index the table as a mask
        labels = labels.view(np.uint8)
    top = int(labels.max(initial=0))
    if top < 65536:  # a small table: one indexing pass
        lut = np.zeros(top + 1, dtype=np.uint8)
        small = keys <= top
        lut[keys[small]] = codes[small]
        return lut[labels]
    flat = labels.reshape(-1).astype(np.int64, copy=False)
    idx = np.minimum(np.searchsorted(keys, flat), keys.size - 1)
    return np.where(keys[idx] == flat, codes[idx], np.uint8(0)).astype(np.uint8).reshape(labels.shape)


# --- intensity normalization ------------------------------------------------------


# --- split -------------------------------------------------------------------------


@dataclass
class Region:
    """An image (``(C, *spatial)``) with its encoded labels (``(*spatial)``, uint8)."""

    image: np.ndarray
    label: np.ndarray


def pad_to(region: Region, shape: Sequence[int]) -> Region:
    """``region`` padded at the end of each axis to at least ``shape``: image with zeros (the
    normalised mean or low value), labels with 0 (unlabeled, ignored by the loss).

    A subclass (``instances.data.InstanceRegion``) keeps its type; its other spatial
    arrays are padded with zeros too.
    """
    pad = [(0, max(0, int(p) - s)) for p, s in zip(shape, region.label.shape)]
    if not any(after for _, after in pad):
        return region
    arrays = {f.name: getattr(region, f.name) for f in fields(region)}
    return type(region)(**{name: np.pad(a, [(0, 0), *pad] if name == "image" else pad)
                           for name, a in arrays.items()})


# --- patch size --------------------------------------------------------------------


def auto_patch_size(shape: Sequence[int], spacing: Sequence[float] | None, spatial_dims: int,
                    memory_budget_mb: float, divisor: int, *, bytes_per_voxel: float = 2048.0,
                    max_voxels: int | None = None) -> tuple[int, ...]:
    """Largest patch that fits the image and the memory budget.

    Starts from the image shape (rounded down to ``divisor``) and, while the patch
    is over budget, shrinks the axis with the largest physical extent, so an
    anisotropic volume (coarse Z) gets fewer voxels along its coarse axis.

    Parameters
    ----------
    shape : sequence of int
        Smallest spatial shape among the training regions.
    spacing : sequence of float or None
        Voxel size per axis (None: isotropic).
    spatial_dims : int
        2 or 3.
    memory_budget_mb : float
        Training memory allowance.
    divisor : int
        Each patch axis is a multiple of this (``2 ** (depth - 1)``).
    bytes_per_voxel : float
        Estimated training memory per patch voxel (grows with width and batch).
    max_voxels : int, optional
        A further cap on the patch's voxels (``devices.patch_voxel_cap``: on a CPU,
        time per step, not memory, is the limit).

    Returns
    -------
    tuple of int
    """
    shape = tuple(int(s) for s in shape)[-spatial_dims:]
    spacing = tuple(float(s) for s in (spacing or (1.0,) * spatial_dims))[-spatial_dims:]
    budget = memory_budget_mb * 2**20 / bytes_per_voxel
    if max_voxels is not None:
        budget = min(budget, float(max_voxels))
    from napari_medml.preprocessing.inputs import shrink_patch

    max_voxels = max(budget, float(divisor**spatial_dims))
    return shrink_patch([max(divisor, (s // divisor) * divisor) for s in shape], spacing, divisor, max_voxels)


# --- patch sampling ----------------------------------------------------------------


class PatchSampler:
    """Draws training batches: random patches, a share centred on labelled voxels.

    The index lists per class are MONAI's ``map_classes_to_indices`` (what
    ``ClassesToIndicesd`` stores), masked to labelled voxels; lazy (on-disk) labels are
    scanned block by block instead (``segmentation.lazy``), as MONAI needs the whole
    label array in memory. The centre draw stays ours: MONAI's
    ``RandCropByLabelClassesd`` / ``generate_label_classes_crop_centers`` balance the
    classes within one image, so over several images a class found in only one of them
    is drawn that many times less often (``tests/core/test_data.py`` measures it); here a
    class is drawn first, then an image holding it. Centres anywhere are mixed in
    (``1 - foreground_fraction``), never on unlabeled scribble voxels, and batches are
    filled without per-item dictionaries.

    Parameters
    ----------
    regions : list of Region
        Training images and encoded labels.
    patch_size : tuple of int
    batch_size : int
    foreground_fraction : float
        Share of patches centred on a labelled foreground voxel (sparse mode: any
        labelled voxel).
    sparse : bool
        Scribble mode.
    transform : callable or None
        MONAI dictionary transform on {"image": (C, *patch), "label": (1, *patch)}.
    seed : int
    """

    def __init__(self, regions: list[Region], patch_size: Sequence[int], batch_size: int,
                 foreground_fraction: float, *, sparse: bool, transform: Callable | None, seed: int,
                 max_indices: int = 200_000) -> None:
        self.regions = regions
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.foreground_fraction = foreground_fraction
        self.transform = transform
        self.rng = np.random.default_rng(seed)
        if transform is not None and hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=seed)
        from monai.transforms.utils import map_classes_to_indices

        first_class = 1 if sparse else 2  # sparse: background scribbles are "labelled" too
        # (region index, class) -> flat indices of that class in that region
        self.centres: dict[int, list[tuple[int, np.ndarray]]] = {}
        for r, region in enumerate(regions):
            if hasattr(region.label, "class_indices"):  # lazy labels (segmentation.lazy): scanned block by block
                for cls, idx in region.label.class_indices(first_class, max_indices, self.rng).items():
                    self.centres.setdefault(cls, []).append((r, idx))
                continue
            # MONAI's ClassesToIndices, per image; the mask keeps unlabelled and background voxels
            # out (no index list of the bulk), and each class is thinned evenly to max_indices
            label = np.asarray(region.label)
            labelled = (label >= first_class)[None]
            top = int(label.max()) if label.size else 0
            per_class = map_classes_to_indices(label[None], top + 1, image=labelled, image_threshold=0,
                                               max_samples_per_class=max_indices)
            for cls, idx in enumerate(per_class):
                if cls >= first_class and len(idx):
                    self.centres.setdefault(cls, []).append((r, np.asarray(idx)))
        self.weights = np.array([math.prod(r.label.shape) for r in regions], float)
        self.weights /= self.weights.sum()

    def _pick(self) -> tuple[int, tuple[int, ...]]:
        if self.centres and self.rng.random() < self.foreground_fraction:
            cls = list(self.centres)[self.rng.integers(len(self.centres))]
            options = self.centres[cls]
            r, idx = options[self.rng.integers(len(options))]
            centre = np.unravel_index(idx[self.rng.integers(idx.size)], self.regions[r].label.shape)
            return r, tuple(int(c) for c in centre)
        r = int(self.rng.choice(len(self.regions), p=self.weights))
        shape = self.regions[r].label.shape
        return r, tuple(int(self.rng.integers(s)) for s in shape)

    def _window(self) -> tuple[Region, tuple[slice, ...]]:
        r, centre = self._pick()
        region = self.regions[r]
        shape = region.label.shape
        starts = [min(max(c - p // 2, 0), s - p) for c, p, s in zip(centre, self.patch_size, shape)]
        return region, tuple(slice(s, s + p) for s, p in zip(starts, self.patch_size))

    def batch(self) -> tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
        """A batch: image ``(B, C, *patch)`` float32 and label ``(B, 1, *patch)`` uint8."""
        import torch

        if self.transform is None:
            # the common fast path: patches copied straight into the batch arrays
            channels = self.regions[0].image.shape[0]
            images = np.empty((self.batch_size, channels, *self.patch_size), np.float32)
            labels = np.empty((self.batch_size, 1, *self.patch_size), np.uint8)
            for b in range(self.batch_size):
                region, window = self._window()
                images[b] = region.image[(slice(None), *window)]
                labels[b, 0] = region.label[window]
            return torch.from_numpy(images), torch.from_numpy(labels)
        image_list, label_list = [], []
        for _ in range(self.batch_size):
            region, window = self._window()
            image = np.ascontiguousarray(region.image[(slice(None), *window)])
            label = region.label[window][None].astype(np.float32)
            out = self.transform({"image": torch.from_numpy(image), "label": torch.from_numpy(label)})
            image_list.append(_plain(torch.as_tensor(out["image"])).float())
            label_list.append(_plain(torch.as_tensor(out["label"])))
        image_batch = torch.stack(image_list)
        # nearest-neighbour transforms keep integer values; round() guards against float noise
        label_batch = torch.stack(label_list).round_().clamp_(0, 255).to(torch.uint8)
        return image_batch, label_batch


def _plain(t):
    """MetaTensor -> plain tensor (no metadata tracking in the training loop)."""
    return t.as_tensor() if hasattr(t, "as_tensor") else t


@dataclass
class TrainingData:
    """What a run trains and validates on (images ``(C, *spatial)``, normalised)."""

    train_regions: list  # data.Region
    val_regions: list  # data.Region, each with labelled voxels
    split_note: str
    class_ids: tuple[int, ...]
    in_channels: int
    spacing: tuple[float, ...] | None
    patch_size: tuple[int, ...]
    normalization: dict
    warnings: list[str] = field(default_factory=list)  # one line each, shown before training
