"""The classifier: a trained network with its classes and normalisation, that classifies
:class:`~napari_medml.classification.data.ClassSamples` (image, object or tile level),
and its bundle (``config.json`` + ``weights.safetensors``, atomic write, never pickle).

Training lives in :mod:`napari_medml.classification.task` (``fit_classifier``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_medml.classification.data import ClassSamples
from napari_medml.classification.levels import class_probability_map, make_samples, prediction_table
from napari_medml.classification.levels import class_labels as labels_from_classes
from napari_medml.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, from_dict, to_dict
from napari_medml.errors import BundleError, Cancelled
from napari_medml.engine.reports import StopToken

__all__ = ["ClassPrediction", "Classifier", "classification_config", "load_classifier"]
_PREDICT_BATCH = 64


def classification_config(spatial_dims: int = 2, **optim: Any) -> TrainConfig:
    """A sensible starting configuration for a small classification data set.

    ``smallcnn`` with batch norm, cross-entropy, AdamW with a cosine schedule, 30
    epochs of 20 steps of 16 samples, best epoch by validation accuracy. Keyword
    arguments replace ``OptimConfig`` fields.
    """
    return TrainConfig(
        task="classification",
        data=DataConfig(spatial_dims=spatial_dims, batch_size=16, val_fraction=0.2),
        model=ModelConfig(network="smallcnn", channels=16, depth=4, norm="batch", dropout=0.1),
        optim=replace(OptimConfig(loss="ce", schedule="cosine", epochs=30, steps_per_epoch=20,
                                  early_stopping_metric="val_accuracy"), **optim),
    )



@dataclass(frozen=True)
class ClassPrediction:
    """What :meth:`Classifier.classify` returns, ready for napari layers.

    Attributes
    ----------
    labels : np.ndarray
        Labels at the input's shape: each sample, object or tile filled with its class.
    table : dict
        Columns for the labels layer's ``features`` (index, class, ``prob_<id>``...).
    classes : np.ndarray
        Predicted class id per sample.
    proba : np.ndarray
        ``(N, K)`` probabilities, column k = ``class_ids[k]``.
    class_ids : tuple of int
    level : {"image", "object", "tile"}
    probabilities : np.ndarray or None
        ``(K, *image_shape)`` float32 probability map (tile level, or when asked for).
    """

    labels: np.ndarray
    table: dict
    classes: np.ndarray
    proba: np.ndarray
    class_ids: tuple[int, ...]
    level: str = "image"
    probabilities: np.ndarray | None = None


class Classifier:
    """A classification network plus what is needed to use it on new data.

    Attributes
    ----------
    network : torch.nn.Module
    config : TrainConfig
    class_ids : tuple of int
        Output k -> class id (painted ids, unchanged).
    level : {"image", "object", "tile"}
    in_channels, image_channels, spatial_dims : int
    input_size : tuple of int
    sample_params : dict
        How samples are made (``ClassSamples.params``: tile size, margin...).
    normalization : dict
        Intensity statistics of the image channels (``normalization.fit_normalization``).
    metrics : dict
        Validation report of the best epoch (``classify_metrics.classification_report``).
    history : list of dict
    provenance : dict
        Where the initial weights came from, the split, the best epoch.
    """

    def __init__(self, network: nn.Module, config: TrainConfig, class_ids: Sequence[int], *, level: str,
                 in_channels: int, image_channels: int, spatial_dims: int, input_size: Sequence[int],
                 sample_params: Mapping[str, Any], normalization: dict, metrics: dict | None = None,
                 history: list[dict] | None = None, provenance: dict | None = None) -> None:
        self.network = network
        self.config = config
        self.class_ids = tuple(int(c) for c in class_ids)
        self.level = level
        self.in_channels = int(in_channels)
        self.image_channels = int(image_channels)
        self.spatial_dims = int(spatial_dims)
        self.input_size = tuple(int(s) for s in input_size)
        self.sample_params = dict(sample_params)
        self.normalization = normalization
        self.metrics = dict(metrics or {})
        self.history = list(history or [])
        self.provenance = dict(provenance or {})

    def __repr__(self) -> str:
        return (f"Classifier({self.config.model.network}, {self.level} level, {self.spatial_dims}D, "
                f"class_ids={self.class_ids}, input_size={self.input_size})")

    @property
    def class_names(self) -> dict[int, str]:
        names = dict(self.config.class_names or {})
        return {c: str(names.get(c, f"class {c}")) for c in self.class_ids}

    def prepare(self, image: np.ndarray, *, instances: np.ndarray | None = None,
                class_labels: np.ndarray | None = None, channel_axis: int | None = None) -> ClassSamples:
        """Samples from new data, made the way the training samples were."""
        return make_samples(self.level, image, self.sample_params, class_labels=class_labels,
                            instances=instances, channel_axis=channel_axis)

    def predict_proba(self, samples: ClassSamples | np.ndarray, *, stop: StopToken | None = None,
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Class probabilities ``(N, K)`` float32, column k = ``class_ids[k]``.

        ``progress(done, total)`` is called after each batch of samples.

        Raises
        ------
        BundleError
            Samples of another level or channel count than the classifier's.
        Cancelled
            Stopped through ``stop``.
        """
        from napari_medml.engine.devices import amp_enabled, autocast, resolve_device

        x = self._inputs(samples)
        device = resolve_device(self.config.device)
        amp = amp_enabled(device, self.config.amp)
        self.network.to(device).eval()
        out = []
        with torch.inference_mode(), autocast(amp):
            for start in range(0, len(x), _PREDICT_BATCH):
                if stop is not None and stop.stopped:
                    raise Cancelled("classification stopped")
                batch = torch.from_numpy(x[start:start + _PREDICT_BATCH]).to(device)
                out.append(torch.softmax(self.network(batch).float(), dim=1).cpu().numpy())
                if progress is not None:
                    progress(min(start + _PREDICT_BATCH, len(x)), len(x))
        k = len(self.class_ids)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, k), np.float32)

    def predict(self, samples: ClassSamples | np.ndarray) -> np.ndarray:
        """The most probable class id per sample."""
        return np.asarray(self.class_ids, dtype=np.int64)[np.argmax(self.predict_proba(samples), axis=1)]

    def classify(self, image: np.ndarray, *, instances: np.ndarray | None = None,
                 channel_axis: int | None = None, stop: StopToken | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 probability_map: bool = False) -> ClassPrediction:
        """Classify every sample, object or tile of an image; results as layer data.

        ``progress(done, total)`` counts samples; ``probability_map`` also fills
        ``probabilities`` in image and object level (tile level always has it).
        """
        samples = self.prepare(image, instances=instances, channel_axis=channel_axis)
        proba = self.predict_proba(samples, stop=stop, progress=progress)
        classes = np.asarray(self.class_ids, dtype=np.int64)[np.argmax(proba, axis=1)]
        labels = labels_from_classes(samples, classes, instances=instances)
        table = prediction_table(samples, classes, proba, self.class_ids)
        prob_map = None
        if samples.level == "tile" or probability_map:
            prob_map = class_probability_map(samples, proba, instances=instances)
        return ClassPrediction(labels=labels, table=table, classes=classes, proba=proba,
                               class_ids=self.class_ids, level=samples.level, probabilities=prob_map)

    def save(self, path: str | Path) -> Path:
        """Write a bundle folder (``config.json`` + ``weights.safetensors``), atomically."""
        from napari_medml.bundles.format import write_bundle_files

        return write_bundle_files(self.description(), self.network, path)

    def description(self) -> dict:
        """The ``config.json`` content (keys shared with segmentation bundles, plus level and metrics)."""
        from napari_medml.bundles.format import SCHEMA_VERSION, library_versions

        cfg = self.config
        return {
            "schema_version": SCHEMA_VERSION,
            "task": "classification",
            "level": self.level,
            "network": {"name": cfg.model.network, "arguments": to_dict(cfg.model),
                        "spatial_dims": self.spatial_dims, "in_channels": self.in_channels,
                        "out_channels": len(self.class_ids)},
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "image_channels": self.image_channels,
            "out_channels": len(self.class_ids),
            "class_ids": list(self.class_ids),
            "class_names": {str(c): n for c, n in self.class_names.items()},
            "input_size": list(self.input_size),
            "patch_size": list(self.input_size),
            "spacing": None,
            "sample_params": _plain(self.sample_params),
            "normalization": self.normalization,
            "metrics": self.metrics,
            "history": self.history,
            "versions": library_versions(),
            "seed": cfg.seed,
            "provenance": self.provenance,
            "train_config": to_dict(cfg),
        }

    def _inputs(self, samples: ClassSamples | np.ndarray) -> np.ndarray:
        from napari_medml.classification.data import _resize

        if isinstance(samples, ClassSamples):
            if samples.level != self.level:
                raise BundleError(f"this classifier was trained on {self.level}-level samples, "
                                  f"not {samples.level}-level: make {self.level}-level samples")
            x = samples.x
        else:
            x = np.asarray(samples, dtype=np.float32)
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise BundleError(
                f"samples have shape {x.shape} but the classifier takes (N, {self.in_channels}, "
                f"{', '.join(str(s) for s in self.input_size)}): use images with {self.image_channels} "
                f"channel(s) in {self.spatial_dims}D"
            )
        if tuple(x.shape[2:]) != self.input_size:
            x = np.stack([_resize(s, self.input_size, order=1) for s in x]) if len(x) else x
        x = np.array(x, dtype=np.float32)  # a copy: the caller's samples stay untouched
        return _normalize(x, self.normalization, self.image_channels)


