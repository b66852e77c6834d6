"""Images of different voxel sizes: one target spacing (the median) for a training run.

Below the task packages, so that segmentation and pretraining runs resample the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SPACING_TOLERANCE", "common_spacing"]

SPACING_TOLERANCE = 1.25  # voxel sizes within this ratio of one another count as one spacing


def common_spacing(config: Any, spacing: Any, n_images: int) -> tuple[Any, str | None]:
    """Images of different voxel sizes: a recipe that resamples each to their median spacing.

    A network learns shapes in voxels, so training images of one object size at two voxel
    sizes teach it two sizes. nnU-Net resamples every training case to the median
    spacing and every image it predicts to the same; this puts that resampling first in
    the recipe, which the model stores and re-applies to every image it predicts (the
    result is put back on the image's own grid). Pretraining does the same, so that its mask
    blocks and patch have one size in physical units whatever the order of the images.

    Parameters
    ----------
    config : TrainConfig
        The run's config (``data.preprocessing`` is the recipe).
    spacing : tuple or list of tuples or None
        One voxel size for all images or one per image, spatial axes only.
    n_images : int
        The number of training images (samples); with ``config.data.sample_groups`` (the
        samples cut from each volume or series, in order) the median is over those cases,
        not over their slices or frames.

    Returns
    -------
    config : TrainConfig
        ``config``, with the resampling in front of its recipe when the images' voxel
        sizes differ by more than :data:`SPACING_TOLERANCE` on an axis (and the recipe
        does not resample already).
    note : str or None
        One line saying what was done, or None.
    """
    from dataclasses import replace

    from napari_medml.config import PreprocessStep
    from napari_medml.preprocessing.inputs import spacings_per_image

    sizes = spacings_per_image(spacing, n_images)
    groups = config.data.sample_groups
    if groups and sum(groups) == n_images:  # the slices or frames of one file are one case, as nnU-Net counts
        starts = np.cumsum([0, *groups[:-1]])
        sizes = [sizes[int(i)] for i in starts]
    known = [s for s in sizes if s is not None]
    if len(known) < 2 or len({len(s) for s in known}) > 1:
        return config, None
    if any(step.operation == "resample" for step in config.data.preprocessing):
        return config, None
    sizes = np.asarray(known, dtype=np.float64)
    if np.all(sizes.max(axis=0) <= SPACING_TOLERANCE * sizes.min(axis=0)):
        return config, None
    target = tuple(float(v) for v in np.median(sizes, axis=0))
    step = PreprocessStep("resample", {"target_spacing": target})
    config = replace(config, data=replace(config.data, preprocessing=(step, *config.data.preprocessing)))
    shown = ", ".join(sorted({"x".join(f"{v:g}" for v in s) for s in known}))
    note = (f"the images have voxel sizes {shown}: each is resampled to their median "
            f"{'x'.join(f'{v:g}' for v in target)} for training, and every image the model predicts is "
            "resampled the same way (nnU-Net's target spacing)")
    return config, note
