"""Data-parallel training (``napari-medml train --nproc N``, PyTorch DDP) against one process.

1. **Quality, CPU** (always): the 3D phantom (``samples.phantom_3d``, seed 0) trained by
   one process with batch ``2B`` and by two CPU processes (gloo) with batch ``B`` each,
   for the same steps: both see the same number of samples (``steps x 2B``). Each
   bundle predicts a held-out phantom (seed 1); the mean foreground Dice of the two
   kinds of run, averaged over the seeds (one pair per seed: one run's Dice moves by about
   0.02 with its seed), should agree within 0.02. Both run as a user runs them: the ``napari-medml``
   console script in a subprocess (one process gets every core as torch threads, the
   two processes one share each). Times: the whole command (start-up, data, training,
   saving) and the optimisation loop alone (the training history's ``elapsed_s``).
2. **Scaling, GPUs** (when ``torch.cuda.device_count() > 1``): images/s of the
   training loop with 1, 2, 4, ... N GPUs (one process per GPU, NCCL, batch per GPU
   fixed), measured over the second epoch (warm; no validation), and the efficiency
   ``ips(n) / (n x ips(1))``. Without several GPUs the JSON says so.

Prints JSON on stdout, with the machine's load average before and after (other work on
the machine slows both runs, not their Dice).

    python benchmarks/bench_ddp.py [--epochs 8] [--steps 20] [--batch 2] [--seeds 0 1 2 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def console_script() -> str:
    path = Path(sys.executable).with_name("napari-medml")
    return str(path) if path.exists() else "napari-medml"


def train(argv: list[object], threads: int | None) -> dict:
    """Run ``napari-medml train ...``; the wall time, or the error."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.monotonic()
    done = subprocess.run([console_script(), "train", *map(str, argv)], capture_output=True, text=True, env=env)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"train {' '.join(map(str, argv))} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {"wall_s": round(wall, 1)}


def write_phantom(folder: Path, seed: int, shape: tuple[int, int, int]) -> tuple[Path, Path]:
    from napari_medml.io import Volume, write_volume
    from napari_medml.samples import phantom_3d

    p = phantom_3d(seed=seed, shape=shape)
    image, labels = folder / f"ct{seed}.nii.gz", folder / f"ct{seed}_seg.nii.gz"
    write_volume(image, Volume(p.image, p.spacing, (0.0,) * 3))
    write_volume(labels, Volume(p.labels, p.spacing, (0.0,) * 3, is_labels=True))
    return image, labels


def held_out_dice(bundle: Path, shape: tuple[int, int, int]) -> dict:
    """Mean foreground Dice of the bundle on phantom seed 1 (never trained on)."""
    from napari_medml import load_model
    from napari_medml.samples import phantom_3d
    from napari_medml.segmentation.metrics import dice

    p = phantom_3d(seed=1, shape=shape)
    from napari_medml.config import InferConfig

    model = load_model(bundle)
    labels = model.predict(p.image, spacing=p.spacing, config=InferConfig(device="cpu")).labels
    per_class = dice(labels, p.labels, class_ids=(1, 2, 3))
    loop = model.history[-1]["elapsed_s"] if model.history else None
    return {"mean_dice": round(float(np.nanmean(list(per_class.values()))), 4),
            "dice": {str(k): round(v, 4) for k, v in per_class.items()},
            "loop_s": None if loop is None else round(loop, 1), "epochs": len(model.history)}


