"""Typed, frozen configuration for every job, with a JSON round trip.

Widgets and the command line build these objects; the core only reads them; every
model bundle stores the ``TrainConfig`` it was trained with. Choices are ``Literal``
strings, never integer codes, so that a saved ``config.json`` reads like a sentence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from napari_medml.errors import ConfigError
from napari_medml.fields import check_fields, check_stop_metric, is_int
from napari_medml.config.augment import AugmentConfig, AugmentSpec
from napari_medml.jsonable import from_dict, to_dict  # the configs' JSON round trip

__all__ = ["AugmentConfig", "AugmentSpec", "DataConfig", "InferConfig", "ModelConfig", "OptimConfig", "PreprocessStep",
           "PretrainConfig", "TrainConfig", "from_dict", "to_dict", "usual_learning_rate"]

Task = Literal["segmentation", "classification", "pretraining", "instances"]
LabelMode = Literal["dense", "sparse"]
Norm = Literal["batch", "instance"]
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop"]
# Network names: the keys of the registries in napari_medml.nn (a test keeps them equal);
# declared here so that forms can list them without importing torch.
SegmentationNetwork = Literal["unet", "dynunet", "segresnet"]
ClassifierNetwork = Literal["smallcnn", "resnet18", "resnet34", "resnet50", "densenet121", "efficientnet-b0",
                            "unet-encoder"]
# the classifiers whose width (channels) and depth are settable; the others have their published sizes
SIZED_CLASSIFIERS = frozenset({"smallcnn", "unet-encoder"})
ClassifierLoss = Literal["ce", "focal"]
ClassLevel = Literal["image", "object", "tile"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]  # a config may also name "cuda:N"
ScheduleName = Literal["constant", "cosine", "poly", "plateau"]
LossName = Literal["ce", "dice", "dice_ce", "focal"]
Normalization = Literal["zscore", "zscore_nonzero", "ct", "percentile", "minmax", "none"]
StopMetric = Literal["val_dice", "val_loss", "val_accuracy"]
InstanceSplit = Literal["none", "connected", "watershed"]
ReconstructionLoss = Literal["mse", "mae"]
Corruption = Literal["mask", "noise", "mask_noise"]


@dataclass(frozen=True)
class PreprocessStep:
    """One step of a preprocessing recipe: an operation name and its parameters.

    The recipe (a tuple of steps) is stored in a model bundle and re-applied to
    every image the model predicts on; see ``napari_medml.preprocessing.recipe``.
    """

    operation: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class DataConfig:
    """What the training data are and how patches are drawn from them."""

    spatial_dims: Literal[2, 3] = 3
    label_mode: LabelMode = "dense"
    # Sparse (scribble) mode: the painted id that means background. Dense mode: ignored.
    background_id: int = 0
    patch_size: tuple[int, ...] | None = None  # None = chosen from shape, spacing, memory
    batch_size: int = 2
    foreground_fraction: float = 1.0 / 3.0  # share of patches centred on labelled foreground
    val_fraction: float = 0.2
    # one image: training labels this many voxels next to the held-out block are left out
    val_margin: int = 0
    normalization: Normalization = "zscore"
    preprocessing: tuple[PreprocessStep, ...] = ()
    memory_budget_mb: int = 1024
    # Ensembles: ``folds`` K > 1 trains K models, each validated on a different part;
    # ``fold`` (0..K-1) is the part one member holds out (None: train all K).
    folds: int = 1
    fold: int | None = None
    # A 2D network on volumes: how many consecutive training images are slices (or frames) of
    # one volume, per volume, e.g. (31, 1, 1); the slices next to a held-out one do not train
    # (segmentation.sample_groups). None: the images are unrelated.
    sample_groups: tuple[int, ...] | None = None
    # The training images' channel names, in the network's input order, as their files named them
    # (OME Channel names); predict takes an image whose file names them in another order in this one
    channel_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.sample_groups is not None and not all(g >= 1 for g in self.sample_groups):
            raise ConfigError(f"sample_groups {tuple(self.sample_groups)} must be positive integers, the number of "
                              "consecutive images of each volume")
        if not is_int(self.folds) or self.folds < 1:
            raise ConfigError(f"folds must be an integer >= 1, got {self.folds}")
        if self.fold is not None and not (is_int(self.fold) and 0 <= self.fold < self.folds):
            raise ConfigError(f"fold must be an integer from 0 to folds - 1 = {self.folds - 1}, got {self.fold}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ConfigError("foreground_fraction must be in [0, 1]")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("val_fraction must be in [0, 1)")
        if not is_int(self.val_margin) or self.val_margin < 0:
            raise ConfigError(f"val_margin must be an integer >= 0, got {self.val_margin}")
        if self.patch_size is not None and len(self.patch_size) != self.spatial_dims:
            raise ConfigError(
                f"patch_size {self.patch_size} has {len(self.patch_size)} axes "
                f"but spatial_dims is {self.spatial_dims}"
            )
        if self.patch_size is not None and not all(is_int(p) and p >= 1 for p in self.patch_size):
            raise ConfigError(f"patch_size {tuple(self.patch_size)} must be positive integers, one per axis")
        if not is_int(self.background_id) or self.background_id < 0:
            raise ConfigError(f"background_id must be a non-negative integer, got {self.background_id}")
        if not self.memory_budget_mb > 0:
            raise ConfigError(f"memory_budget_mb must be > 0, got {self.memory_budget_mb}")


@dataclass(frozen=True)
class ModelConfig:
    """Which network from the registry (``napari_medml.nn.segmentation``) and its size."""

    network: SegmentationNetwork | ClassifierNetwork = "unet"  # the task's kind is checked when it is built
    channels: int = 16  # the network's width: channels at the first (full-resolution) level
    depth: int = 4  # number of resolution levels
    norm: Norm = "instance"
    dropout: float = 0.0
    # Transfer learning: a bundle folder whose fitting weights initialise the network.
    init_from: str | None = None
    freeze_stages: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        if self.channels < 1 or self.depth < 1:
            raise ConfigError(f"channels and depth must be >= 1, got channels {self.channels}, depth {self.depth}")
        if self.freeze_stages < 0:
            raise ConfigError(f"freeze_stages must be >= 0, got {self.freeze_stages}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    def check_freeze(self, has_start: bool) -> None:
        """Frozen stages keep a start model's weights; without one they would keep random ones.

        Parameters
        ----------
        has_start : bool
            Whether the run starts from a model (``init_from``, a model to fine-tune, or a
            checkpoint).

        Raises
        ------
        ConfigError
            When ``freeze_stages > 0`` and the run has no start model (``init_from``, a model
            to fine-tune, or a checkpoint).
        """
        if self.freeze_stages and not has_start:
            raise ConfigError(f"freeze_stages is {self.freeze_stages}, but there is no start model whose stages it "
                              "would keep (it would freeze random weights): set init_from to a bundle, or "
                              "freeze_stages=0")


@dataclass(frozen=True)
class OptimConfig:
    """Loss, optimizer, schedule and when to stop."""

    loss: LossName = "dice_ce"
    class_weights: tuple[float, ...] | None = None
    label_smoothing: float = 0.0
    optimizer: OptimizerName = "adamw"
    learning_rate: float = 1e-3
    momentum: float | None = None  # SGD and RMSprop; None: 0.99 for SGD (nnU-Net's), 0 for RMSprop (torch's)
    nesterov: bool = True  # SGD
    weight_decay: float = 1e-5
    schedule: ScheduleName = "poly"
    warmup: float = 0.0  # share of the run (steps or time budget) warming the rate up from 0.1x
    epochs: int = 50
    steps_per_epoch: int = 50
    max_minutes: float | None = None
    early_stopping_patience: int | None = None  # epochs without improvement
    early_stopping_metric: StopMetric = "val_dice"

    def __post_init__(self) -> None:
        check_fields(self)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.epochs < 1 or self.steps_per_epoch < 1:
            raise ConfigError(f"epochs and steps_per_epoch must be >= 1, got {self.epochs} and {self.steps_per_epoch}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (0.0 <= (self.momentum or 0.0) < 1.0 and 0.0 <= self.weight_decay < 1.0):
            raise ConfigError(f"momentum and weight_decay must be in [0, 1), got {self.momentum} and {self.weight_decay}")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"warmup must be in [0, 1) (a share of the run), got {self.warmup}")
        if self.schedule == "plateau" and self.warmup > 0:
            raise ConfigError(f"the plateau schedule has no warm-up (it halves the rate when validation stops "
                              f"improving), got warmup={self.warmup:g}: set warmup=0, or choose constant, poly or "
                              "cosine with a warm-up")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise ConfigError(f"max_minutes must be > 0 (or None for no limit), got {self.max_minutes}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(f"early_stopping_patience must be >= 1 (or None), got {self.early_stopping_patience}")
        if self.class_weights is not None and not all(math.isfinite(w) and w >= 0 for w in self.class_weights):
            raise ConfigError(f"class_weights must be finite and >= 0, got {tuple(self.class_weights)}")

    @property
    def momentum_in_use(self) -> float:
        """The momentum SGD or RMSprop runs with: ``momentum``, or by default 0.99 for SGD
        (nnU-Net's, with Nesterov; Isensee et al. 2021) and 0 for RMSprop (torch's default).
        Adam and AdamW have none (their betas are torch's defaults)."""
        if self.momentum is not None:
            return float(self.momentum)
        return 0.99 if self.optimizer == "sgd" else 0.0

    def describe_optimizer(self) -> str:
        """``"SGD, momentum 0.99 (Nesterov), weight decay 1e-05"``: the optimizer as it runs."""
        name = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}.get(self.optimizer,
                                                                                        self.optimizer)
        parts = [name]
        if self.optimizer in ("sgd", "rmsprop"):
            nesterov = " (Nesterov)" if self.optimizer == "sgd" and self.nesterov and self.momentum_in_use > 0 else ""
            parts.append(f"momentum {self.momentum_in_use:g}{nesterov}")
        parts.append(f"weight decay {self.weight_decay:g}")
        return ", ".join(parts)


