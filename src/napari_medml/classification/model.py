"""The classifier: a trained network with its classes and normalisation, that classifies
:class:`~napari_medml.classification.data.ClassSamples` (image, object or tile level),
and its bundle (``config.json`` + ``weights.safetensors``, atomic write, never pickle).

Training lives in :mod:`napari_medml.classification.task` (``fit_classifier``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_medml.classification.data import ClassSamples
from napari_medml.classification.defaults import CLASSIFIER_OPTIM
from napari_medml.classification.levels import class_probability_map, make_samples, prediction_table
from napari_medml.classification.levels import class_labels as labels_from_classes
from napari_medml.classification.prediction import ClassPrediction
from napari_medml.classification.tables import class_table
from napari_medml.bundles.format import has_batch_statistics
from napari_medml.bundles.spec import BundledModel, ModelSpec, SpecField
from napari_medml.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, to_dict
from napari_medml.errors import BundleError, Cancelled, InputError
from napari_medml.engine.reports import StopToken
from napari_medml.preprocessing.inputs import check_finite

__all__ = ["ClassPrediction", "Classifier", "ClassifierSpec", "classification_config", "load_classifier"]
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
        optim=replace(OptimConfig(**CLASSIFIER_OPTIM), **optim),
    )


@dataclass(frozen=True, kw_only=True)
class ClassifierSpec(ModelSpec):
    """What a classification bundle says: the network, its samples and its classes.

    Attributes
    ----------
    config : TrainConfig
        ``task="classification"``; ``model`` describes the network.
    in_channels : int
        Channels of a sample: the image channels, plus a mask channel at object level.
    spatial_dims : int
        2 or 3.
    normalization : dict
        Intensity statistics of the image channels (``normalization.fit_normalization``).
    class_ids : tuple of int
        Output k -> class id (painted ids, unchanged).
    level : {"image", "object", "tile"}
    image_channels : int
        Channels of the images the samples are made from.
    input_size : tuple of int
        A sample's spatial shape, the network's input ``(C, *input_size)``.
    sample_params : dict
        How samples are made (``ClassSamples.params``: tile size, margin...).
    """

    task = "classification"
    what = "a classifier"

    class_ids: tuple[int, ...]
    level: str
    image_channels: int
    input_size: tuple[int, ...]
    sample_params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set(class_ids=tuple(int(c) for c in self.class_ids), image_channels=int(self.image_channels),
                  input_size=tuple(int(s) for s in self.input_size), sample_params=dict(self.sample_params))

    @property
    def out_channels(self) -> int:
        return len(self.class_ids)

    @classmethod
    def from_description(cls, desc: Mapping[str, Any], path: str | Path) -> ClassifierSpec:
        model = (desc.get("train_config") or {}).get("model") or {}
        if model.get("network") == "efficientnet-b0" and model.get("norm") == "instance" and has_batch_statistics(path):
            # bundles saved before EfficientNet honoured the norm said "instance" but hold batch norm
            desc = {**desc, "train_config": {**desc["train_config"], "model": {**model, "norm": "batch"}}}
        return super().from_description(desc, path)

    def build_network(self) -> nn.Module:
        from napari_medml.nn.classification import build_classifier_network

        return build_classifier_network(self.config.model, self.spatial_dims, self.in_channels,
                                        len(self.class_ids), input_size=self.input_size)

    def class_names(self) -> dict[int, str]:
        """Class id -> name, from the config's ``class_names`` or generic."""
        names = dict(self.config.class_names or {})
        return {c: str(names.get(c, f"class {c}")) for c in self.class_ids}

    def description_fields(self) -> dict[str, Any]:
        # "patch_size" and "spacing" as in other tasks' bundles: the input size, no spacing
        return {"level": self.level, "image_channels": self.image_channels, "class_ids": list(self.class_ids),
                "class_names": {str(c): n for c, n in self.class_names().items()},
                "input_size": list(self.input_size), "patch_size": list(self.input_size), "spacing": None,
                "sample_params": to_dict(self.sample_params), **super().description_fields()}

    @classmethod
    def arguments(cls, desc: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().arguments(desc), "class_ids": desc["class_ids"],
                "level": desc.get("level", desc.get("mode")),  # schema 1 said "mode"
                "image_channels": desc.get("image_channels", desc["in_channels"]),
                "input_size": desc["input_size"], "sample_params": desc.get("sample_params") or {}}


