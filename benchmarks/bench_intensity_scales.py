"""Training images on intensity scales far apart: one normalisation for all against each
image z-scored by its own statistics first (the plan's choice, nnU-Net's per-case z-score).

Real data: StarDist's 2D fluorescence nuclei image (``real_data.nuclei_2d``), cut into
quarters. Two acquisitions are made of the top half: its left quarter as stored (uint16
counts, std ~24) and its right quarter at another gain and offset (``x GAIN + OFFSET``, a
dim camera with a dark level). Each run trains on both through the console script, then
predicts the bottom half at either scale and scores it with ``evaluate`` (mean foreground
Dice):

    napari-medml train --image a.npy --labels a_seg.npy --image b.npy --labels b_seg.npy \\
        --epochs E --steps-per-epoch S --seed 0 [--normalization zscore] --out model

"one normalisation" gives ``--normalization zscore`` (the statistics of both images
together, as before the plan z-scored each image); "plan" leaves it to the plan. Prints one
JSON object.

    .venv/bin/python benchmarks/bench_intensity_scales.py --epochs 6 --steps 25
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_data  # noqa: E402

GAIN, OFFSET = 0.05, 500.0


def cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_medml", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    real = real_data.nuclei_2d()
    image = np.asarray(real.image, np.float32)
    labels = (np.asarray(real.labels) > 0).astype(np.uint8)
    half, quarter = image.shape[0] // 2, image.shape[1] // 2
    out: dict = {"data": "StarDist nuclei_2d: top-left quarter as stored, top-right quarter "
                         f"x{GAIN:g} + {OFFSET:g}; the bottom half scored at either scale",
                 "epochs": args.epochs, "steps_per_epoch": args.steps, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        np.save(d / "a.npy", image[:half, :quarter])
        np.save(d / "a_seg.npy", labels[:half, :quarter])
        np.save(d / "b.npy", image[:half, quarter:] * GAIN + OFFSET)
        np.save(d / "b_seg.npy", labels[:half, quarter:])
        np.save(d / "eval_stored.npy", image[half:])
        np.save(d / "eval_dim.npy", image[half:] * GAIN + OFFSET)
        np.save(d / "eval_seg.npy", labels[half:])
        for name, extra in (("one normalisation", ["--normalization", "zscore"]), ("plan", [])):
            model = d / name.replace(" ", "_")
            start = time.monotonic()
            done = cli("train", "--image", d / "a.npy", "--labels", d / "a_seg.npy", "--image", d / "b.npy",
                       "--labels", d / "b_seg.npy", "--epochs", args.epochs, "--steps-per-epoch", args.steps,
                       "--seed", "0", "--device", "cpu", "--out", model, *extra)
            if done.returncode:
                raise SystemExit(done.stderr[-2000:])
            run = {"train_s": round(time.monotonic() - start, 1),
                   "per_image_zscore": "each image z-scored by its own" in done.stderr}
            for scale in ("stored", "dim"):
                pred = d / f"pred_{model.name}_{scale}.npy"
                done = cli("predict", "--model", model, "--image", d / f"eval_{scale}.npy", "--out", pred,
                           "--device", "cpu")
                if done.returncode:
                    raise SystemExit(done.stderr[-2000:])
                score = cli("evaluate", "--prediction", pred, "--labels", d / "eval_seg.npy")
                run[f"dice_{scale}"] = round(json.loads(score.stdout)["mean_dice"], 4)
            out["runs"][name] = run
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
