"""Self-supervised pretraining on unlabeled volumes, then scribble labels on ~1 % of the voxels.

Compares two segmentation runs that differ only in their start: random weights, or the
weights of a network pretrained (``napari_medml.pretraining``, masked blocks + noise,
MSE) on the unlabeled images. Both runs train the same network (UNet, width and depth
options) for the same number of steps (no validation part: the scribbles are few) on the same
scribbles (``label_mode="sparse"``: strokes inside each class, background painted with
its own id, ~1 % of the voxels labelled), with the same seed. Dice is scored against the
dense ground truth on the unpainted voxels of the scribbled volume and on a volume no run
has seen. Prints JSON (Dice with and without pretraining per seed, the pretraining time,
the machine's load). Budgets are steps, not minutes: on a shared machine a time budget
measures the other processes.

Data: ``phantom`` (``samples.phantom_3d``: 48 x 96 x 96 at 2 x 1 x 1 mm; unlabeled pool
of 4 volumes, seeds 0-3; scribbles on seed 0; unseen volume seed 7) and/or ``brain``
(``benchmarks/real_data.brain_mri``, MNI152 T1 grey/white matter, halved to 2 mm;
pretraining on the whole volume; scribbles and scoring on the left hemisphere, the
right one unseen).

    python benchmarks/bench_pretraining.py [--data phantom brain] [--pretrain-steps 300]
        [--steps 200] [--seeds 0 1] [--shape 48 96 96] [--patch Z Y X] [--channels 16]
        [--depth 4] [--device auto]

A short run (about a minute on a 2-core CPU), too short to judge pretraining by:

    python benchmarks/bench_pretraining.py --data phantom --shape 16 48 48 --patch 16 32 32 \
        --pretrain-steps 20 --steps 20 --channels 4 --depth 2 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
from _common import environment

BACKGROUND_ID = 9  # the painted id that means background in the scribbles


def scribbles(labels: np.ndarray, fraction: float, seed: int, length: int = 12) -> np.ndarray:
    """Strokes like a user's: short straight in-plane lines inside each class (eroded, so
    strokes stay off the borders), the same number of voxels per class, ``fraction`` of
    the voxels in all; background painted as ``BACKGROUND_ID``."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    out = np.zeros(labels.shape, np.uint8)
    classes = [int(c) for c in np.unique(labels)]
    budget = int(fraction * labels.size / len(classes))
    for c in classes:
        inside = ndi.binary_erosion(labels == c, iterations=2)
        if not inside.any():
            inside = labels == c
        points = np.argwhere(inside)
        painted = 0
        while painted < budget:
            z, y, x = points[rng.integers(len(points))]
            angle = rng.uniform(0, np.pi)
            for t in range(-length // 2, length // 2 + 1):
                yy, xx = int(round(y + t * np.sin(angle))), int(round(x + t * np.cos(angle)))
                if 0 <= yy < labels.shape[1] and 0 <= xx < labels.shape[2] and inside[z, yy, xx] \
                        and out[z, yy, xx] == 0:
                    out[z, yy, xx] = BACKGROUND_ID if c == 0 else c
                    painted += 1
    return out


def mean_dice(pred: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None) -> float:
    if where is not None:
        pred, truth = pred[where], truth[where]
    scores = []
    for c in np.unique(truth[truth > 0]):
        a, b = pred == c, truth == c
        scores.append(2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum()))
    return float(np.mean(scores))


