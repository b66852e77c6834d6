"""Quality within a time budget on real images: classical rule, a plain MONAI script,
napari-medml with the old defaults ("before") and with the planner ("after").

Each image of ``real_data.py`` is cut in two along its longest axis: the first half
trains, the second half is predicted and scored with ``napari-medml evaluate`` (mean
foreground Dice). Nuclei labels become foreground (``labels > 0``); the brain keeps
grey (1) and white (2) matter. Every trained method gets ``--minutes`` of wall clock
and seed 0; the napari-medml runs go through the console script, as a user's would:

    napari-medml train --image train.npy --labels train_labels.npy --max-minutes M --seed 0 --out b
    napari-medml predict --model b --image eval.npy --out pred.npy
    napari-medml evaluate --prediction pred.npy --labels eval_labels.npy

"before" runs the same commands with another source tree (``--before-src``: a checkout
of the commit before the planner, put first on ``PYTHONPATH``); without it, "before"
is this tree's ``train --no-plan``. Prints one JSON object on stdout.

    .venv/bin/python benchmarks/bench_plan_quality.py --minutes 4
    .venv/bin/python benchmarks/bench_plan_quality.py --minutes 1 --datasets nuclei_2d --methods classical,after
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_data  # noqa: E402

DATASETS = ("brain_mri", "nuclei_3d", "nuclei_2d")
METHODS = ("classical", "monai", "before", "after")


def halves(name: str) -> dict:
    """Train (first half) and evaluation (second half) parts along the longest axis."""
    real = getattr(real_data, name)()
    image = np.asarray(real.image, np.float32)
    labels = np.asarray(real.labels)
    if name.startswith("nuclei"):
        labels = (labels > 0).astype(np.uint8)
    axis = int(np.argmax(image.shape))
    cut = image.shape[axis] // 2
    first = [slice(None)] * image.ndim
    second = [slice(None)] * image.ndim
    first[axis], second[axis] = slice(0, cut), slice(cut, None)
    first, second = tuple(first), tuple(second)
    return {"train": (image[first], labels[first].astype(np.uint8)),
            "eval": (image[second], labels[second].astype(np.uint8)),
            "axis": axis, "cut": cut, "shape": list(image.shape)}


def mean_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean Dice over the foreground classes of ``gt`` (fast; for fitting the rule only)."""
    scores = []
    for c in np.unique(gt[gt > 0]):
        p, g = pred == c, gt == c
        scores.append(2.0 * np.count_nonzero(p & g) / max(np.count_nonzero(p) + np.count_nonzero(g), 1))
    return float(np.mean(scores))


# --- classical one-liners ------------------------------------------------------------


def classical(name: str, parts: dict) -> tuple[np.ndarray, str]:
    """Brain: two intensity thresholds fitted on the training half. Nuclei: Otsu."""
    image, _ = parts["eval"]
    if name.startswith("nuclei"):
        from skimage.filters import threshold_otsu

        return (image > threshold_otsu(image)).astype(np.uint8), "Otsu threshold"
    train_image, train_labels = parts["train"]
    grid = np.percentile(train_image[train_image > 0], np.linspace(2, 98, 49))
    sub = train_image[::2, ::2, ::2]
    lab = train_labels[::2, ::2, ::2]
    best = (-1.0, 0.0, 0.0)
    for i, low in enumerate(grid):
        for high in grid[i + 1:]:
            pred = np.digitize(sub, [low, high]).astype(np.uint8)
            score = mean_dice(pred, lab)
            best = max(best, (score, float(low), float(high)))
    _, low, high = best
    return (np.digitize(image, [low, high]).astype(np.uint8),
            f"grey matter in ({low:.1f}, {high:.1f}], white matter above (fitted on the training half)")


# --- a plain MONAI script ------------------------------------------------------------------


