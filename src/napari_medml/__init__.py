"""napari-medml: deep learning on the images open in napari.

The public API is imported lazily so that ``import napari_medml`` (and napari's
start-up with the plugin installed) never imports torch, MONAI or Qt.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "TrainConfig": "napari_medml.config",
    "DataConfig": "napari_medml.config",
    "AugmentConfig": "napari_medml.config",
    "AugmentSpec": "napari_medml.config",
    "ModelConfig": "napari_medml.config",
    "OptimConfig": "napari_medml.config",
    "InferConfig": "napari_medml.config",
    "TrainReport": "napari_medml.engine.reports",
    "StopToken": "napari_medml.engine.reports",
    "fit": "napari_medml.api",
    "train": "napari_medml.api",
    "Model": "napari_medml.segmentation.model",
    "Prediction": "napari_medml.segmentation.model",
    "load_model": "napari_medml.api",
    "evaluate": "napari_medml.api",
    "Classifier": "napari_medml.classification.model",
    "fit_classifier": "napari_medml.classification.task",
    "train_classifier": "napari_medml.classification.task",
    "load_classifier": "napari_medml.classification.model",
    "classification_report": "napari_medml.classification.metrics",
    "read_volume": "napari_medml.io",
    "write_volume": "napari_medml.io",
    "Volume": "napari_medml.io",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_medml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
