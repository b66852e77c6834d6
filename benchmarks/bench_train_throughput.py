"""Training throughput of ``train.fit`` against a bare PyTorch loop.

Both train the same network (MONAI UNet from the registry) with the same patch
size, batch size, loss (``losses.build_loss``), optimizer (AdamW, same learning
rate and weight decay), mixed precision on CUDA (as the engine), no augmentation,
for the same number of steps on the same phantom volume. The bare loop draws
uniform random crops with NumPy; ``fit`` draws its class-balanced patches, clips
gradients, steps the learning-rate schedule and yields reports.

``fit`` is timed two ways: its optimisation loop (steps / the elapsed time of the
last report: setup and the end-of-run checkpoint excluded, as the bare loop has
neither) and end to end (wall clock around the whole generator, for reference).
Validation is off (``val_fraction=0``). Target: loop steps/s of ``fit`` >= 0.9x
the bare loop's. Prints JSON on stdout.

    python benchmarks/bench_train_throughput.py [--steps 20] [--patch 64] [--batch 2] [--device auto]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import tempfile
import time

import numpy as np
from _common import environment, sync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimisation steps per run (default: 20)")
    parser.add_argument("--patch", type=int, default=64, help="patch edge in voxels, divisible by 8 (default: 64)")
    parser.add_argument("--batch", type=int, default=2, help="patches per step (default: 2)")
    parser.add_argument("--size", type=int, default=96, help="phantom volume edge (default: 96)")
    parser.add_argument("--features", type=int, default=16, help="UNet width (default: 16)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved (default: 3)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default: auto)")
    args = parser.parse_args()

    import torch

    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from napari_medml.engine.devices import amp_enabled, resolve_device
    from napari_medml.nn.losses import build_loss
    from napari_medml.nn.segmentation import build_network
    from napari_medml.samples import phantom_3d
    from napari_medml.segmentation.task import fit

    device = resolve_device(args.device)
    phantom = phantom_3d(seed=0, shape=(args.size,) * 3, spacing=(1.0, 1.0, 1.0))
    patch = (args.patch,) * 3
    config = TrainConfig(
        data=DataConfig(patch_size=patch, batch_size=args.batch, val_fraction=0.0),
        augment=AugmentConfig.none(),
        model=ModelConfig(channels=args.features),
        optim=OptimConfig(epochs=1, steps_per_epoch=args.steps),
        device=args.device,
    )
    classes = int(phantom.labels.max()) + 1

    def run_fit() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = dataclasses.replace(config, checkpoint_dir=tmp)
            start = time.perf_counter()
            gen = fit(phantom.image, phantom.labels, cfg, spacing=phantom.spacing)
            last = None
            while True:
                try:
                    last = next(gen)
                except StopIteration:
                    break
            sync(device)
            total = time.perf_counter() - start
        assert last is not None and last.step == args.steps
        return args.steps / last.elapsed_s, args.steps / total

    def run_bare(steps: int = args.steps) -> float:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        image = (phantom.image - phantom.image.mean()) / phantom.image.std()
        labels = phantom.labels.astype(np.int64)
        net = build_network(config.model, 3, 1, classes, patch_size=patch).to(device)
        loss_fn = build_loss(config.optim, classes, device)
        opt = torch.optim.AdamW(net.parameters(), lr=config.optim.learning_rate,
                                weight_decay=config.optim.weight_decay)
        amp = amp_enabled(device, config.amp)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        net.train()
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            xs, ys = [], []
            for _ in range(args.batch):
                corner = [int(rng.integers(s - p + 1)) for s, p in zip(image.shape, patch)]
                window = tuple(slice(c, c + p) for c, p in zip(corner, patch))
                xs.append(image[window][None])
                ys.append(labels[window])
            x = torch.from_numpy(np.stack(xs)).to(device, non_blocking=True)
            y = torch.from_numpy(np.stack(ys)).to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            ctx = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
            with ctx:
                logits = net(x)
            loss = loss_fn(logits.float(), y, torch.ones_like(y, dtype=torch.bool))
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            float(loss.detach())  # the engine reads every loss too (a sync on CUDA)
        sync(device)
        return steps / (time.perf_counter() - start)

    run_bare(steps=3)  # warm-up (kernel selection, allocator) shared by both sides
    bare, fit_loop, fit_total = [], [], []
    for _ in range(args.repeats):  # interleaved, so drift affects both alike
        bare.append(run_bare())
        loop_sps, total_sps = run_fit()
        fit_loop.append(loop_sps)
        fit_total.append(total_sps)
    med_bare, med_loop, med_total = (statistics.median(v) for v in (bare, fit_loop, fit_total))
    ratio = med_loop / med_bare
    print(json.dumps({
        "benchmark": "train_throughput",
        "steps": args.steps, "patch": list(patch), "batch": args.batch, "volume": [args.size] * 3,
        "network": config.model.network, "features": args.features, "depth": config.model.depth,
        "loss": config.optim.loss, "optimizer": config.optim.optimizer, "repeats": args.repeats,
        "bare_steps_per_s": bare, "fit_loop_steps_per_s": fit_loop, "fit_total_steps_per_s": fit_total,
        "median_bare_steps_per_s": med_bare, "median_fit_loop_steps_per_s": med_loop,
        "median_fit_total_steps_per_s": med_total,
        "ratio": ratio, "ratio_end_to_end": med_total / med_bare, "target": ">= 0.9", "pass": ratio >= 0.9,
        **environment(device),
    }, indent=2))


if __name__ == "__main__":
    main()