def monai_script(parts: dict, minutes: float, seed: int = 0) -> tuple[np.ndarray, dict]:
    """UNet + DiceCE, per-image min-max scaling, pos/neg patch crops, Adam, until the time is up."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import Compose, DivisiblePadd, RandCropByPosNegLabeld, RandFlipd, ScaleIntensityd

    torch.manual_seed(seed)
    image, labels = parts["train"]
    dims = image.ndim
    classes = int(labels.max()) + 1
    patch = (256, 256) if dims == 2 else (64, 64, 64)
    patch = tuple(min(p, (s // 16) * 16 or 16) for p, s in zip(patch, image.shape))
    transform = Compose([ScaleIntensityd("image"), DivisiblePadd(["image", "label"], 16),
                         RandCropByPosNegLabeld(["image", "label"], "label", patch, pos=1, neg=1, num_samples=2),
                         RandFlipd(["image", "label"], prob=0.5, spatial_axis=0)])
    transform.set_random_state(seed)
    net = UNet(dims, 1, classes, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    sample = {"image": image[None], "label": labels[None].astype(np.float32)}
    start, steps = time.monotonic(), 0
    net.train()
    while time.monotonic() - start < minutes * 60:
        crops = transform(sample)
        x = torch.stack([torch.as_tensor(c["image"]).as_tensor() for c in crops]).float()
        y = torch.stack([torch.as_tensor(c["label"]).as_tensor() for c in crops]).float()
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        steps += 1
    net.eval()
    test = parts["eval"][0]
    scaled = (test - test.min()) / max(float(test.max() - test.min()), 1e-8)
    with torch.no_grad():
        logits = sliding_window_inference(torch.from_numpy(scaled[None, None]).float(), patch, 4, net,
                                          overlap=0.25)
    return logits.argmax(1)[0].numpy().astype(np.uint8), {"steps": steps, "patch": list(patch)}


# --- napari-medml through its console script ----------------------------------------------------


def medml(parts: dict, minutes: float, folder: Path, variant: str, source: str | None) -> tuple[np.ndarray, dict]:
    image, labels = parts["train"]
    np.save(folder / "train.npy", image)
    np.save(folder / "train_labels.npy", labels)
    np.save(folder / "eval.npy", parts["eval"][0])
    env = dict(os.environ)
    if source:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(source) / "src"), env.get("PYTHONPATH")) if p)
    cli = [sys.executable, "-c", "import sys; from napari_medml.cli import main; sys.exit(main())"]
    bundle = folder / f"model-{variant}"
    train = [*cli, "train", "--image", str(folder / "train.npy"), "--labels", str(folder / "train_labels.npy"),
             "--max-minutes", f"{minutes:g}", "--seed", "0", "--device", "cpu", "--out", str(bundle)]
    if variant == "before" and not source:
        train.append("--no-plan")
    start = time.monotonic()
    done = subprocess.run(train, env=env, capture_output=True, text=True)
    train_s = time.monotonic() - start
    if done.returncode:
        raise RuntimeError(f"train ({variant}) failed:\n{done.stderr[-3000:]}")
    pred = folder / f"pred-{variant}.npy"
    done = subprocess.run([*cli, "predict", "--model", str(bundle), "--image", str(folder / "eval.npy"),
                           "--out", str(pred), "--device", "cpu"], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"predict ({variant}) failed:\n{done.stderr[-3000:]}")
    config = json.loads((bundle / "config.json").read_text())
    history = config.get("history") or []
    vals = [h.get("val_mean_dice") for h in history if h.get("val_mean_dice") is not None]
    best = config.get("provenance", {}).get("best_epoch")
    val_best = next((h.get("val_mean_dice") for h in history if h.get("epoch") == best), None)
    steps = history[-1]["step"] if history else None
    return np.load(pred), {"train_s": round(train_s, 1), "steps": steps, "epochs": len(history),
                           "validation_dice": val_best, "validation_dice_last": vals[-1] if vals else None,
                           "plan": config.get("plan"), "patch": config.get("patch_size"),
                           "models": len((config.get("ensemble") or {}).get("members") or [None]),
                           "split": config.get("provenance", {}).get("split")}


def evaluate_cli(pred: np.ndarray, gt: np.ndarray, folder: Path, tag: str) -> float:
    """``napari-medml evaluate`` on the written files: mean foreground Dice."""
    np.save(folder / f"score-{tag}.npy", pred.astype(np.uint8))
    np.save(folder / "eval_labels.npy", gt)
    done = subprocess.run([sys.executable, "-c", "import sys; from napari_medml.cli import main; sys.exit(main())",
                           "evaluate", "--prediction", str(folder / f"score-{tag}.npy"),
                           "--labels", str(folder / "eval_labels.npy")], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"evaluate failed:\n{done.stderr[-2000:]}")
    return float(json.loads(done.stdout)["mean_dice"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="training time per method (default 4)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--before-src", help="source checkout for 'before' (default: this tree with --no-plan)")
    parser.add_argument("--after-src", help="source checkout for 'after' (default: this tree)")
    parser.add_argument("--parallel", action="store_true",
                        help="train the methods of a dataset at the same time (they share the machine's load: "
                        "a fair comparison on a busy machine, each with less of the CPU)")
    parser.add_argument("--keep", type=Path, help="keep the files (bundles, predictions) in this folder")
    args = parser.parse_args()
    import torch

    result: dict = {"minutes": args.minutes, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                    "load_at_start": os.getloadavg()[0], "results": {}}
    for name in args.datasets.split(","):
        parts = halves(name)
        entry: dict = {"shape": parts["shape"], "split": f"axis {parts['axis']} at {parts['cut']}: first half "
                       "trains, second half is scored"}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(args.keep) / name if args.keep else Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            def one(method: str) -> tuple[np.ndarray, dict, float]:
                start = time.monotonic()
                if method == "classical":
                    pred, info = classical(name, parts)
                    info = {"rule": info}
                elif method == "monai":
                    pred, info = monai_script(parts, args.minutes)
                else:
                    pred, info = medml(parts, args.minutes, folder, method,
                                       args.before_src if method == "before" else args.after_src)
                return pred, info, time.monotonic() - start

            methods = args.methods.split(",")
            # the trained methods run side by side, so that they share the machine's load
            with ThreadPoolExecutor(len(methods) if args.parallel else 1) as pool:
                done = dict(zip(methods, pool.map(one, methods)))
            for method in methods:
                pred, info, wall = done[method]
                info["dice"] = round(evaluate_cli(pred, parts["eval"][1], folder, method), 4)
                info["wall_s"] = round(wall, 1)
                entry[method] = info
                print(f"{name} {method}: {info['dice']}", file=sys.stderr, flush=True)
        result["results"][name] = entry
    result["load_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
