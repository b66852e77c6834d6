"""Network registry, dynunet geometry and devices."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_medml.config import ModelConfig  # noqa: E402
from napari_medml.engine.devices import amp_enabled, describe_device, resolve_device  # noqa: E402
from napari_medml.errors import ConfigError  # noqa: E402
from napari_medml.nn.segmentation import SEGMENTATION_NETWORKS, build_network, dynunet_kernels_strides, patch_divisor  # noqa: E402


@pytest.mark.parametrize("name", sorted(SEGMENTATION_NETWORKS))
@pytest.mark.parametrize("dims,patch,spacing", [(2, (32, 32), None), (3, (8, 32, 32), (3.0, 1.0, 1.0))])
def test_every_network_maps_patch_to_logits(name, dims, patch, spacing):
    cfg = ModelConfig(network=name, channels=4, depth=3, norm="batch", dropout=0.1)
    net = build_network(cfg, dims, 2, 5, patch_size=patch, spacing=spacing)
    out = net.eval()(torch.zeros(1, 2, *patch))
    assert out.shape == (1, 5, *patch)


def test_unet_width_and_depth():
    net = build_network(ModelConfig(channels=8, depth=3), 3, 1, 2)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert max(c.out_channels for c in convs) == 32  # 8 * 2 ** (3 - 1)
    assert patch_divisor(ModelConfig(depth=4)) == 8


def test_dynunet_pools_the_coarse_axis_later():
    kernels, strides = dynunet_kernels_strides((16, 128, 128), (4.0, 1.0, 1.0), depth=5)
    assert strides[0] == [1, 1, 1]
    assert strides[1] == [1, 2, 2] and kernels[0] == [1, 3, 3]
    assert [2, 2, 2] in strides
    iso_k, iso_s = dynunet_kernels_strides((64, 64, 64), (1.0, 1.0, 1.0), depth=4)
    assert iso_s[1:] == [[2, 2, 2]] * 3


def test_unknown_network_and_bad_depth():
    with pytest.raises(ConfigError, match="network 'nope' is not one of"):
        build_network(ModelConfig(network="nope"), 2, 1, 2)
    with pytest.raises(ConfigError, match="a classification network"):
        build_network(ModelConfig(network="resnet18"), 2, 1, 2)
    with pytest.raises(ConfigError, match="depth >= 2"):
        build_network(ModelConfig(depth=1), 2, 1, 2)


def test_devices_resolve_to_cpu_here():
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")
    assert resolve_device("cpu") == torch.device("cpu")
    assert describe_device("cpu").startswith("CPU (")
    assert not amp_enabled(torch.device("cpu"), True)
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")


def test_thread_count_next_to_a_gui(monkeypatch):
    from napari_medml.engine import devices

    for cores, expected in ((2, None), (3, None), (4, 3), (16, 15)):
        monkeypatch.setattr(devices.os, "cpu_count", lambda cores=cores: cores)
        assert devices.gui_thread_count("cpu") == expected
    assert devices.gui_thread_count("cuda") is None
    before = torch.get_num_threads()
    with devices.intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with devices.intra_op_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("name", sorted(SEGMENTATION_NETWORKS))
def test_freeze_encoder_stages(name):
    from napari_medml.nn.segmentation import freeze_encoder_stages

    net = build_network(ModelConfig(network=name, channels=4, depth=3), 2, 1, 2, patch_size=(32, 32))
    total = sum(p.numel() for p in net.parameters())
    assert freeze_encoder_stages(net, 2) == 2
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert 0 < trainable < total


def test_registries_are_the_config_names():
    """Forms list the networks from config's Literal types (no torch import): they must be the registries."""
    from typing import get_args

    from napari_medml.config import ClassifierNetwork, SegmentationNetwork
    from napari_medml.nn.classification import CLASSIFIER_NETWORKS
    from napari_medml.nn.segmentation import SEGMENTATION_NETWORKS

    assert list(SEGMENTATION_NETWORKS) == list(get_args(SegmentationNetwork))
    assert list(CLASSIFIER_NETWORKS) == list(get_args(ClassifierNetwork))
