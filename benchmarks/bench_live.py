"""Live segmentation with a simulated user: Dice per round against an ilastik-style baseline, and latency.

Quality: on each image a ``SimulatedUser`` (``napari_medml.live.simulate``) paints
round 1 (a short stroke per class on three slices; 2D: three per class), then one
short stroke per round inside the largest wrongly predicted unpainted region of the
session's answer, with ``train_for(--train-seconds)`` between rounds (the issue's
protocol uses 10 s: the time a person takes to paint). After every round: Dice on
the unpainted voxels of ``LiveSession.predict()`` and of the baseline, scikit-image's
``multiscale_basic_features`` (sigma 1-16, as ilastik's default feature set) with a
100-tree ``RandomForestClassifier`` fit on the same strokes.

Images: the 3D phantom (``samples.phantom_3d``), the 2D sample
(``samples.touching_objects_2d``, semantic: labels > 0), and real images shipped
inside installed packages (no downloads): scikit-image's ``coins`` (reference:
the watershed segmentation of scikit-image's "Comparing edge-based and region-based
segmentation" tutorial) and nibabel's test EPI volume ``example4d.nii.gz`` (first
frame; reference: Otsu threshold, holes filled slice by slice, largest component).
These references are classical segmentations, not human annotation.

Latency: on a 64 x 256 x 256 phantom, after the first round and a warm-up, each
of ``--latency-strokes`` strokes is timed from ``update`` to the answer of its
256 x 256 slice (``predict(region)``) and to the answer of the whole volume.
Targets on a 2-core CPU: slice p95 <= 1 s, whole volume p95 <= 10 s.

    python benchmarks/bench_live.py [--rounds 20] [--train-seconds 2] [--images phantom,objects2d,coins,epi]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _images(names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
    """name -> (image, ground-truth labels, spacing), napari axis order."""
    from scipy import ndimage as ndi

    from napari_medml.samples import phantom_3d, touching_objects_2d

    out = {}
    for name in names:
        if name == "phantom":
            p = phantom_3d(0)
            out[name] = (p.image, p.labels.astype(np.int32), p.spacing)
        elif name == "objects2d":
            o = touching_objects_2d(0)
            out[name] = (o.image, (o.labels > 0).astype(np.int32), o.spacing)
        elif name == "coins":
            from skimage import data, filters, segmentation

            coins = data.coins()  # ships inside scikit-image
            markers = np.zeros_like(coins, np.int32)
            markers[coins < 30], markers[coins > 150] = 1, 2
            seg = segmentation.watershed(filters.sobel(coins), markers) == 2
            out[name] = (coins.astype(np.float32), ndi.binary_fill_holes(seg).astype(np.int32), (1.0, 1.0))
        elif name == "epi":
            import nibabel as nib
            from nibabel.testing import data_path
            from skimage.filters import threshold_otsu

            img = nib.load(os.path.join(data_path, "example4d.nii.gz"))
            vol = np.asarray(img.dataobj[..., 0], np.float32).transpose(2, 1, 0)  # (X, Y, Z) -> (Z, Y, X)
            spacing = tuple(float(z) for z in img.header.get_zooms()[:3][::-1])
            mask = vol > threshold_otsu(vol)
            mask = np.stack([ndi.binary_fill_holes(m) for m in mask])
            lab, n = ndi.label(mask)
            mask = lab == (1 + int(np.argmax(np.bincount(lab.ravel())[1:]))) if n else mask
            out[name] = (vol, mask.astype(np.int32), spacing)
        else:
            raise SystemExit(f"unknown image {name!r}: choose from phantom, objects2d, coins, epi")
    return out


class Baseline:
    """ilastik-style baseline: ``multiscale_basic_features`` (sigma 1-16) + 100-tree random forest."""

    def __init__(self, image: np.ndarray, background_id: int) -> None:
        from skimage.feature import multiscale_basic_features

        t0 = time.perf_counter()
        self.features = multiscale_basic_features(image.astype(np.float32), sigma_min=1, sigma_max=16)
        self.feature_s = time.perf_counter() - t0
        self.background_id = background_id

    def predict(self, scribbles: np.ndarray) -> tuple[np.ndarray, float]:
        from sklearn.ensemble import RandomForestClassifier

        t0 = time.perf_counter()
        painted = scribbles > 0
        forest = RandomForestClassifier(100, n_jobs=os.cpu_count(), random_state=0)
        forest.fit(self.features[painted], scribbles[painted])
        flat = self.features.reshape(-1, self.features.shape[-1])
        ids = forest.predict(flat).reshape(scribbles.shape)
        return np.where(ids == self.background_id, 0, ids), time.perf_counter() - t0


def _instant(args):
    from napari_medml.live import InstantConfig

    return InstantConfig(trees=args.trees) if args.trees else None


def run_quality(name, image, truth, spacing, args) -> dict:
    from napari_medml.live import LiveSession
    from napari_medml.live.simulate import SimulatedUser, dice_unpainted

    background_id = int(truth.max()) + 1
    user = SimulatedUser(truth, background_id, seed=args.seed)
    baseline = Baseline(image, background_id) if args.baseline else None
    rounds = []
    with LiveSession(image, spacing=spacing, background_id=background_id, instant=_instant(args)) as session:
        scribbles = user.first_round()
        for r in range(1, args.rounds + 1):
            if r > 1:
                scribbles = user.correct(scribbles, answer)
            t0 = time.perf_counter()
            session.update(scribbles)
            session.train_for(args.train_seconds)
            answer = session.predict()
            row = {"round": r, "painted_fraction": float((scribbles > 0).mean()),
                   "dice_live": round(dice_unpainted(answer, truth, scribbles), 4),
                   "stage": session.stage, "scores": session.scores,
                   "round_s": round(time.perf_counter() - t0, 2)}
            if baseline is not None:
                base, base_s = baseline.predict(scribbles)
                row["dice_baseline"] = round(dice_unpainted(base, truth, scribbles), 4)
                row["baseline_s"] = round(base_s, 2)
            rounds.append(row)
    result = {"shape": list(image.shape), "spacing": list(spacing), "classes": int(truth.max()),
              "rounds": rounds, "dice_live_round10": rounds[min(9, len(rounds) - 1)]["dice_live"],
              "dice_live_last": rounds[-1]["dice_live"]}
    if baseline is not None:
        result["dice_baseline_round10"] = rounds[min(9, len(rounds) - 1)]["dice_baseline"]
        result["dice_baseline_last"] = rounds[-1]["dice_baseline"]
        result["baseline_feature_s"] = round(baseline.feature_s, 2)
        result["beats_baseline_round10"] = result["dice_live_round10"] >= result["dice_baseline_round10"]
    return result


def run_latency(args) -> dict:
    from napari_medml.live import LiveSession
    from napari_medml.live.simulate import SimulatedUser
    from napari_medml.samples import phantom_3d

    p = phantom_3d(1, shape=(64, 256, 256))
    truth = p.labels.astype(np.int32)
    user = SimulatedUser(truth, 4, seed=args.seed)
    slice_s, whole_s = [], []
    t0 = time.perf_counter()
    with LiveSession(p.image, spacing=p.spacing, background_id=4, instant=_instant(args)) as session:
        scribbles = user.first_round()
        session.update(scribbles)
        first_slice = session.predict((int(np.flatnonzero(scribbles.any(axis=(1, 2)))[0]), slice(None), slice(None)))
        cold_s = time.perf_counter() - t0
        session.train_for(120)
        answer = session.predict()
        for _ in range(args.latency_strokes):
            new = user.correct(scribbles, answer)
            z = int(np.flatnonzero((new != scribbles).any(axis=(1, 2)))[0])
            scribbles = new
            t1 = time.perf_counter()
            session.update(scribbles)
            session.predict((z, slice(None), slice(None)))
            slice_s.append(time.perf_counter() - t1)
            answer = session.predict()
            whole_s.append(time.perf_counter() - t1)
        assert first_slice.shape == (1, 256, 256)
    p95 = lambda v: float(np.percentile(v, 95))  # noqa: E731
    return {"shape": [64, 256, 256], "strokes": len(slice_s),
            "first_slice_cold_s": round(cold_s, 2),
            "slice_s": [round(v, 3) for v in slice_s], "whole_s": [round(v, 2) for v in whole_s],
            "slice_p50_s": round(float(np.median(slice_s)), 3), "slice_p95_s": round(p95(slice_s), 3),
            "whole_p50_s": round(float(np.median(whole_s)), 2), "whole_p95_s": round(p95(whole_s), 2),
            "pass": p95(slice_s) <= 1.0 and p95(whole_s) <= 10.0}


def plot(result: dict, path: str) -> None:
    """Dice per round, live stage against the baseline, one panel per image, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = result["images"]
    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.0), squeeze=False)
    for ax, (name, r) in zip(axes[0], images.items()):
        rounds = [row["round"] for row in r["rounds"]]
        ax.plot(rounds, [row["dice_live"] for row in r["rounds"]], "o-", ms=3, label="live (instant stage)")
        if "dice_baseline" in r["rounds"][0]:
            ax.plot(rounds, [row["dice_baseline"] for row in r["rounds"]], "s--", ms=3, label="ilastik-style baseline")
        ax.set_title(f"{name} {'x'.join(map(str, r['shape']))}", fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylim(min(0.8, ax.get_ylim()[0]), 1.0)
    axes[0][0].set_ylabel("Dice, unpainted voxels")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="simulated rounds per image (default 20)")
    parser.add_argument("--train-seconds", type=float, default=2.0,
                        help="train_for between rounds (default 2 for quick runs; the issue's protocol: 10)")
    parser.add_argument("--images", default="phantom,objects2d,coins,epi", help="comma-separated image names")
    parser.add_argument("--latency-strokes", type=int, default=20, help="strokes timed on 64x256x256 (0: skip)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the ilastik-style baseline")
    parser.add_argument("--seed", type=int, default=0, help="simulated user's seed")
    parser.add_argument("--trees", type=int, default=0, help="trees of the instant stage (default: InstantConfig's)")
    parser.add_argument("--plot", default="", help="also save Dice per round as this PNG")
    args = parser.parse_args()

    import platform

    out: dict = {"settings": vars(args), "cpus": os.cpu_count(), "machine": platform.machine(), "images": {}}
    for name, (image, truth, spacing) in _images([n for n in args.images.split(",") if n]).items():
        out["images"][name] = run_quality(name, image, truth, spacing, args)
        print(f"{name}: done", file=sys.stderr, flush=True)
    if args.latency_strokes > 0:
        out["latency"] = run_latency(args)
    if args.plot:
        plot(out, args.plot)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
