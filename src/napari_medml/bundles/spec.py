"""One model description per bundle: a frozen spec that is both a model's constructor
input and the source of its ``config.json``, and the model base class around it.

A task subclasses :class:`ModelSpec` (or :class:`PatchSpec` for a network that maps a
patch to a patch of the same grid) with its own fields, and :class:`BundledModel` with
its prediction. Loading is the same for every task (:func:`load_bundle`): read
``config.json``, ``Spec.from_description``, ``spec.build_network()``, load the weights.

What training leaves behind (history, provenance, metrics) is not part of the spec: the
model holds it and adds it to the description (:meth:`BundledModel.record`).
"""

from __future__ import annotations

import math

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from napari_medml.bundles.format import (
    CONFIG_NAME,
    SCHEMA_VERSION,
    WEIGHTS_NAME,
    library_versions,
    load_weights,
    read_description,
    read_weights,
    write_bundle_files,
)
from napari_medml.config import TrainConfig, from_dict, to_dict
from napari_medml.errors import BundleError, ConfigError

__all__ = ["BundledModel", "ModelSpec", "PatchSpec", "SpecField", "load_bundle"]

S = TypeVar("S", bound="ModelSpec")
M = TypeVar("M", bound="BundledModel")


@dataclass(frozen=True, kw_only=True)
class ModelSpec(ABC):
    """What any task's bundle says about its network and its inputs.

    Attributes
    ----------
    config : TrainConfig
        The configuration it was trained with (network, preprocessing recipe, seed).
    in_channels : int
        Channels of the network's input ``(C, *spatial)``.
    spatial_dims : int
        2 (``Y, X``) or 3 (``Z, Y, X``).
    normalization : dict
        Learned intensity statistics (``preprocessing.normalization.fit_normalization``).
    """

    task: ClassVar[str]  # the bundle's "task"
    what: ClassVar[str]  # the model in words, for messages ("a segmentation model")
    may_be_none: ClassVar[tuple[str, ...]] = ()

    config: TrainConfig
    in_channels: int
    spatial_dims: int
    normalization: dict

    def __post_init__(self) -> None:
        missing = [f.name for f in fields(self) if getattr(self, f.name) is None and f.name not in self.may_be_none]
        if missing:
            raise TypeError(f"{type(self).__name__} needs {', '.join(missing)}")
        self._set(in_channels=int(self.in_channels), spatial_dims=int(self.spatial_dims))

    def _set(self, **values: Any) -> None:
        """Normalise fields in ``__post_init__`` (the dataclass is frozen)."""
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    @abstractmethod
    def out_channels(self) -> int:
        """Channels of the network's output."""

    @abstractmethod
    def build_network(self) -> torch.nn.Module:
        """A new network of this description (weights initialised, not loaded)."""

    def description_fields(self) -> dict[str, Any]:
        """The task's own ``config.json`` keys, between the network and the training config."""
        return {"normalization": self.normalization}

    def to_description(self) -> dict[str, Any]:
        """The spec as ``config.json`` content (schema version :data:`SCHEMA_VERSION`).

        Returns
        -------
        dict
            ``schema_version``, ``task``, ``network`` (name, arguments, dimensions and
            channels), ``spatial_dims``, ``in_channels``, ``out_channels``, the task's
            keys (:meth:`description_fields`), ``seed`` and ``train_config``.
        """
        cfg = self.config
        return {
            "schema_version": SCHEMA_VERSION,
            "task": self.task,
            "network": {"name": cfg.model.network, "arguments": to_dict(cfg.model),
                        "spatial_dims": self.spatial_dims, "in_channels": self.in_channels,
                        "out_channels": self.out_channels},
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            **self.description_fields(),
            "seed": cfg.seed,
            "train_config": to_dict(cfg),
        }

    def check_values(self) -> None:
        """Refuse values a bundle's ``config.json`` may hold (edited by hand) that would give
        wrong predictions without an error (subclasses check theirs too).

        Raises
        ------
        ValueError
            Normalization statistics that are not what training writes.
        """
        from napari_medml.preprocessing.normalization import check_normalization

        check_normalization(self.normalization)

    @classmethod
    def arguments(cls, desc: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments read from a ``config.json`` (subclasses add theirs)."""
        return {"config": from_dict(TrainConfig, desc["train_config"]), "in_channels": desc["in_channels"],
                "spatial_dims": desc["spatial_dims"], "normalization": desc["normalization"]}

    @classmethod
    def from_description(cls: type[S], desc: Mapping[str, Any], path: str | Path) -> S:
        """The spec a ``config.json`` describes.

        Parameters
        ----------
        desc : mapping
            The parsed ``config.json`` (``bundles.format.read_description``).
        path : str or Path
            The bundle folder, for messages.

        Raises
        ------
        BundleError
            Missing keys, or values of the wrong kind.
        """
        try:
            spec = cls(**cls.arguments(desc))
            spec.check_values()
            return spec
        except (ConfigError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BundleError(f"{Path(path) / CONFIG_NAME} does not describe {cls.what} this version can build "
                              f"({exc}): the bundle is damaged or from a newer version") from exc


@dataclass(frozen=True, kw_only=True)
class PatchSpec(ModelSpec):
    """A spec for a network of the segmentation registry (``nn.segmentation``): a patch
    ``(C, *patch_size)`` in, a patch ``(out_channels, *patch_size)`` out.

    Attributes
    ----------
    patch_size : tuple of int
        The training patch, the sliding window at prediction (spatial axes).
    spacing : tuple of float or None
        Training voxel size of the spatial axes (None: not known).
    """

    may_be_none: ClassVar[tuple[str, ...]] = ("spacing",)

    patch_size: tuple[int, ...]
    spacing: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set(patch_size=tuple(int(p) for p in self.patch_size),
                  spacing=None if self.spacing is None else tuple(float(s) for s in self.spacing))

    def check_values(self) -> None:
        from napari_medml.preprocessing.normalization import check_normalization

        check_normalization(self.normalization, self.in_channels)
        if len(self.patch_size) != self.spatial_dims or min(self.patch_size) < 1:
            raise ValueError(f"patch_size {list(self.patch_size)} is not {self.spatial_dims} sizes of at least 1")
        if self.spacing is not None and (len(self.spacing) != self.spatial_dims
                                         or not all(math.isfinite(s) and s > 0 for s in self.spacing)):
            raise ValueError(f"spacing {list(self.spacing)} is not {self.spatial_dims} sizes above 0")

    def build_network(self) -> torch.nn.Module:
        from napari_medml.nn.segmentation import build_network

        return build_network(self.config.model, self.spatial_dims, self.in_channels, self.out_channels,
                             patch_size=self.patch_size, spacing=self.spacing)

    def description_fields(self) -> dict[str, Any]:
        return {"preprocessing": to_dict(self.config.data.preprocessing), "normalization": self.normalization,
                "patch_size": list(self.patch_size),
                "spacing": None if self.spacing is None else list(self.spacing)}

    @classmethod
    def arguments(cls, desc: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().arguments(desc), "patch_size": desc["patch_size"], "spacing": desc.get("spacing")}


class SpecField:
    """A model attribute that is a field of its spec: read from ``model.spec``; setting
    it replaces the spec by a copy with the new value (the spec itself stays frozen)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, model: Any, owner: type | None = None) -> Any:
        return self if model is None else getattr(model.spec, self.name)

    def __set__(self, model: Any, value: Any) -> None:
        model.spec = replace(model.spec, **{self.name: value})