def usual_learning_rate(optimizer: str) -> float:
    """The rate an optimizer starts from without a plan: SGD 0.01 (nnU-Net's, with its Nesterov
    momentum 0.99; Isensee et al. 2021), RMSprop, Adam and AdamW 0.001 (Kingma & Ba 2015).

    Parameters
    ----------
    optimizer : {"sgd", "rmsprop", "adam", "adamw"}

    Returns
    -------
    float
        The learning rate.
    """
    return 1e-2 if optimizer == "sgd" else 1e-3


@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pretraining: how inputs are corrupted and how the reconstruction is scored.

    The network sees a corrupted patch (blocks of ``mask_block`` voxels along the finest
    axis blanked with probability ``mask_ratio``, and/or Gaussian noise of ``noise_std``
    in normalised units) and learns to give back the clean patch.
    """

    loss: ReconstructionLoss = "mse"
    corruption: Corruption = "mask_noise"
    mask_ratio: float = 0.5
    mask_block: int = 8
    noise_std: float = 0.2

    def __post_init__(self) -> None:
        check_fields(self)
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if not is_int(self.mask_block) or self.mask_block < 1:
            raise ConfigError(f"mask_block must be an integer >= 1, got {self.mask_block}")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ConfigError(f"noise_std must be >= 0, got {self.noise_std}")


# the PretrainConfig fields each corruption reads; the others are unused by it
CORRUPTION_SETTINGS: dict[str, tuple[str, ...]] = {
    "mask": ("mask_ratio", "mask_block"), "noise": ("noise_std",),
    "mask_noise": ("mask_ratio", "mask_block", "noise_std")}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; stored in every bundle."""

    task: Task = "segmentation"
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    device: DeviceName = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps
    amp: bool = True  # mixed precision; used on CUDA only
    seed: int = 0
    checkpoint_dir: str | None = None  # where best/last checkpoints go (None: none on disk, best kept in memory)
    class_names: Mapping[int, str] | None = field(default=None, hash=False)
    pretrain: PretrainConfig = PretrainConfig()  # task "pretraining" only

    def __post_init__(self) -> None:
        check_fields(self)
        if self.data.folds > 1 and self.task != "segmentation":  # no other task builds an ensemble
            raise ConfigError(f"folds {self.data.folds} (an ensemble of {self.data.folds} models) is for task "
                              f"'segmentation'; task '{self.task}' trains one model: set folds to 1")
        if not is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an integer from 0 to {2**32 - 1}, got {self.seed}")

    def check_new_run(self) -> None:
        """Refuse settings a new run would ignore without a word. Not part of ``__post_init__``:
        a bundle saved before these checks holds such a config and must still load.

        Raises
        ------
        ConfigError
            Label smoothing with a loss that has no cross-entropy (dice, focal); class
            weights for instances (its classes are the network's own); the plateau schedule with
            an early-stopping patience of 1; see ``fields.check_stop_metric``.
        """
        o = self.optim
        check_stop_metric(self.task, o.early_stopping_metric)
        if o.label_smoothing > 0 and o.loss in ("dice", "focal"):
            losses = "ce" if self.task == "classification" else "ce or dice_ce"
            raise ConfigError(f"label_smoothing is for the cross-entropy losses; the {o.loss} loss would ignore it: "
                              f"set it to 0, or choose {losses}")
        if o.schedule == "plateau" and o.early_stopping_patience == 1:  # review 44 (a saved one still loads)
            raise ConfigError("the plateau schedule halves the rate after half the early-stopping patience (rounded "
                              "up): with a patience of 1 the run stops on the epoch the rate would be halved: set "
                              "the patience (early stop after) to 2 or more, or choose constant, poly or cosine")
        if self.task == "instances" and o.class_weights is not None:
            raise ConfigError("class_weights are for the classes of a segmentation or a classifier; instance training "
                              "learns background, object interiors and boundaries: leave them out")

    def to_json(self) -> str:
        """The config as indented JSON text, as a bundle's ``config.json`` stores it (read by :meth:`from_json`).

        Returns
        -------
        str
        """
        return json.dumps(to_dict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Rebuild a config from :meth:`to_json` text; options left out keep their defaults.

        Parameters
        ----------
        text : str

        Returns
        -------
        TrainConfig

        Raises
        ------
        ConfigError
            An unknown option, or a value out of range or of the wrong kind.
        """
        return from_dict(cls, json.loads(text))


@dataclass(frozen=True)
class InferConfig:
    """Sliding-window inference, test-time augmentation and post-processing."""

    overlap: float = 0.5
    blend: Literal["gaussian", "constant"] = "gaussian"
    sw_batch_size: int = 4
    tta: bool = False  # average over flips (2D, square pixels: the 8 orientations; segmentation.tta)
    return_probabilities: bool = False
    return_uncertainty: bool = False
    min_size: int = 0  # remove objects smaller than this many voxels
    fill_holes: bool = False
    keep_largest: bool = False  # keep the largest connected component per class
    instances: InstanceSplit = "none"
    device: DeviceName = "auto"  # or "cuda:N"
    amp: bool = True

    def __post_init__(self) -> None:
        check_fields(self)
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.sw_batch_size < 1:
            raise ConfigError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if self.min_size < 0:
            raise ConfigError(f"min_size must be >= 0, got {self.min_size}")
