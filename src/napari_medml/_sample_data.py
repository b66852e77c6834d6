"""npe2 sample-data contributions: thin wrappers over :mod:`napari_medml.samples`.

Each command returns napari LayerDataTuples ``(data, kwargs, layer_type)``; no
napari import is needed to build them.
"""

from __future__ import annotations

from typing import Any

from napari_medml import samples
from napari_medml.layer_data import AXES_KEY, FILE_META_KEY, _add_image_takes_axis_labels

__all__ = ["phantom_3d", "shape_classes", "touching_objects_2d"]

LayerDataTuple = tuple[Any, dict[str, Any], str]


def _zyx() -> dict[str, Any]:
    """The sliders say z, not napari's default -3, and the scale bar mm (napari 0.5.0's add_image
    takes no axis_labels or units: there the metadata's axes alone name them for the widgets)."""
    return {"axis_labels": ("z", "y", "x"), "units": ("mm",) * 3} if _add_image_takes_axis_labels() else {}


def phantom_3d() -> list[LayerDataTuple]:
    """3D phantom: an anisotropic image and its tissue labels (body, organ, lesion)."""
    sample = samples.phantom_3d()
    meta = {"spacing": sample.spacing, "class_names": dict(sample.class_names), "sample": "phantom_3d",
            AXES_KEY: "ZYX", FILE_META_KEY: {"unit": "mm"}}  # its voxel size is in mm: saved so
    return [
        (sample.image, {"name": "phantom", "scale": sample.spacing, "metadata": dict(meta), **_zyx()}, "image"),
        (
            sample.labels,
            {"name": "phantom [ground truth]", "scale": sample.spacing, "metadata": dict(meta), **_zyx()},
            "labels",
        ),
    ]


def touching_objects_2d() -> list[LayerDataTuple]:
    """2D image of touching cell-like objects and their instance labels."""
    sample = samples.touching_objects_2d()
    meta = {"spacing": sample.spacing, "sample": "touching_objects_2d"}
    return [
        (sample.image, {"name": "objects", "scale": sample.spacing, "metadata": dict(meta)}, "image"),
        (
            sample.labels,
            {"name": "objects [ground truth]", "scale": sample.spacing, "metadata": dict(meta)},
            "labels",
        ),
    ]


def shape_classes() -> list[LayerDataTuple]:
    """Stack of smooth/irregular shapes; the labels paint each sample with its class.

    The per-sample class ids also ride in the labels layer's
    ``metadata["sample_classes"]`` (one id per slice along axis 0), and the
    layer's ``features`` name each class id.
    """
    sample = samples.shape_classes()
    scale = (1.0, *sample.spacing)  # axis 0 indexes samples
    names = dict(sample.class_names)
    meta = {
        "spacing": sample.spacing,
        "class_names": names,
        "sample_classes": [int(c) for c in sample.classes],
        "sample": "shape_classes",
    }
    features = {"index": [0, *names], "class_name": ["background", *names.values()]}
    return [
        (sample.images, {"name": "shapes", "scale": scale, "metadata": dict(meta)}, "image"),
        (
            sample.labels,
            {"name": "shapes [ground truth]", "scale": scale, "metadata": dict(meta), "features": features},
            "labels",
        ),
    ]
