"""The data side of a segmentation training run: from the user's arrays to normalised
train/validation regions, class ids and a patch size.

``train.fit`` calls :func:`prepare_training_data` once; everything here is plain
NumPy (the device only enters through the automatic patch size's voxel cap).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medml.config import TrainConfig
from napari_medml.errors import InputError
from napari_medml.preprocessing.inputs import (
    check_patch_size,
    check_volumes_not_constant,
    fills_nonfinite,
    one_value,
    spacings_per_image,
)
from napari_medml.segmentation.data import TrainingData

__all__ = ["choose_patch_size", "normalize_regions", "prepare_training_data", "read_images_and_labels",
           "read_inputs"]


def _read_whole(images: list, labels: list, config: Any, base: Any) -> bool:
    """Whether lazy (dask/Zarr) inputs are read into memory after all: an image thinner than the
    network's halving along an axis (or than a given patch) has no patch the lazy reader can take,
    as it pads nothing, while in memory that axis is padded; such thin images are small, and are
    read only when they fit the memory budget (review 46: a 3x64x64 Zarr crashed in the network)."""
    from napari_medml.io.memory import memory_budget
    from napari_medml.nn.strides import patch_divisor

    if len(labels) != 1:
        return False
    dims = config.data.spatial_dims  # the network's axes: a 2D network on a stack slices the others
    shape = tuple(int(n) for n in np.shape(labels[0]))[-dims:]
    patch = base.patch_size if base is not None else config.data.patch_size  # a fine-tune's or resume's own
    thin = any(n < patch_divisor(config.model) for n in shape) or (
        patch is not None and any(p > n for p, n in zip(tuple(patch)[-dims:], shape)))
    nbytes = sum(float(np.prod(np.shape(a))) * np.dtype(a.dtype).itemsize for a in (*images, *labels))
    return thin and nbytes <= memory_budget()


def prepare_training_data(images: Any, labels: Any, config: TrainConfig, *, spacing: Any,
                          channel_axis: int | None, base: Any = None,
                          max_patch_voxels: int | None = None) -> TrainingData:
    """Check and prepare the inputs of a run.

    Parameters
    ----------
    images, labels, spacing, channel_axis
        As for ``train.fit``.
    config : TrainConfig
        The run's config (``config.model`` already that of ``base`` when fine-tuning).
    base : infer.Model, optional
        The model being fine-tuned or resumed: its channels, class ids, patch size and
        normalisation are kept.
    max_patch_voxels : int, optional
        Cap on the automatic patch size (``devices.patch_voxel_cap``).

    Returns
    -------
    TrainingData

    Raises
    ------
    InputError
        Mismatched images and labels, unknown classes, a patch larger than the data.
    ConfigError
        A patch size not divisible by the network's down-sampling factor.
    """
    from napari_medml.segmentation import data, label_warnings
    from napari_medml.segmentation.lazy import is_lazy, prepare_lazy
    from napari_medml.segmentation.validation import missing_from_validation

    dc = config.data

    image_list, label_list = data.as_list(images, "images"), data.as_list(labels, "labels")
    if any(is_lazy(a) for a in [*image_list, *label_list]) and _read_whole(image_list, label_list, config, base):
        images, labels = [np.asarray(a) for a in image_list], [np.asarray(a) for a in label_list]
    elif any(is_lazy(a) for a in [*image_list, *label_list]):  # dask/zarr: read patch by patch, never whole
        return prepare_lazy(image_list, label_list, config, spacings=spacings_per_image(spacing, len(image_list)),
                            channel_axis=channel_axis, base=base, max_patch_voxels=max_patch_voxels)
    prepared, encoded, class_ids, spacings = read_inputs(images, labels, config, spacing=spacing,
                                                         channel_axis=channel_axis, base=base)
    single = len(prepared) == 1

    # patch size: the model's when fine-tuning, the config's, or the largest that fits
    patch_size = tuple(base.patch_size) if base is not None else choose_patch_size(
        [r.label.shape for r in _split(prepared, encoded, config)[0]], config, spacings[0], single=single,
        max_patch_voxels=max_patch_voxels)

    # validation regions get one patch of unlabeled context (see split_train_val)
    train_regions, val_regions, split_note = _split(prepared, encoded, config, context=patch_size,
                                                    class_ids=class_ids, margin=dc.val_margin)
    lost = label_warnings.missing_from_training(train_regions, encoded, class_ids, split_note)
    # statistics of the labelled foreground (encoded >= 2) for the methods that use them
    normalization = normalize_regions(train_regions, val_regions, config, base, foreground_masks=True)
    # thinner than the patch (a 5-slice volume, a 3D patch of 8): pad with unlabeled voxels,
    # which the loss ignores; sliding-window inference pads the same way (zeros)
    train_regions = [data.pad_to(region, patch_size) for region in train_regions]
    labelled_val = [r for r in val_regions if r.label.any()]
    if val_regions and not labelled_val:
        split_note += " (held-out part has no labelled voxels: validation off)"
    unscored = missing_from_validation(labelled_val, encoded, class_ids) if labelled_val else None
    few = label_warnings.few_voxels(train_regions, class_ids)
    dense = dc.label_mode == "dense" and base is None  # (a fine-tune's labels are a prediction and its edits)
    mixed = label_warnings.masks_of_other_ids(encoded, class_ids, dc.sample_groups) if dense else None
    flat = label_warnings.one_painted_slice(encoded, dc.sample_groups) if dense else None
    return TrainingData(train_regions, labelled_val, split_note, class_ids, prepared[0].shape[0],
                        spacings[0], patch_size, normalization,
                        warnings=[w for w in (mixed, flat, lost, few, unscored) if w])


def _split(images: list, labels: list, config: TrainConfig, **kwargs: Any) -> tuple[list, list, str]:
    """The run's train/validation split: an ensemble member's fold, or the usual held-out part."""
    from napari_medml.segmentation import split

    dc = config.data
    if dc.folds > 1 and dc.fold is not None:
        train, val, note = split.split_fold(images, labels, dc.fold, dc.folds, context=kwargs.get("context"),
                                            margin=kwargs.get("margin", 0), groups=dc.sample_groups)
        if dc.val_fraction != type(dc).val_fraction:  # trial 48: a share given with folds went unused, unsaid
            note += f" (val_fraction {dc.val_fraction:g} is not used with folds: each fold holds out 1 of {dc.folds})"
        return train, val, note
    return split.split_train_val(images, labels, dc.val_fraction, groups=dc.sample_groups, **kwargs)


def read_inputs(images: Any, labels: Any, config: TrainConfig, *, spacing: Any, channel_axis: int | None,
                base: Any = None) -> tuple[list[np.ndarray], list[np.ndarray], tuple[int, ...], list]:
    """Checked images ``(C, *spatial)`` float32 after the preprocessing recipe, encoded labels
    on their grid, the class ids and each image's spacing (see :func:`prepare_training_data`).

    Raises
    ------
    InputError
        Mismatched images and labels, unknown classes.
    """
    from napari_medml.segmentation import data

    dc = config.data
    prepared, raw_labels, spacings = read_images_and_labels(images, labels, config, spacing=spacing,
                                                            channel_axis=channel_axis, base=base)
    if base is None:
        class_ids = data.find_class_ids(raw_labels, dc.label_mode, dc.background_id)
    else:  # the model knows its classes: corrections may hold any of them, not all
        present = set().union(*(np.unique(lab).tolist() for lab in raw_labels))
        unlabelled = {0, dc.background_id} if dc.label_mode == "sparse" else set()
        extra = sorted(present - unlabelled - set(base.class_ids))
        if extra:
            raise InputError(f"labels contain class id(s) {extra} that the model {base.class_ids} does not "
                             "know: fine-tune with the same classes or train a new model")
        if dc.label_mode == "sparse" and not present - {0}:
            raise InputError("labels are empty (all 0 = unlabeled): paint some corrections first")
        class_ids = base.class_ids
    encoded = [data.encode_labels(lab, class_ids, dc.label_mode, dc.background_id) for lab in raw_labels]
    return prepared, encoded, tuple(class_ids), spacings


def read_images_and_labels(images: Any, labels: Any, config: TrainConfig, *, spacing: Any,
                           channel_axis: int | None, base: Any = None, what: str = "labels"
                           ) -> tuple[list[np.ndarray], list[np.ndarray], list]:
    """Every labelled task's input checks: images and their labels, pair by pair.

    Parameters
    ----------
    images, labels, spacing, channel_axis
        As for ``segmentation.task.fit`` (labels of any integer ids).
    config : TrainConfig
        ``data.spatial_dims`` and ``data.preprocessing`` (the recipe).
    base : model, optional
        A model being fine-tuned or resumed: the images must have its channels.
    what : str
        What the labels are, for error messages (``"instance labels"``).

    Returns
    -------
    tuple
        Images ``(C, *spatial)`` float32 after the preprocessing recipe, the labels
        (unencoded) on the same grid, and each image's spacing after the recipe.

    Raises
    ------
    InputError
        Unequal numbers of images and labels, a bad image, labels that do not match
        their image, images with different channel counts.
    """
    from napari_medml.segmentation import data
    from napari_medml.segmentation.model import apply_preprocessing, labels_to_recipe_grid

    dc = config.data
    image_list, label_list = data.as_list(images, "images"), data.as_list(labels, "labels")
    if len(image_list) != len(label_list):
        raise InputError(f"{len(image_list)} image(s) but {len(label_list)} {what} array(s): give one per image")
    spacings = spacings_per_image(spacing, len(image_list))
    single = len(image_list) == 1
    arrays, grids, values = [], [], []
    for i, (img, lab) in enumerate(zip(image_list, label_list)):
        name = "image" if single else f"image {i + 1} of {len(image_list)}"  # 1-based, as people count
        arr = data.prepare_image(img, channel_axis=channel_axis, spatial_dims=dc.spatial_dims, name=name,
                                 in_channels=base.in_channels if base is not None else None,
                                 finite=not fills_nonfinite(dc.preprocessing))
        values.append(one_value(arr, name))
        lab_name = what if single else f"{what} {i + 1} of {len(label_list)}"
        lab = data.prepare_labels(lab, arr.shape[1:], name=lab_name, image_name=name)
        arr, spacings[i], recipe = apply_preprocessing(arr, spacings[i], dc.preprocessing)
        arrays.append(arr)
        grids.append(labels_to_recipe_grid(lab, recipe))
    # per image, not per slice: a 2D network on an MRI with blank slices above the head was refused (trial 43)
    check_volumes_not_constant(values, dc.sample_groups)
    if len({a.shape[0] for a in arrays}) > 1:
        raise InputError(f"images have different channel counts {[a.shape[0] for a in arrays]}: give every "
                         "image the same channels")
    return arrays, grids, spacings


def choose_patch_size(shapes: Sequence[Sequence[int]], config: TrainConfig, spacing: Sequence[float] | None, *,
                      single: bool, max_patch_voxels: int | None = None) -> tuple[int, ...]:
    """A new run's patch size: the config's (checked), or the largest that fits the data.

    Parameters
    ----------
    shapes : sequence of shapes
        The spatial shapes of the training part (regions thinner than the patch are
        padded later, so the patch may reach the next multiple of the divisor).
    config : TrainConfig
        ``data.patch_size`` (None: automatic), the memory budget, width and batch size.
    spacing : sequence of float, optional
        Voxel size (the automatic patch shrinks along coarse axes first).
    single : bool
        One image (error messages speak of its training part).
    max_patch_voxels : int, optional
        Cap on the automatic patch size (``devices.patch_voxel_cap``).

    Returns
    -------
    tuple of int

    Raises
    ------
    ConfigError
        A patch size not divisible by the network's down-sampling factor.
    InputError
        A patch size larger than the data.
    """
    from napari_medml.nn.strides import fit_thin_axes, patch_divisor, patch_divisors
    from napari_medml.segmentation import data

    dc = config.data
    divisor = patch_divisor(config.model)
    smallest = tuple(min(int(s[a]) for s in shapes) for a in range(dc.spatial_dims))
    if dc.patch_size is None:
        patch = data.auto_patch_size(smallest, spacing, dc.spatial_dims, dc.memory_budget_mb, divisor,
                                     bytes_per_voxel=96.0 * config.model.channels * dc.batch_size,
                                     max_voxels=max_patch_voxels)
        return fit_thin_axes(patch, smallest, config.model, spacing)
    where = "training part of the image" if single and dc.val_fraction > 0 else "smallest training image"
    return check_patch_size(dc.patch_size, shapes, patch_divisors(config.model, dc.patch_size, spacing),
                            config.model.depth, where)


def normalize_regions(train_regions: list, val_regions: list, config: TrainConfig, base: Any = None, *,
                      foreground_masks: bool = False) -> dict:
    """Fit the intensity normalisation on the training part (or keep ``base``'s) and
    apply it to every region's image in place.

    Parameters
    ----------
    train_regions, val_regions : list of Region
    config : TrainConfig
        ``data.normalization``.
    base : model, optional
        A model being fine-tuned or resumed: its normalisation is kept.
    foreground_masks : bool
        Fit the statistics on the labelled foreground (encoded labels >= 2) for the
        methods that use it.

    Returns
    -------
    dict
        The normalisation (stored in the model).
    """
    from napari_medml.preprocessing.normalization import apply_normalization, fit_normalization

    if base is not None:
        normalization = base.normalization
    else:
        masks = [r.label >= 2 for r in train_regions] if foreground_masks else None
        normalization = fit_normalization([r.image for r in train_regions], config.data.normalization, masks=masks)
    for region in train_regions + val_regions:
        region.image = apply_normalization(np.array(region.image, dtype=np.float32), normalization)
    return normalization
