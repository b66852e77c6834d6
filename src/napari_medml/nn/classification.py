"""Classification networks (2D and 3D), a registry name -> factory, and their stages.

A factory has the signature of ``napari_medml.nn.segmentation`` factories,
``factory(spatial_dims, in_channels, out_channels, config, patch_size=None,
spacing=None)``, and returns a network mapping ``(B, in_channels, *spatial)`` to
``(B, out_channels)`` logits. All come from MONAI, always with ``pretrained=False``
(no downloads; transfer learning starts from our own bundles instead).
:func:`stages` lists each architecture's stages from input to output, so that the
first k can be frozen for fine-tuning; the classification head is never a stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from napari_medml.config import ModelConfig
from napari_medml.errors import ConfigError

__all__ = ["CLASSIFIER_NETWORKS", "SmallCNN", "UNetEncoder", "build_classifier_network", "freeze_stages", "stages"]

Factory = Callable[..., nn.Module]


def _resnet(depth: int) -> Factory:
    def factory(spatial_dims: int, in_channels: int, out_channels: int, config: ModelConfig,
                patch_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None) -> nn.Module:
        from monai.networks.nets import resnet18, resnet34, resnet50

        build = {18: resnet18, 34: resnet34, 50: resnet50}[depth]
        net = build(pretrained=False, spatial_dims=spatial_dims, n_input_channels=in_channels,
                    num_classes=out_channels, norm=_affine(config.norm))
        # MONAI's ResNet has no dropout; a Dropout before the last layer gives it one
        # (always present, so weight names do not depend on the dropout rate).
        net.fc = nn.Sequential(nn.Dropout(config.dropout), net.fc)
        return net

    factory.__name__ = f"_resnet{depth}"
    return factory


DOWNSAMPLED_32 = frozenset({"densenet121", "efficientnet-b0"})  # a 32x smaller map at the last stage


def _affine(norm: str) -> str | tuple:
    """MONAI's norm argument with a learned scale and shift (its instance norm has none by default)."""
    return ("instance", {"affine": True}) if norm == "instance" else norm


def _densenet121(spatial_dims: int, in_channels: int, out_channels: int, config: ModelConfig,
                 patch_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None) -> nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                       dropout_prob=config.dropout, pretrained=False, norm=config.norm)


def _efficientnet_b0(spatial_dims: int, in_channels: int, out_channels: int, config: ModelConfig,
                     patch_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None) -> nn.Module:
    from monai.networks.nets import EfficientNetBN

    # batch norm: EfficientNet's own settings (eps 1e-3, momentum 0.01); instance norm as asked
    norm = {} if config.norm == "batch" else {"norm": _affine(config.norm)}
    net = EfficientNetBN("efficientnet-b0", pretrained=False, progress=False, spatial_dims=spatial_dims,
                         in_channels=in_channels, num_classes=out_channels, **norm)
    net._dropout.p = config.dropout  # also 0: the user's rate, not EfficientNet's own 0.2
    return net