def _normalize(x: np.ndarray, stats: dict, image_channels: int) -> np.ndarray:
    """Normalise the image channels of ``(N, C, ...)`` in place (mask channels stay 0/1)."""
    from napari_medml.preprocessing.normalization import apply_normalization

    apply_normalization(x[:, :image_channels].swapaxes(0, 1), stats)
    return x


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj



def load_classifier(path: str | Path) -> Classifier:
    """Load a classification bundle folder (never unpickles).

    Raises
    ------
    BundleError
        Missing or damaged files, a segmentation bundle, or weights that do not fit.
    """
    from napari_medml.bundles.format import CONFIG_NAME, WEIGHTS_NAME, load_weights, read_description, read_weights
    from napari_medml.nn.classification import build_classifier_network

    path = Path(path).expanduser()
    desc = read_description(path)
    if desc.get("task") != "classification":
        raise BundleError(f"{path} is a {desc.get('task')!r} bundle, not a classifier: load it as a "
                          "segmentation model, or choose a classification bundle")
    try:
        config = from_dict(TrainConfig, desc["train_config"])
        class_ids = tuple(int(c) for c in desc["class_ids"])
        spatial_dims, in_channels = int(desc["spatial_dims"]), int(desc["in_channels"])
        input_size = tuple(int(s) for s in desc["input_size"])
        network = build_classifier_network(config.model, spatial_dims, in_channels, len(class_ids),
                                           input_size=input_size)
        level = desc.get("level", desc.get("mode"))  # schema 1 said "mode"
        image_channels = int(desc.get("image_channels", in_channels))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BundleError(f"{path / CONFIG_NAME} does not describe a classifier this version can build "
                          f"({exc}): the bundle is damaged or from a newer version") from exc
    load_weights(network, read_weights(path), str(path / WEIGHTS_NAME))
    return Classifier(network, config, class_ids, level=level, in_channels=in_channels,
                      image_channels=image_channels, spatial_dims=spatial_dims, input_size=input_size,
                      sample_params=desc.get("sample_params") or {}, normalization=desc["normalization"],
                      metrics=desc.get("metrics") or {}, history=desc.get("history") or [],
                      provenance=desc.get("provenance") or {})
