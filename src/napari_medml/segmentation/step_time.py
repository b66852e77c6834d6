"""How long one training step of a planned configuration takes on the device (the plan's clock)."""

from __future__ import annotations

from typing import Any

from napari_medml.config import TrainConfig

__all__ = ["measure_step"]


def measure_step(config: TrainConfig, in_channels: int, classes: int, spacing: Any, device: Any) -> float:
    """Seconds of one training step (forward, loss, backward, update) on random data.

    Parameters
    ----------
    config : TrainConfig
        The trial's patch size, batch size, network and loss.
    in_channels, classes : int
        Input channels and output classes of the network.
    spacing : sequence of float
        Voxel size per spatial axis (for spacing-aware networks).
    device : torch.device

    Returns
    -------
    float
        The fastest of three timed steps after a warm-up step, in seconds.
    """
    import time

    import torch

    from napari_medml.engine.devices import autocast, amp_enabled
    from napari_medml.nn.losses import build_loss
    from napari_medml.nn.segmentation import build_network

    patch = tuple(config.data.patch_size)
    gen = torch.Generator().manual_seed(0)
    net = build_network(config.model, config.data.spatial_dims, in_channels, classes, patch_size=patch,
                        spacing=spacing).to(device)
    amp = amp_enabled(device, config.amp)
    loss_fn = build_loss(config.optim, classes, device)
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    x = torch.randn(config.data.batch_size, in_channels, *patch, generator=gen).to(device)
    y = torch.randint(1, classes + 1, (config.data.batch_size, 1, *patch), generator=gen).to(device)
    times = []
    for _ in range(4):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast(amp):
            out = net(x)
        loss = loss_fn(out.float(), y - 1, y > 0)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])
