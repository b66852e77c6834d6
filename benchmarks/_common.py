"""Shared set-up for the benchmark scripts (not a benchmark itself).

Builds an untrained segmentation ``Model`` through the engine's public pieces
(``models.build_network`` + ``infer.Model``): speed and memory of prediction do
not depend on the weights, and skipping training keeps the benchmarks quick.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

import numpy as np


def make_model(*, classes: int = 3, patch: int = 64, features: int = 16, depth: int = 4,
               network: str = "unet", spatial_dims: int = 3, normalization: str = "zscore") -> Any:
    """An untrained ``Model`` with ``classes`` outputs (background included)."""
    import torch

    from napari_medml.config import DataConfig, ModelConfig, TrainConfig
    from napari_medml.segmentation.model import Model
    from napari_medml.nn.segmentation import build_network

    torch.manual_seed(0)
    patch_size = (patch,) * spatial_dims
    config = TrainConfig(
        data=DataConfig(spatial_dims=spatial_dims, patch_size=patch_size, normalization=normalization),
        model=ModelConfig(network=network, channels=features, depth=depth),
    )
    net = build_network(config.model, spatial_dims, 1, classes, patch_size=patch_size)
    stats = {"method": normalization,
             "channels": [{"mean": 0.5, "std": 0.25} if normalization == "zscore" else {}]}
    return Model(net, config, tuple(range(classes)), 1, spatial_dims, patch_size, None, stats)


def make_volume(size: int, seed: int = 0) -> np.ndarray:
    """A float32 (size, size, size) test volume (content does not matter for timing)."""
    return np.random.default_rng(seed).random((size,) * 3, dtype=np.float32)


def environment(device: Any) -> dict:
    """Where the numbers were measured."""
    import torch

    from napari_medml.engine.devices import describe_device

    return {"device": describe_device(device), "torch": torch.__version__,
            "python": sys.version.split()[0], "machine": platform.machine(),
            "threads": torch.get_num_threads()}


def sync(device: Any) -> None:
    """Wait for queued GPU work, so wall-clock times are real."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
