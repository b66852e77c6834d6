"""Fixtures every test folder may use."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test: the networks in tests are tiny, so one thread
    is faster, and it keeps a test steady on a machine that runs other jobs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def constant_model():
    """``make(dims, class_ids, winner)``: an untrained segmentation Model (patch 16 per axis, voxel
    size 1) whose every voxel is class ``class_ids[winner]``: all weights 0, the output layer's bias set."""
    def make(dims: int, class_ids: tuple[int, ...], winner: int = 0):
        import torch

        from napari_medml.config import DataConfig, ModelConfig, TrainConfig
        from napari_medml.nn.segmentation import build_network
        from napari_medml.segmentation.model import Model

        cfg = TrainConfig(data=DataConfig(spatial_dims=dims), model=ModelConfig(channels=4, depth=2))
        net = build_network(cfg.model, dims, 1, len(class_ids), patch_size=(16,) * dims, spacing=(1.0,) * dims)
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
            [p for n, p in net.named_parameters() if n.endswith("bias")][-1][winner] = 10.0
        return Model(net, cfg, class_ids, 1, dims, (16,) * dims, (1.0,) * dims,
                     {"method": "zscore", "channels": [{"mean": 0.0, "std": 1.0}]})

    return make
