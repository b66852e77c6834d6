"""One registry of networks: name -> factory.

A factory is called as ``factory(spatial_dims, in_channels, out_channels, config,
patch_size=..., spacing=...)`` and returns a ``torch.nn.Module`` that maps
``(B, in_channels, *spatial)`` to ``(B, out_channels, *spatial)`` logits.  Every
network comes from MONAI; the factories only translate ``ModelConfig`` (width,
depth, norm, dropout) into each network's own arguments.  ``NETWORKS`` is a plain
dict: other tasks (classification) add their entries next to these.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Sequence
from typing import Any

import torch

from napari_medml.nn.classification import CLASSIFIER_NETWORKS
from napari_medml.config import ModelConfig
from napari_medml.errors import ConfigError
from napari_medml.nn.strides import dynunet_kernels_strides, patch_divisor, patch_divisors

__all__ = ["NETWORKS", "NETWORK_TASK", "SEGMENTATION_NETWORKS", "build_network", "dynunet_kernels_strides",
           "freeze_encoder_stages", "keep_frozen_statistics", "output_tensors", "patch_divisor", "patch_divisors"]

Factory = Callable[..., torch.nn.Module]


def _unet(spatial_dims: int, in_channels: int, out_channels: int, config: ModelConfig,
          patch_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None) -> torch.nn.Module:
    from monai.networks.nets import UNet

    if config.depth < 2:
        raise ConfigError(f"network 'unet' needs depth >= 2, got {config.depth}")
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(config.channels * 2**i for i in range(config.depth)),
        strides=(2,) * (config.depth - 1),
        num_res_units=1,
        norm=config.norm,
        dropout=config.dropout,
    )


def _dynunet(spatial_dims: int, in_channels: int, out_channels: int, config: ModelConfig,
             patch_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None) -> torch.nn.Module:
    from monai.networks.nets import DynUNet

    if patch_size is None:
        raise ConfigError("network 'dynunet' needs the patch size to choose its kernels and strides")
    kernels, strides = dynunet_kernels_strides(patch_size, spacing, config.depth)
    if len(strides) < 3:
        raise ConfigError(f"network 'dynunet' needs at least 3 levels: use depth >= 3 and a patch of at least "
                          f"16 voxels per axis (got depth {config.depth}, patch {tuple(patch_size)})")
    filters = [min(config.channels * 2**i, 320) for i in range(len(strides))]
    return DynUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        norm_name=config.norm,
        dropout=config.dropout or None,
        res_block=True,
    )


def _segresnet(spatial_dims: int, in_channels: int, out_channels: int, config: ModelConfig,
               patch_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None) -> torch.nn.Module:
    from monai.networks.nets import SegResNet

    blocks = (1, 2, 2, 4, 4, 4)
    if config.depth > len(blocks):
        raise ConfigError(f"network 'segresnet' supports depth <= {len(blocks)}, got {config.depth}")
    return SegResNet(
        spatial_dims=spatial_dims,
        init_filters=config.channels,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob=config.dropout or None,
        norm=config.norm,
        blocks_down=blocks[: config.depth],
        blocks_up=(1,) * (config.depth - 1),
    )


SEGMENTATION_NETWORKS: dict[str, Factory] = {
    "unet": _unet,
    "dynunet": _dynunet,
    "segresnet": _segresnet,
}

# The one registry of every network, by task; classification networks are defined in
# classify_models.py next to their stage maps for freezing.
NETWORKS: dict[str, Factory] = {**SEGMENTATION_NETWORKS, **CLASSIFIER_NETWORKS}
NETWORK_TASK: dict[str, str] = {
    **{name: "segmentation" for name in SEGMENTATION_NETWORKS},
    **{name: "classification" for name in CLASSIFIER_NETWORKS},
}


def build_network(config: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int, *,
                  patch_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None,
                  norm_choice: bool = True) -> torch.nn.Module:
    """Build the network named by ``config.network`` from ``NETWORKS``.

    Parameters
    ----------
    config : ModelConfig
        Network name, width, depth, norm, dropout.
    spatial_dims : int
        2 or 3.
    in_channels, out_channels : int
        Image channels and classes (background included).
    patch_size, spacing : sequence, optional
        Used by networks that adapt to the grid (``dynunet``).
    norm_choice : bool
        Whether the caller offers a choice of norm (``--norm``): the fix a patch too small for
        instance norm is told (pretraining offers none).

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ConfigError
        An unknown network, or a patch that leaves one voxel at the deepest level under instance norm.
    """
    factory = SEGMENTATION_NETWORKS.get(config.network)
    if factory is None:
        hint = " (a classification network)" if NETWORK_TASK.get(config.network) == "classification" else ""
        raise ConfigError(f"unknown segmentation network {config.network!r}{hint}: "
                          f"choose one of {sorted(SEGMENTATION_NETWORKS)}")
    _check_deepest_level(config, patch_size, norm_choice)
    return factory(spatial_dims, in_channels, out_channels, config, patch_size=patch_size, spacing=spacing)


def _check_deepest_level(config: ModelConfig, patch_size: Sequence[int] | None, norm_choice: bool = True) -> None:
    """Instance norm needs more than one voxel at the deepest level; torch's own message
    ("Expected more than 1 spatial element when training") named no input and no fix."""
    if config.norm != "instance" or not patch_size:
        return
    halvings = patch_divisor(config)
    if math.prod(max(int(p) // halvings, 1) for p in patch_size) > 1:
        return
    patch = "x".join(str(int(p)) for p in patch_size)
    times = "once" if config.depth == 2 else f"{config.depth - 1} times"
    fixes = ["batch norm (--norm batch; the widget's norm layers)"] if norm_choice else []
    if config.depth > 2:
        fixes.append("a smaller depth (--depth 2; the widget's depth)")
    fixes.append("a larger image")
    fix = ", ".join(fixes[:-1]) + f" or {fixes[-1]}" if len(fixes) > 1 else fixes[0]
    raise ConfigError(f"a patch of {patch} voxels leaves 1 voxel at the deepest level of a depth-{config.depth} "
                      f"network (each axis halved {times}), where instance norm has nothing to normalise: use {fix}")


def output_tensors(network: torch.nn.Module, config: ModelConfig, spatial_dims: int, in_channels: int,
                   out_channels: int, *, patch_size: Sequence[int] | None = None,
                   spacing: Sequence[float] | None = None) -> set[str]:
    """Names of ``network``'s tensors whose shape follows its number of outputs (its output layer).

    ``network`` is :func:`build_network` of the same arguments. The names are found by
    building it again with one more output, under a forked random state (the caller's
    draws are unchanged): the registry's networks name their output layers differently,
    and this needs no list of them.

    Returns
    -------
    set of str
        ``state_dict`` keys (the output convolution's weight and bias, and any
        deep-supervision heads).
    """
    with torch.random.fork_rng(devices=[]):
        probe = build_network(config, spatial_dims, in_channels, out_channels + 1,
                              patch_size=patch_size, spacing=spacing).state_dict()
    return {k for k, v in network.state_dict().items() if k in probe and probe[k].shape != v.shape}


def keep_frozen_statistics(network: torch.nn.Module, start: Any = None) -> None:
    """Put the batch-norm layers whose scales are frozen in eval mode, after ``network.train()``:
    a frozen stage keeps the statistics it was given, as it keeps its weights.

    ``start`` is the run's transfer (``bundles.transfer.transfer_weights``' provenance, or a
    resumed model's): when tensors of the frozen stages start new (an input layer of other
    channels), what every later norm sees changes, and they all follow the batch instead."""
    if isinstance(start, dict) and start.get("thawed"):
        return
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.weight is not None \
                and not module.weight.requires_grad:
            module.eval()


def freeze_encoder_stages(network: torch.nn.Module, stages: int) -> int:
    """Freeze the first ``stages`` encoder levels (transfer learning); returns how many were frozen.

    Knows the three registry networks' layouts.

    Raises
    ------
    ConfigError
        ``stages`` is more than the network's encoder has (or the network's stages are
        not known): freezing fewer than asked would go unnoticed.
    """
    if stages <= 0:
        return 0
    from monai.networks.nets import DynUNet, SegResNet, UNet

    blocks: list[torch.nn.Module] = []
    if isinstance(network, UNet):
        node = network.model
        while len(blocks) < stages and isinstance(node, torch.nn.Sequential) and len(node) == 3:
            blocks.append(node[0])
            node = getattr(node[1], "submodule", None)
    elif isinstance(network, DynUNet):
        blocks = [network.input_block, *network.downsamples][:stages]
    elif isinstance(network, SegResNet):
        blocks = [torch.nn.ModuleList([network.convInit, network.down_layers[0]]), *network.down_layers[1:]][:stages]
    if len(blocks) < stages:
        available = len(blocks)
        raise ConfigError(f"freeze_stages (the widget's frozen stages) is {stages} but this {type(network).__name__} "
                          f"has {available} encoder stages that can be frozen: choose 0-{available}")
    for block in blocks:
        block.requires_grad_(False)
    return len(blocks)