class Classifier(BundledModel):
    """A classification network plus what is needed to use it on new data.

    Parameters
    ----------
    network : torch.nn.Module
        ``(B, in_channels, *input_size)`` to ``(B, K)`` logits, k = ``class_ids[k]``.
    spec : ClassifierSpec or TrainConfig
        The model's description. The older form gives the ``TrainConfig`` here,
        ``class_ids`` next and the spec's other fields as keywords (``level``,
        ``in_channels``, ``image_channels``, ``spatial_dims``, ``input_size``,
        ``sample_params``, ``normalization``).
    metrics : dict, optional
        Validation report of the best epoch (``classification.metrics``).
    history : list of dict, optional
    provenance : dict, optional
        Where the initial weights came from, the split, the best epoch.

    Attributes
    ----------
    spec : ClassifierSpec
    config, class_ids, level, in_channels, image_channels, spatial_dims, input_size, sample_params, normalization
        The spec's fields (setting one replaces the spec by an updated copy).
    metrics, history, provenance
    """

    spec_type = ClassifierSpec
    spec: ClassifierSpec

    class_ids = SpecField()
    level = SpecField()
    image_channels = SpecField()
    input_size = SpecField()
    sample_params = SpecField()

    def __init__(self, network: nn.Module, spec: ClassifierSpec | TrainConfig, class_ids: Sequence[int] | None = None,
                 *, level: str | None = None, in_channels: int | None = None, image_channels: int | None = None,
                 spatial_dims: int | None = None, input_size: Sequence[int] | None = None,
                 sample_params: Mapping[str, Any] | None = None, normalization: dict | None = None,
                 metrics: dict | None = None, history: list[dict] | None = None,
                 provenance: dict | None = None) -> None:
        spec = self.spec_from_arguments(spec, class_ids=class_ids, level=level, in_channels=in_channels,
                                        image_channels=image_channels, spatial_dims=spatial_dims,
                                        input_size=input_size, sample_params=sample_params,
                                        normalization=normalization)
        super().__init__(network, spec, history=history, provenance=provenance)
        self.metrics = dict(metrics or {})

    def __repr__(self) -> str:
        return (f"Classifier({self.config.model.network}, {self.level} level, {self.spatial_dims}D, "
                f"class_ids={self.class_ids}, input_size={self.input_size})")

    def record(self) -> dict[str, Any]:
        """The validation metrics, then history, versions and provenance."""
        return {"metrics": self.metrics, **super().record()}

    @classmethod
    def record_arguments(cls, desc: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().record_arguments(desc), "metrics": desc.get("metrics") or {}}

    @property
    def class_names(self) -> dict[int, str]:
        """Class id -> name (``ClassifierSpec.class_names``)."""
        return self.spec.class_names()

    def prepare(self, image: np.ndarray, *, instances: np.ndarray | None = None,
                class_labels: np.ndarray | None = None, channel_axis: int | None = None,
                name: str = "the image") -> ClassSamples:
        """Samples from new data, made the way the training samples were.

        Parameters
        ----------
        image : ndarray
            The image in napari axis order: ``(Y, X)`` or ``(Z, Y, X)``, plus a channel axis
            at ``channel_axis``; image level: ``(N, ...)`` samples.
        instances : ndarray, optional
            Object level: instance labels of the image's spatial shape (0 outside objects).
        class_labels : ndarray, optional
            Class ids per sample, object or tile, when known (to score them).
        channel_axis : int, optional
            The image's channel axis.
        name : str
            How a refusal names the image (a file or a layer).

        Returns
        -------
        ClassSamples

        Raises
        ------
        InputError
            Instance labels (object level), an image (tile level) or samples (image level)
            of another number of spatial axes than the training data's, and what the
            make_samples checks find.
        """
        dims = self.spatial_dims
        if self.level == "object" and instances is not None and np.ndim(instances) != dims:
            raise InputError(f"the instance labels are {np.ndim(instances)}D {np.shape(instances)}, but this "
                             f"classifier was trained on {dims}D objects: classify {dims}D images with it, or "
                             f"train a classifier on {np.ndim(instances)}D objects")
        spatial = np.ndim(image) - (channel_axis is not None)
        if self.level == "tile" and spatial != dims:
            raise InputError(f"{name} is {spatial}D, but this classifier was trained on {dims}D tiles: classify "
                             f"{dims}D images with it, or train a classifier on {spatial}D tiles")
        if self.level == "image" and spatial != dims + 1 and spatial in (dims, dims + 2):
            # a stack of the other dimension's samples, or a single image: not "stack the images" (trial 40)
            form, other = ("(N, Y, X)", "3D") if dims == 2 else ("(N, Z, Y, X)", "2D")
            reads = (f"a stack of {spatial - 1}D images" if spatial == dims + 2 else
                     f"a single {dims}D image" + (" or a stack of 2D images" if dims == 3 else ""))
            raise InputError(f"{name} has shape {tuple(np.shape(image))}, {reads}, but this classifier was trained "
                             f"on {dims}D images: give a stack of {dims}D images {form} (one image as N = 1), or "
                             f"train a classifier on {other} images")
        samples = make_samples(self.level, image, self.sample_params, class_labels=class_labels,
                               instances=instances, channel_axis=channel_axis, name=name)
        size = tuple(samples.x.shape[2:])
        if self.level == "image" and len(samples) and size != tuple(self.input_size):  # said, not silent (c35)
            said = (f"samples of {'x'.join(map(str, size))} voxels are resized to the classifier's input of "
                    f"{'x'.join(map(str, self.input_size))} (linear interpolation)")
            samples = replace(samples, note="; ".join(filter(None, (samples.note, said))))
        return samples

    def predict_proba(self, samples: ClassSamples | np.ndarray, *, stop: StopToken | None = None,
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Class probabilities ``(N, K)`` float32, column k = ``class_ids[k]``.

        Parameters
        ----------
        samples : ClassSamples or ndarray
            From :meth:`prepare`, or the network's input array ``(N, C, *spatial)``.
        stop : StopToken, optional
            Stops between batches.
        progress : callable, optional
            ``progress(done, total)``, called after each batch of samples.

        Returns
        -------
        ndarray
            ``(N, K)`` float32; each row sums to 1.

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
        """The most probable class id per sample.

        Parameters
        ----------
        samples : ClassSamples or ndarray
            As :meth:`predict_proba`.

        Returns
        -------
        ndarray
            ``(N,)`` int64 class ids (``class_ids``).
        """
        return np.asarray(self.class_ids, dtype=np.int64)[np.argmax(self.predict_proba(samples), axis=1)]

    def classify(self, image: np.ndarray, *, instances: np.ndarray | None = None,
                 channel_axis: int | None = None, stop: StopToken | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 probability_map: bool = False, name: str = "the image") -> ClassPrediction:
        """Classify every sample, object or tile of an image; results as layer data.

        Parameters
        ----------
        image, instances, channel_axis
            As :meth:`prepare`.
        stop : StopToken, optional
            Stops between batches (raises ``Cancelled``).
        progress : callable, optional
            ``progress(done, total)``, counting samples.
        probability_map : bool
            Also fill ``probabilities`` at image and object level (tile level always has it).
        name : str
            How a refusal names the image.

        Returns
        -------
        ClassPrediction
            ``labels`` (the image's spatial shape: each object or tile painted with its class
            id, 0 outside), the per-sample ``table`` and ``classes``, ``proba`` ``(N, K)``,
            and per-class counts.

        Raises
        ------
        InputError, BundleError, Cancelled
            As :meth:`prepare` and :meth:`predict_proba`.
        """
        samples = self.prepare(image, instances=instances, channel_axis=channel_axis, name=name)
        proba = self.predict_proba(samples, stop=stop, progress=progress)
        classes = np.asarray(self.class_ids, dtype=np.int64)[np.argmax(proba, axis=1)]
        labels = labels_from_classes(samples, classes, instances=instances)
        table = prediction_table(samples, classes, proba, self.class_ids, self.config.class_names)
        zero = None if labels.all() else "background" if samples.level == "object" else "unclassified"  # 0: a row
        per_class = class_table(classes, proba, self.class_ids, self.class_names, zero=zero)
        prob_map = (class_probability_map(samples, proba, instances=instances)
                    if samples.level == "tile" or probability_map else None)
        from napari_medml.preprocessing.normalization import intensity_note  # trial 50: said for segmentations only
        far = intensity_note(image, channel_axis, self.normalization or {}, name,
                             retrain="train on images of both scales")
        return ClassPrediction(labels=labels, table=table, classes=classes, proba=proba,
                               class_ids=self.class_ids, level=samples.level, probabilities=prob_map,
                               class_table=per_class, note="; ".join(n for n in (samples.note, far) if n))

    def _inputs(self, samples: ClassSamples | np.ndarray) -> np.ndarray:
        from napari_medml.classification.data import _resize

        if isinstance(samples, ClassSamples):
            if samples.level != self.level:
                raise BundleError(f"this classifier was trained on {self.level}-level samples, "
                                  f"not {samples.level}-level: make {self.level}-level samples")
            x = samples.x
        else:
            x = np.asarray(samples, dtype=np.float32)
            check_finite(x, "the samples")  # trial 47: NaN rows came back, argmax gave them a class
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise BundleError(f"samples have shape {x.shape} but the classifier takes (N, {self.in_channels}, "
                              f"{', '.join(str(s) for s in self.input_size)}): use images with "
                              f"{self.image_channels} channel(s) in {self.spatial_dims}D")
        if tuple(x.shape[2:]) != self.input_size:
            x = np.stack([_resize(s, self.input_size, order=1) for s in x]) if len(x) else x
        x = np.array(x, dtype=np.float32)  # a copy: the caller's samples stay untouched
        return _normalize(x, self.normalization, self.image_channels)


def _normalize(x: np.ndarray, stats: dict, image_channels: int) -> np.ndarray:
    """Normalise the image channels of ``(N, C, ...)`` in place (mask channels stay 0/1)."""
    from napari_medml.preprocessing.normalization import apply_normalization

    apply_normalization(x[:, :image_channels].swapaxes(0, 1), stats)
    return x


def load_classifier(path: str | Path) -> Classifier:
    """Load a classification bundle folder (never unpickles).

    Parameters
    ----------
    path : str or Path
        The bundle folder.

    Returns
    -------
    Classifier

    Raises
    ------
    BundleError
        Missing or damaged files, a segmentation bundle, or weights that do not fit.
    """
    return Classifier.load(path)
