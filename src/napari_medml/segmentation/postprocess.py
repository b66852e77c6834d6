"""Clean-up of predicted label maps with MONAI, SciPy and scikit-image.

All functions take an integer label array (0 = background) and return a new
array of the same shape and dtype; the input is never modified.

``keep_largest`` is MONAI's ``KeepLargestConnectedComponent``. The other two stay
here because MONAI's versions mean something else for a label map with several
classes (tests/core/test_postprocess.py shows both): ``FillHoles`` fills every region
a class encloses, overwriting a lesion inside an organ; ``RemoveSmallObjects`` hands
the label map to scikit-image, which takes each class id as one object, so a small
stray piece of a large class is never removed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_medml.config import InferConfig

__all__ = ["fill_holes", "keep_largest", "postprocess", "remove_small", "split_instances"]


def _classes(labels: np.ndarray) -> list[int]:
    return [int(c) for c in np.unique(labels) if c != 0]


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set connected objects (per class) smaller than ``min_size`` voxels to background."""
    out = labels.copy()
    if min_size <= 1:
        return out
    for cls in _classes(labels):
        comp, n = ndi.label(labels == cls)
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        small = sizes < min_size
        small[0] = False
        out[small[comp]] = 0
    return out


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background holes enclosed by one class (holes holding other classes stay)."""
    out = labels.copy()
    for cls in _classes(labels):
        filled = ndi.binary_fill_holes(labels == cls)
        out[filled & (labels == 0)] = cls
    return out


def keep_largest(labels: np.ndarray) -> np.ndarray:
    """Keep only the largest connected component of each class (MONAI's transform)."""
    from monai.transforms import KeepLargestConnectedComponent

    classes = _classes(labels)
    if not classes:
        return labels.copy()
    keep = KeepLargestConnectedComponent(applied_labels=classes, is_onehot=False, independent=True,
                                         connectivity=1)  # faces, as ndi.label elsewhere here
    out = keep(labels[None].copy())
    return np.asarray(out)[0].astype(labels.dtype, copy=False)


def split_instances(labels: np.ndarray, method: str = "connected") -> np.ndarray:
    """Instance ids (1..N, uint32) for every foreground object.

    ``"connected"``: connected components per class.  ``"watershed"``: a watershed
    on the distance transform, seeded at its local maxima, separates touching
    objects of the same class.
    """
    out = np.zeros(labels.shape, dtype=np.uint32)
    offset = 0
    for cls in _classes(labels):
        mask = labels == cls
        if method == "watershed":
            from skimage.feature import peak_local_max
            from skimage.segmentation import watershed

            dist = ndi.distance_transform_edt(mask)
            comp, _ = ndi.label(mask)
            peaks = peak_local_max(dist, min_distance=3, labels=comp, exclude_border=False)
            markers = np.zeros(labels.shape, dtype=np.int32)
            markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
            inst = watershed(-dist, markers, mask=mask)
            # components without a peak (tiny) keep their own id
            missing = mask & (inst == 0)
            if missing.any():
                extra, _ = ndi.label(missing)
                inst = np.where(missing, extra + inst.max(), inst)
        elif method == "connected":
            inst, _ = ndi.label(mask)
        else:
            raise ValueError(f"unknown instance method {method!r}: use 'connected' or 'watershed'")
        # renumber 1..n
        ids = np.unique(inst[mask])
        lut = np.zeros(int(inst.max()) + 1, dtype=np.uint32)
        lut[ids] = np.arange(1, len(ids) + 1, dtype=np.uint32) + offset
        out[mask] = lut[inst[mask]]
        offset += len(ids)
    return out


def postprocess(labels: np.ndarray, config: InferConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply the clean-up steps that ``config`` asks for, in a fixed order.

    Returns the cleaned labels and the instance map (None unless asked for).
    """
    out = labels
    if config.min_size > 1:
        out = remove_small(out, config.min_size)
    if config.fill_holes:
        out = fill_holes(out)
    if config.keep_largest:
        out = keep_largest(out)
    instances = split_instances(out, config.instances) if config.instances != "none" else None
    return out, instances