def quality(args: argparse.Namespace, folder: Path) -> dict:
    shape = tuple(args.shape)
    image, labels = write_phantom(folder, 0, shape)
    common = ["--image", image, "--labels", labels, "--epochs", args.epochs, "--steps-per-epoch", args.steps,
              "--patch-size", *args.patch, "--features", args.features, "--depth", 3, "--lr", args.lr,
              "--device", "cpu"]  # fmt: skip
    cores = os.cpu_count() or 1
    threads = args.threads or cores
    runs = []
    for seed in args.seeds:
        one, two = folder / f"one{seed}", folder / f"ddp{seed}"
        single = train([*common, "--seed", seed, "--batch-size", 2 * args.batch, "--out", one], threads=threads)
        ddp = train([*common, "--seed", seed, "--batch-size", args.batch, "--nproc", 2, "--out", two], threads=None)
        single.update(held_out_dice(one, shape))
        ddp.update(held_out_dice(two, shape))
        runs.append({"seed": seed, "one_process": single, "two_processes": ddp,
                     "dice_difference": round(ddp["mean_dice"] - single["mean_dice"], 4)})
    samples = args.epochs * args.steps * 2 * args.batch
    one = [r["one_process"]["mean_dice"] for r in runs]
    two = [r["two_processes"]["mean_dice"] for r in runs]
    difference = float(np.mean(two) - np.mean(one))
    return {"samples_each": samples, "one_process": f"batch {2 * args.batch}, {threads} torch thread(s)",
            "two_processes": f"batch {args.batch} per process (gloo), {max(1, cores // 2)} thread(s) each",
            "runs": runs, "mean_dice_one_process": round(float(np.mean(one)), 4),
            "mean_dice_two_processes": round(float(np.mean(two)), 4), "mean_dice_difference": round(difference, 4),
            # how far one-process runs of different seeds differ: the noise of one comparison
            "one_process_seed_spread": round(max(one) - min(one), 4),
            "max_abs_dice_difference_per_seed": max(abs(r["dice_difference"]) for r in runs),
            "within_0.02": abs(difference) <= 0.02}


def gpu_scaling(args: argparse.Namespace, folder: Path) -> dict:
    import torch

    count = torch.cuda.device_count()
    if count <= 1:
        return {"skipped": f"torch.cuda.device_count() == {count}: images/s scaling needs several GPUs; "
                "run this script on a machine with more than one"}
    shape = (args.gpu_size,) * 3
    image, labels = write_phantom(folder, 0, shape)
    counts = sorted({n for n in (1, 2, 4, 8, 16) if n <= count} | {count})
    rows = []
    for n in counts:
        out = folder / f"gpu{n}"
        argv = ["--image", image, "--labels", labels, "--epochs", 2, "--steps-per-epoch", args.gpu_steps,
                "--val-fraction", 0, "--patch-size", *([args.gpu_patch] * 3), "--features", 32,
                "--batch-size", args.batch, "--device", "cuda", "--seed", 0, "--out", out]  # fmt: skip
        if n > 1:
            argv += ["--nproc", n]
        wall = train(argv, threads=None)["wall_s"]
        from napari_medml import load_model

        history = load_model(out).history
        second = history[1]["elapsed_s"] - history[0]["elapsed_s"]  # the warm epoch
        ips = args.gpu_steps * args.batch * n / second
        rows.append({"gpus": n, "images_per_s": round(ips, 1), "epoch_s": round(second, 2), "wall_s": wall})
    base = rows[0]["images_per_s"]
    for row in rows:
        row["efficiency"] = round(row["images_per_s"] / (row["gpus"] * base), 3)
    return {"gpu": torch.cuda.get_device_name(0), "patch": [args.gpu_patch] * 3, "batch_per_gpu": args.batch,
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="epochs of each CPU run (default: 8)")
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (default: 20)")
    parser.add_argument("--batch", type=int, default=2,
                        help="batch per process of the two-process run; one process gets twice this (default: 2)")
    parser.add_argument("--patch", type=int, nargs=3, default=(16, 64, 64), help="CPU patch (default: 16 64 64)")
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 96, 96), help="phantom shape (default: 48 96 96)")
    parser.add_argument("--features", type=int, default=8, help="UNet width (default: 8)")
    parser.add_argument("--lr", type=float, default=3e-3, help="learning rate (default: 3e-3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3],
                        help="one pair of runs per seed; Dice compared by its mean over them (default: 0 1 2 3)")
    parser.add_argument("--gpu-size", type=int, default=160, help="GPU phantom edge (default: 160)")
    parser.add_argument("--gpu-patch", type=int, default=96, help="GPU patch edge (default: 96)")
    parser.add_argument("--gpu-steps", type=int, default=50, help="GPU steps per epoch (default: 50)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the one-process CPU run (default: every core; on a busy "
                        "machine 1 avoids threads waiting on each other)")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU scaling")
    args = parser.parse_args()

    import torch

    result: dict = {"machine": {"cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in os.getloadavg()],
                                "torch": torch.__version__, "cuda_devices": torch.cuda.device_count()}}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        folder = Path(tmp)
        if not args.skip_cpu:
            result["cpu_two_processes_vs_one"] = quality(args, folder)
        result["gpu_scaling"] = gpu_scaling(args, folder)
    result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
