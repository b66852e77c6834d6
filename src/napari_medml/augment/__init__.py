"""Data augmentation: MONAI dictionary transforms built from an
:class:`~napari_medml.config.AugmentConfig` (:mod:`.transforms`), and a preview of what
they do to an image (:mod:`.previews`). Neither imports torch or MONAI at import time."""

from napari_medml.augment.previews import preview, preview_window
from napari_medml.augment.transforms import AUGMENT_DESCRIPTIONS, augmentation_transforms, compact_ids

__all__ = ["AUGMENT_DESCRIPTIONS", "augmentation_transforms", "compact_ids", "preview", "preview_window"]