def datasets(names: list[str], shape: tuple[int, int, int]) -> list[dict[str, Any]]:
    out = []
    if "phantom" in names:
        from napari_medml.samples import phantom_3d

        vols = [phantom_3d(seed, shape=shape) for seed in range(4)]
        unseen = phantom_3d(7, shape=shape)
        out.append({"name": "phantom_3d", "pool": [v.image for v in vols], "spacing": vols[0].spacing,
                    "image": vols[0].image, "labels": vols[0].labels,
                    "unseen_image": unseen.image, "unseen_labels": unseen.labels})
    if "brain" in names:
        from real_data import brain_mri

        b = brain_mri()
        image = b.image[::2, ::2, ::2].astype(np.float32)
        labels = b.labels[::2, ::2, ::2]
        half = image.shape[2] // 2  # (Z, Y, X): the last axis runs from one hemisphere to the other
        spacing = tuple(2.0 * s for s in b.spacing)
        out.append({"name": "brain_mri (2 mm)", "pool": [image], "spacing": spacing,
                    "image": image[..., :half], "labels": labels[..., :half],
                    "unseen_image": image[..., half:], "unseen_labels": labels[..., half:]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["phantom"], choices=("phantom", "brain"))
    parser.add_argument("--pretrain-steps", type=int, default=300,
                        help="pretraining steps (default: 300), in epochs of 25 (rounded up to a whole epoch)")
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 96, 96], help="phantom shape (default: 48 96 96)")
    parser.add_argument("--patch", type=int, nargs=3, default=None, help="patch size (default: automatic)")
    parser.add_argument("--channels", type=int, default=16, help="network width (default: 16)")
    parser.add_argument("--depth", type=int, default=4, help="network depth (default: 4)")
    parser.add_argument("--steps", type=int, default=200, help="segmentation steps per run (default: 200)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--fraction", type=float, default=0.01, help="share of voxels scribbled (default: 0.01)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from napari_medml import api
    from napari_medml.config import (AugmentConfig, DataConfig, InferConfig, ModelConfig, OptimConfig,
                                     TrainConfig)
    from napari_medml.engine.devices import resolve_device

    model_cfg = ModelConfig(channels=args.channels, depth=args.depth)
    patch = tuple(args.patch) if args.patch else None
    load_before = os.getloadavg()
    results = []
    for ds in datasets(args.data, tuple(args.shape)):
        pre_cfg = TrainConfig(task="pretraining", data=DataConfig(spatial_dims=3, batch_size=2, patch_size=patch),
                              model=model_cfg, augment=AugmentConfig.none(), device=args.device,
                              optim=OptimConfig(epochs=-(-args.pretrain_steps // 25),
                                                steps_per_epoch=min(25, args.pretrain_steps), schedule="constant"))
        t0 = time.perf_counter()
        pretrained = api.train(ds["pool"], None, pre_cfg, spacing=ds["spacing"])
        pretrain_s = time.perf_counter() - t0
        scrib = scribbles(ds["labels"], args.fraction, seed=0)
        row: dict[str, Any] = {"data": ds["name"], "shape": list(ds["image"].shape),
                               "labelled_fraction": round(float((scrib > 0).mean()), 4),
                               "pretrain_s": round(pretrain_s, 1),
                               "pretrain_steps": pretrained.history[-1]["step"] if pretrained.history else 0,
                               "pretrain_val_loss": [round(h["val_loss"], 4) for h in pretrained.history],
                               "runs": []}
        for seed in args.seeds:
            for start in ("scratch", "pretrained"):
                cfg = TrainConfig(
                    data=DataConfig(spatial_dims=3, label_mode="sparse", background_id=BACKGROUND_ID,
                                    val_fraction=0.0, patch_size=patch),
                    model=model_cfg,
                    optim=OptimConfig(epochs=1, steps_per_epoch=args.steps, learning_rate=1e-3),
                    device=args.device, seed=seed)
                t0 = time.perf_counter()
                model = (api.train(ds["image"], scrib, cfg, spacing=ds["spacing"]) if start == "scratch"
                         else _train_from(api, ds, scrib, cfg, pretrained))
                train_s = time.perf_counter() - t0
                infer = InferConfig(overlap=0.25, device=args.device)
                pred = model.predict(ds["image"], spacing=ds["spacing"], config=infer).labels
                pred_unseen = model.predict(ds["unseen_image"], spacing=ds["spacing"], config=infer).labels
                row["runs"].append({"seed": seed, "start": start, "train_s": round(train_s, 1),
                                    "dice_unpainted": round(mean_dice(pred, ds["labels"], scrib == 0), 4),
                                    "dice_unseen": round(mean_dice(pred_unseen, ds["unseen_labels"]), 4)})
                print(json.dumps(row["runs"][-1]), flush=True)
        for start in ("scratch", "pretrained"):
            runs = [r for r in row["runs"] if r["start"] == start]
            row[f"mean_dice_unpainted_{start}"] = round(float(np.mean([r["dice_unpainted"] for r in runs])), 4)
            row[f"mean_dice_unseen_{start}"] = round(float(np.mean([r["dice_unseen"] for r in runs])), 4)
        results.append(row)
    print(json.dumps({"benchmark": "pretraining", "results": results, "steps": args.steps,
                      "settings": {"shape": args.shape, "patch": args.patch, "channels": args.channels,
                                   "depth": args.depth, "pretrain_steps": args.pretrain_steps},
                      "load_average_before": [round(v, 2) for v in load_before],
                      "load_average_after": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count(),
                      "environment": environment(resolve_device(args.device))}, indent=2))


def _train_from(api: Any, ds: dict, scrib: np.ndarray, cfg: Any, pretrained: Any) -> Any:
    """The same run, its network started from the pretrained bundle (saved and read back,
    as ``train --init-from`` does)."""
    import tempfile
    from dataclasses import replace

    folder = tempfile.mkdtemp(prefix="bench-pretrained-")
    pretrained.save(f"{folder}/bundle")
    cfg = replace(cfg, model=replace(cfg.model, init_from=f"{folder}/bundle"))
    return api.train(ds["image"], scrib, cfg, spacing=ds["spacing"])


if __name__ == "__main__":
    main()