class SmallCNN(nn.Module):
    """A small convolutional classifier for tiny data sets (tens to hundreds of samples).

    ``depth`` stages of two MONAI convolution blocks each, the first of every stage
    after the stem halving the grid and the width doubling from ``features``; then
    global average pooling, dropout and a linear layer. The network accepts any input
    size (no flattening), which MONAI's ``Classifier`` (fixed ``in_shape``) does not.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, features: int = 16,
                 depth: int = 4, norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        from monai.networks.blocks import Convolution

        blocks = []
        channels = in_channels
        for level in range(depth):
            width = features * 2**level
            stride = 1 if level == 0 else 2
            blocks.append(nn.Sequential(
                Convolution(spatial_dims, channels, width, strides=stride, kernel_size=3, norm=norm, act="relu"),
                Convolution(spatial_dims, width, width, kernel_size=3, norm=norm, act="relu"),
            ))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        self.pool = pool(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(x)))


def _smallcnn(spatial_dims: int, in_channels: int, out_channels: int, config: ModelConfig,
              patch_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None) -> nn.Module:
    return SmallCNN(spatial_dims, in_channels, out_channels, features=config.channels, depth=config.depth,
                    norm=config.norm, dropout=config.dropout)


class UNetEncoder(nn.Module):
    """The encoder of the registry's segmentation ``unet`` (MONAI ``UNet``, same width,
    depth and norm) with global pooling, dropout and a linear head.

    Its tensors keep the U-Net's names (``model.0...``, ``model.1.submodule.0...``), so a
    pretraining or segmentation bundle of the same width and depth starts it (transfer
    learning by name and shape); the decoder is dropped (each level's up-path becomes an
    identity and never runs).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, config: ModelConfig) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        if config.depth < 2:
            raise ConfigError(f"network 'unet-encoder' needs depth >= 2, got {config.depth}")
        widths = tuple(config.channels * 2**i for i in range(config.depth))
        unet = UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=in_channels,
                    channels=widths, strides=(2,) * (config.depth - 1), num_res_units=1, norm=config.norm)
        self.model = unet.model
        self.levels: list[nn.Module] = []  # the down blocks, then the bottom
        node = self.model
        while isinstance(node, nn.Sequential) and len(node) == 3:
            node[2] = nn.Identity()  # the up-path: not used by a classifier
            self.levels.append(node[0])
            node = node[1].submodule
        self.levels.append(node)
        pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        self.pool = pool(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(widths[-1], out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for level in self.levels:
            x = level(x)
        return self.head(self.pool(x))


def _unet_encoder(spatial_dims: int, in_channels: int, out_channels: int, config: ModelConfig,
                  patch_size: Sequence[int] | None = None, spacing: Sequence[float] | None = None) -> nn.Module:
    return UNetEncoder(spatial_dims, in_channels, out_channels, config)


CLASSIFIER_NETWORKS: dict[str, Factory] = {
    "smallcnn": _smallcnn,
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "resnet50": _resnet(50),
    "densenet121": _densenet121,
    "efficientnet-b0": _efficientnet_b0,
    "unet-encoder": _unet_encoder,
}


def build_classifier_network(config: ModelConfig, spatial_dims: int, in_channels: int, num_classes: int, *,
                             input_size: Sequence[int] | None = None) -> nn.Module:
    """Build the classification network named by ``config.network``.

    Parameters
    ----------
    config : ModelConfig
        Network name, width and depth (``smallcnn``), norm, dropout.
    spatial_dims : int
        2 or 3.
    in_channels : int
        Input channels (image channels, plus the object mask in object mode).
    num_classes : int
        Number of classes (outputs).
    input_size : sequence of int, optional
        The input shape (passed as ``patch_size`` to the factory).

    Returns
    -------
    torch.nn.Module
        ``(B, in_channels, *spatial)`` -> ``(B, num_classes)`` logits.
    """
    factory = CLASSIFIER_NETWORKS.get(config.network)
    if factory is None:
        raise ConfigError(
            f"unknown classification network {config.network!r}: choose one of {sorted(CLASSIFIER_NETWORKS)}"
            + (" (TrainConfig's defaults are a segmentation's: napari_medml.classification.model."
               "classification_config(spatial_dims) gives a classifier's)" if config.network in ("unet", "dynunet")
               else "")  # trial 47
        )
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    if config.norm == "instance" and config.network.startswith("resnet"):
        raise ConfigError(f"{config.network} has batch norm in its blocks (MONAI's ResNet takes a norm for its first "
                          "layer only): use norm 'batch', or densenet121, efficientnet-b0, smallcnn or unet-encoder "
                          "for instance norm")
    smallest = min(input_size) if input_size else None
    if config.norm == "instance" and config.network in DOWNSAMPLED_32 and smallest is not None and smallest < 64:
        raise ConfigError(f"{config.network} halves its input 5 times, leaving 1 voxel per axis of a {smallest}-voxel "
                          "input, and instance norm needs more than one: use an input size of at least 64, or norm "
                          "'batch'")
    network = factory(spatial_dims, in_channels, num_classes, config, patch_size=input_size)
    if smallest is not None and smallest < 64:  # trial 50: torch's "Kernel size can't be greater than actual input"
        _check_takes(network, config.network, in_channels, tuple(int(n) for n in input_size))
    return network


def _check_takes(network: nn.Module, name: str, in_channels: int, size: tuple[int, ...]) -> None:
    """Run a zero input of ``size`` through ``network`` (eval mode, no gradients): a network
    whose kernels or pooling outgrow a small input fails here with one line, not in training."""
    import torch

    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            network(torch.zeros((1, in_channels, *size)))
    except ValueError:  # a norm over one value per channel: the run's own check names its layer and fixes
        return
    except RuntimeError:
        raise ConfigError(f"{name} cannot take inputs of {'x'.join(map(str, size))} voxels (its layers shrink them "
                          "below one voxel): use a larger input size (32 or more per axis) or tile size, or the "
                          "network resnet18, smallcnn or unet-encoder") from None
    finally:
        network.train(was_training)


def stages(network: nn.Module) -> list[nn.Module]:
    """The network's stages from input towards output, head excluded (for freezing).

    Raises
    ------
    ConfigError
        For a network whose stages are not known.
    """
    from monai.networks.nets import DenseNet, EfficientNet, ResNet

    if isinstance(network, SmallCNN):
        return list(network.blocks)
    if isinstance(network, UNetEncoder):
        return list(network.levels)
    if isinstance(network, ResNet):
        stem = nn.ModuleList([network.conv1, network.bn1])
        return [stem, network.layer1, network.layer2, network.layer3, network.layer4]
    if isinstance(network, DenseNet):
        f = network.features
        out = [nn.ModuleList([f.conv0, f.norm0])]
        for i in range(1, 5):
            parts = [getattr(f, f"denseblock{i}")]
            parts.append(getattr(f, f"transition{i}") if i < 4 else f.norm5)
            out.append(nn.ModuleList(parts))
        return out
    if isinstance(network, EfficientNet):
        stem = nn.ModuleList([network._conv_stem, network._bn0])
        tail = nn.ModuleList([network._conv_head, network._bn1])
        return [stem, *list(network._blocks), tail]
    raise ConfigError(f"stages of {type(network).__name__} are not known: freeze_stages must be 0")


def freeze_stages(network: nn.Module, k: int) -> list[nn.Module]:
    """Stop gradients in the first ``k`` stages; returns the frozen modules.

    The caller keeps them in eval mode while training (see ``classify.fit_classifier``)
    so that their normalisation statistics stay fixed too.
    """
    if k <= 0:
        return []
    parts = stages(network)
    if k > len(parts):
        raise ConfigError(
            f"freeze_stages (the widget's frozen stages) is {k} but {type(network).__name__} has {len(parts)} stages: "
            f"choose 0-{len(parts)}"
        )
    for module in parts[:k]:
        for p in module.parameters():
            p.requires_grad_(False)
    return parts[:k]