class BundledModel:
    """A trained network, its spec, and what its training left (history, provenance).

    Parameters
    ----------
    network : torch.nn.Module
        Built from ``spec`` (``spec.build_network()``), weights trained or loaded.
    spec : ModelSpec
        Of the subclass's ``spec_type``.
    history : list of dict, optional
        One dict per epoch.
    provenance : dict, optional
        Free-form notes (split, initial weights, best epoch), stored in bundles.
    """

    spec_type: ClassVar[type[ModelSpec]]

    config = SpecField()
    in_channels = SpecField()
    spatial_dims = SpecField()
    normalization = SpecField()

    def __init__(self, network: torch.nn.Module, spec: ModelSpec, *, history: Sequence[dict] | None = None,
                 provenance: Mapping[str, Any] | None = None) -> None:
        if not isinstance(spec, self.spec_type):
            raise TypeError(f"{type(self).__name__} takes a {self.spec_type.__name__}, not {type(spec).__name__}")
        self.network = network
        self.spec = spec
        self.history = list(history or [])
        self.provenance = dict(provenance or {})

    @classmethod
    def spec_from_arguments(cls, spec: Any, **arguments: Any) -> ModelSpec:
        """``spec`` itself, or (the older form) a spec made of a ``TrainConfig`` and the
        separate ``arguments``.

        Parameters
        ----------
        spec : ModelSpec or TrainConfig
            The model's spec (``cls.spec_type``), or the config of the older form.
        **arguments
            The older form's other spec fields (e.g. ``in_channels``, ``class_ids``).

        Returns
        -------
        ModelSpec

        Raises
        ------
        TypeError
            Both a spec and arguments that are not None.
        """
        if isinstance(spec, cls.spec_type):
            given = sorted(k for k, v in arguments.items() if v is not None)
            if given:
                raise TypeError(f"{cls.__name__}: give a {cls.spec_type.__name__} or the separate arguments, "
                                f"not both ({', '.join(given)})")
            return spec
        return cls.spec_type(config=spec, **arguments)

    def record(self) -> dict[str, Any]:
        """What training left, as ``config.json`` keys: history, library versions, provenance."""
        return {"history": self.history, "versions": library_versions(), "provenance": self.provenance}

    @classmethod
    def record_arguments(cls, desc: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor keywords read back from what :meth:`record` wrote (bundle loading).

        Parameters
        ----------
        desc : mapping
            A bundle's ``config.json`` content.

        Returns
        -------
        dict
            ``history`` and ``provenance`` (subclasses add their own).
        """
        return {"history": desc.get("history") or [], "provenance": desc.get("provenance") or {}}

    @classmethod
    def load(cls: type[M], path: str | Path) -> M:
        """The model of the bundle folder at ``path`` (:func:`load_bundle`; never unpickles).

        Parameters
        ----------
        path : str or Path
            A bundle folder (``config.json`` + ``weights.safetensors``) of this class's task.

        Returns
        -------
        The model, with the history and provenance its training left.

        Raises
        ------
        BundleError
            See :func:`load_bundle`.
        """
        spec, network, desc = load_bundle(path, cls.spec_type)
        return cls(network, spec, **cls.record_arguments(desc))

    def description(self) -> dict[str, Any]:
        """The bundle's ``config.json`` content: the spec's description and :meth:`record`."""
        return {**self.spec.to_description(), **self.record()}

    def save(self, path: str | Path) -> Path:
        """Write a bundle folder (``config.json`` + ``weights.safetensors``), atomically.

        The files are written into a hidden folder beside ``path`` that then takes its
        name, so a failed save leaves no half-written bundle.

        Parameters
        ----------
        path : str or Path
            The bundle folder to write.

        Returns
        -------
        Path
            The bundle folder.
        """
        return write_bundle_files(self.description(), self.network, path)


def load_bundle(path: str | Path, spec_type: type[S]) -> tuple[S, torch.nn.Module, dict]:
    """Read a bundle of ``spec_type``'s task (never unpickles).

    Parameters
    ----------
    path : str or Path
        The bundle folder.
    spec_type : type of ModelSpec

    Returns
    -------
    spec : ModelSpec
    network : torch.nn.Module
        Built from ``spec``, the bundle's weights loaded.
    description : dict
        The whole ``config.json`` (history, provenance and the task's other keys).

    Raises
    ------
    BundleError
        A missing folder or file, invalid JSON, missing keys, another task's bundle, or
        weights that do not fit the network described.
    """
    path = Path(path).expanduser()
    desc = read_description(path)
    task = desc.get("task", "segmentation")  # the first bundles had no task: segmentation
    if task != spec_type.task:
        raise BundleError(f"{path} is a {task!r} bundle, not {spec_type.what}: load it with "
                          "napari_medml.load_model")
    spec = spec_type.from_description(desc, path)
    try:
        network = spec.build_network()
    except (ConfigError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BundleError(f"{path / CONFIG_NAME} does not describe a network this version can build ({exc})") from exc
    load_weights(network, read_weights(path), str(path / WEIGHTS_NAME))
    return spec, network, desc
