"""Transfer learning into a classifier: the network a start bundle's weights fit.

A classifier that starts from a bundle (``ModelConfig.init_from``) takes the bundle's
network, width, depth and normalisation, as ``train --init-from`` does for segmentation:
a classification bundle gives its own network; a segmentation or pretraining U-Net
(``unet``) gives ``unet-encoder``, which carries the U-Net encoder's tensor names, so
every encoder weight fits. The norm is taken too: the weights were learned with it (and
a batch-norm encoder would not be the network the bundle trained). The Classify widget
takes all of them; the command line keeps those given as options (``keep``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

from napari_medml.config import TrainConfig
from napari_medml.errors import InputError

__all__ = ["ENCODER_OF", "TAKEN_ADVICE", "describe_start", "describe_taken", "start_architecture"]

# a segmentation/pretraining network -> the classifier that carries its encoder's tensors
ENCODER_OF = {"unet": "unet-encoder"}

# what a refused transfer tells the user: the fronts take the bundle's network unless told otherwise
TAKEN_ADVICE = ("start with the bundle's network, width and depth: the Classify widget takes them; "
                "on the command line leave out --network, --features and --depth")

_FIELDS = ("network", "channels", "depth", "norm")


def start_architecture(config: TrainConfig, spatial_dims: int, keep: Collection[str] = (),
                       source: Any = None) -> tuple[TrainConfig, dict[str, Any]]:
    """The classifier's config with the start bundle's network, width, depth and norm.

    Parameters
    ----------
    config : TrainConfig
        ``task="classification"``; nothing changes when ``model.init_from`` is not set.
    spatial_dims : int
        The samples' spatial dimensions (2 or 3).
    keep : collection of str
        ``ModelConfig`` fields the user set (``"network"``, ``"channels"``,
        ``"depth"``) that stay as they are.
    source : str, Path or model, optional
        The start bundle folder or a model in memory (default ``model.init_from``).

    Returns
    -------
    tuple
        The config, and ``{field: value}`` of what was taken from the bundle.

    Raises
    ------
    InputError
        A bundle whose network no classifier shares (``dynunet``, ``segresnet``), one of
        other spatial dimensions than the samples, or a segmentation bundle under another
        classifier than the one that takes its encoder, kept in ``keep``.
    """
    from napari_medml.bundles.transfer import bundle_architecture
    from napari_medml.nn.classification import CLASSIFIER_NETWORKS

    source = config.model.init_from if source is None else source
    if source is None or (isinstance(source, str) and not source):
        return config, {}
    arch = bundle_architecture(source)  # {} for an unreadable bundle: loading its weights says why
    dims = arch.get("spatial_dims")
    if dims is not None and int(dims) != spatial_dims:
        raise InputError(f"start bundle {source} holds a {dims}D network but the samples are {spatial_dims}D: "
                         f"start from a {spatial_dims}D bundle, or classify {dims}D samples")
    network = arch.get("network")
    if network is not None and network not in CLASSIFIER_NETWORKS:
        if network not in ENCODER_OF:
            choices = ", ".join(f"'{k}' (the classifier '{v}' takes its encoder)" for k, v in ENCODER_OF.items())
            raise InputError(f"start bundle {source} holds a '{network}' network, which no classifier shares: "
                             f"start from a classification bundle or a segmentation or pretraining {choices}")
        arch = {**arch, "network": ENCODER_OF[network]}
        if "network" in keep and config.model.network != arch["network"]:  # its encoder fits no other classifier
            raise InputError(f"start bundle {source} holds a '{network}' network, whose weights fit only the "
                             f"classifier '{arch['network']}', not '{config.model.network}': leave out --network "
                             f"to take it (the Classify widget does), or start '{config.model.network}' from a "
                             "classification bundle")
    taken = {k: arch[k] for k in _FIELDS if k in arch and k not in keep}
    if not taken:
        return config, {}
    return replace(config, model=replace(config.model, **taken)), taken


def describe_taken(taken: dict[str, Any]) -> str:
    """``"network unet-encoder, width 4, depth 2, instance norm: the start bundle's"`` ('' when none)."""
    parts = {"network": "network {}", "channels": "width {}", "depth": "depth {}", "norm": "{} norm"}
    said = [parts[k].format(v) for k, v in taken.items() if k in parts]
    return f"{', '.join(said)}: the start bundle's" if said else ""


def describe_start(provenance: dict[str, Any], *, loaded: bool = True, started: bool = False) -> str:
    """What a classifier started from, as its run's first line and the Classify widget's result say it:
    ``"18 of 22 tensors from PATH (its input layer ...: it starts new); the output layer starts new (...);
    the first 2 encoder stages frozen, except the 2 tensors of them that start new"`` ('' for a random start).

    Parameters
    ----------
    provenance : dict
        The classifier's provenance (``initial_weights``: what ``bundles.transfer.transfer_weights``
        returned, or a text for a random start; ``frozen_stages``).
    loaded : bool
        False for a resumed run, whose weights are its checkpoint's: only the frozen stages are said.
    started : bool
        Begin with ``"started from "`` when weights were loaded (a result's line, after the run).
    """
    initial = provenance.get("initial_weights")
    initial = initial if isinstance(initial, dict) and loaded else None
    said = []
    if initial is not None:
        tensors = f"{initial['loaded']} of {initial['total']} tensors from {initial['source']}"
        if initial.get("input_unfit"):  # pretrained on images of other channels, or an object's mask added
            theirs, mine = initial["input_channels"]
            tensors += (f" (its input layer takes {mine} channel{'s' * (mine != 1)}, the bundle's {theirs}: "
                        "it starts new)")
        said.append(tensors)
        if initial.get("new_output"):  # trial 38: 3 classes into 2, without a word
            said.append("the output layer starts new (" + ("the bundle's classifier has other classes)"
                        if initial["task"] == "classification" else f"the bundle's network is for {initial['task']})"))
    frozen = provenance.get("frozen_stages") or 0
    if frozen:  # as the segmentation line says it
        text = "the first encoder stage frozen" if frozen == 1 else f"the first {frozen} encoder stages frozen"
        if initial is not None and initial.get("thawed"):
            n = initial["thawed"]
            text += (f", except the {n} tensor{'s' * (n != 1)} of {'it' if frozen == 1 else 'them'} "
                     f"that start{'s' * (n == 1)} new")
        said.append(text)
    return ("started from " if started and initial is not None else "") + "; ".join(said)
