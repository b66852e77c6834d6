"""Live segmentation with a simulated user: Dice per round of the instant stage, the deep
stage and an ilastik-style baseline, the stage on screen, and latency.

Quality: on each image a ``SimulatedUser`` (``napari_medml.live.simulate``) paints
round 1 (a short stroke per class on three slices; 2D: three per class), then one
short stroke per round inside the largest wrongly predicted unpainted region of the
session's answer (the stage on screen), with ``train_for(--train-seconds)`` between
rounds (the issue's protocol: 10 s, the time a person takes to paint; the deep stage
trains during it). After every round: Dice on the unpainted voxels of the answer on
screen (``predict()``), of each stage (``predict(stage=...)``) and of the baseline,
scikit-image's ``multiscale_basic_features`` (sigma 1-16, as ilastik's default
feature set) with a 100-tree ``RandomForestClassifier`` fit on the same strokes.

Images: the 3D phantom (``samples.phantom_3d``), the 2D sample
(``samples.touching_objects_2d``, semantic: labels > 0), the real images of
``benchmarks/real_data.py`` (``nuclei_2d`` and ``nuclei_3d``, semantic: nuclei >
0; ``brain`` = ``brain_mri`` cropped to 64 x 128 x 128 around the centre, grey and
white matter), and images shipped inside installed packages: scikit-image's ``coins`` (reference:
the watershed segmentation of scikit-image's "Comparing edge-based and region-based
segmentation" tutorial) and nibabel's test EPI volume ``example4d.nii.gz`` (first
frame; reference: Otsu threshold, holes filled slice by slice, largest component).
These references are classical segmentations, not human annotation.

Latency: on a 64 x 256 x 256 phantom, after the first round and a warm-up, each
of ``--latency-strokes`` strokes is timed from ``update`` to the answer of its
256 x 256 slice (``predict(region)``) and to the answer of the whole volume, once
with the instant stage alone and once while the network trains in another thread
(as in the widget). Targets on a 2-core CPU: slice p95 <= 1 s, whole volume p95 <= 10 s.

Large volume (``--large 200,512,512``, instant stage): blobs in noise; strokes on one
slice, then the time from ``update`` to the answer of that slice (cold: nothing
computed before), to the answer of a slice 20 further, and the time ``close`` (the
widget's Stop) takes while the whole answer is being computed. Target: first slice
<= 15 s (it was 250-340 s when slices were read from 64-voxel-thick blocks).

    python benchmarks/bench_live.py [--rounds 20] [--train-seconds 10] [--images phantom,objects2d,nuclei_2d,nuclei_3d,brain]
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
        elif name in ("nuclei_2d", "nuclei_3d", "brain"):
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import real_data

            real = getattr(real_data, "brain_mri" if name == "brain" else name)()
            if name == "brain":  # 64 x 128 x 128 around the centre: grey and white matter, some outside
                crop = (slice(70, 134), slice(50, 178), slice(35, 163))
                out[name] = (real.image[crop].astype(np.float32), real.labels[crop].astype(np.int32), real.spacing)
            else:
                out[name] = (real.image.astype(np.float32), (real.labels > 0).astype(np.int32), real.spacing)
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
            raise SystemExit(f"unknown image {name!r}: choose from phantom, objects2d, nuclei_2d, nuclei_3d, brain, "
                             "coins, epi")
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


def _deep(args):
    from napari_medml.live.deep import DeepConfig

    return DeepConfig()


def _instant(args):
    from napari_medml.live import InstantConfig

    return InstantConfig(trees=args.trees) if args.trees else None


def _stage_dice(session, stage: str, truth, scribbles) -> float | None:
    from napari_medml.errors import InputError
    from napari_medml.live.simulate import dice_unpainted

    try:
        return round(dice_unpainted(session.predict(stage=stage), truth, scribbles), 4)
    except InputError:  # the network has no snapshot yet
        return None


def run_quality(name, image, truth, spacing, args) -> dict:
    from napari_medml.live import LiveSession
    from napari_medml.live.simulate import SimulatedUser, dice_unpainted

    background_id = int(truth.max()) + 1
    user = SimulatedUser(truth, background_id, seed=args.seed)
    baseline = Baseline(image, background_id) if args.baseline else None
    rounds = []
    deep = None if args.no_deep else _deep(args)
    with LiveSession(image, spacing=spacing, background_id=background_id, instant=_instant(args),
                     deep=deep) as session:
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
                   "dice_instant": _stage_dice(session, "features", truth, scribbles),
                   "dice_deep": None if deep is None else _stage_dice(session, "network", truth, scribbles),
                   "dice_ensemble": None if deep is None else _stage_dice(session, "ensemble", truth, scribbles),
                   "stage": session.stage, "scores": session.scores,
                   "round_s": round(time.perf_counter() - t0, 2)}
            if deep is not None:
                training = session.training
                row["steps"], row["fit_accuracy"] = training["steps"], training["fit_accuracy"]
            if baseline is not None:
                base, base_s = baseline.predict(scribbles)
                row["dice_baseline"] = round(dice_unpainted(base, truth, scribbles), 4)
                row["baseline_s"] = round(base_s, 2)
            rounds.append(row)
            print(f"{name} round {r}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return _summary(image, truth, spacing, rounds)


def _summary(image, truth, spacing, rounds) -> dict:
    result = {"shape": list(image.shape), "spacing": list(spacing), "classes": int(truth.max()), "rounds": rounds}
    for at, row in (("round10", rounds[min(9, len(rounds) - 1)]), ("last", rounds[-1])):
        for key in ("live", "instant", "deep", "ensemble", "baseline"):
            if f"dice_{key}" in row:
                result[f"dice_{key}_{at}"] = row[f"dice_{key}"]
    if "dice_baseline_round10" in result:
        result["beats_baseline_round10"] = result["dice_live_round10"] >= result["dice_baseline_round10"]
    ahead = [row["round"] for row in rounds
             if row.get("dice_deep") is not None and row["dice_deep"] > row["dice_instant"]]
    result["deep_ahead_rounds"] = ahead
    result["deep_overtakes_round"] = ahead[0] if ahead else None
    result["network_on_screen_rounds"] = [row["round"] for row in rounds if row["stage"] == "network"]
    result["ensemble_on_screen_rounds"] = [row["round"] for row in rounds if row["stage"] == "ensemble"]
    if "dice_baseline" in rounds[0]:
        result["rounds_on_screen_beats_baseline"] = sum(row["dice_live"] >= row["dice_baseline"] for row in rounds)
    return result


def run_latency(args, training: bool) -> dict:
    """Stroke-to-answer times on 64 x 256 x 256; ``training``: the network trains meanwhile in a thread."""
    import threading

    from napari_medml.live import LiveSession
    from napari_medml.live.simulate import SimulatedUser
    from napari_medml.samples import phantom_3d

    p = phantom_3d(1, shape=(64, 256, 256))
    truth = p.labels.astype(np.int32)
    user = SimulatedUser(truth, 4, seed=args.seed)
    slice_s, whole_s = [], []
    t0 = time.perf_counter()
    strokes = args.latency_strokes if not training else max(1, args.latency_strokes // 2)
    with LiveSession(p.image, spacing=p.spacing, background_id=4, instant=_instant(args),
                     deep=_deep(args) if training else None) as session:
        scribbles = user.first_round()
        session.update(scribbles)
        first_slice = session.predict((int(np.flatnonzero(scribbles.any(axis=(1, 2)))[0]), slice(None), slice(None)))
        cold_s = time.perf_counter() - t0
        session.train_for(120 if not training else 30)
        answer = session.predict()
        trainer = None
        if training:  # as the widget does: train_for in a loop in its own thread
            def train() -> None:
                while not session.closed:
                    try:
                        session.train_for(2)
                    except ValueError:  # closed meanwhile
                        return

            trainer = threading.Thread(target=train, daemon=True)
            trainer.start()
        for _ in range(strokes):
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
        stage, steps = session.stage, session.training.get("steps")
    p95 = lambda v: float(np.percentile(v, 95))  # noqa: E731
    return {"shape": [64, 256, 256], "strokes": len(slice_s), "network_training": training,
            "stage_at_end": stage, "network_steps": steps,
            "first_slice_cold_s": round(cold_s, 2),
            "slice_s": [round(v, 3) for v in slice_s], "whole_s": [round(v, 2) for v in whole_s],
            "slice_p50_s": round(float(np.median(slice_s)), 3), "slice_p95_s": round(p95(slice_s), 3),
            "whole_p50_s": round(float(np.median(whole_s)), 2), "whole_p95_s": round(p95(whole_s), 2),
            "pass": p95(slice_s) <= 1.0 and p95(whole_s) <= 10.0}


def run_large(shape: tuple[int, ...], seed: int) -> dict:
    """Cold first-slice answer, a second slice and Stop on a large volume (instant stage only)."""
    from scipy import ndimage as ndi

    from napari_medml.live import LiveSession

    rng = np.random.default_rng(seed)
    coarse = ndi.gaussian_filter(rng.random(tuple(max(1, n // 4) for n in shape), dtype=np.float32), 2)
    truth = np.kron(coarse > np.quantile(coarse, 0.7), np.ones((4,) * len(shape), np.uint8))
    truth = np.pad(truth, [(0, n - t) for n, t in zip(shape, truth.shape)])
    image = truth + rng.normal(0, 0.3, shape).astype(np.float32)
    z = shape[0] // 2
    scribbles = np.zeros(shape, np.uint8)
    for value, paint in ((1, 2), (0, 1)):  # 300 voxels of each class on slice z
        ys, xs = np.nonzero(truth[z] == value)
        pick = rng.choice(len(ys), 300, replace=False)
        scribbles[z, ys[pick], xs[pick]] = paint
    t0 = time.perf_counter()
    session = LiveSession(image, background_id=1, deep=None)
    session.update(scribbles)
    first = session.predict((z, slice(None), slice(None)))
    t1 = time.perf_counter()
    session.predict((min(shape[0] - 1, z + 20), slice(None), slice(None)))
    t2 = time.perf_counter()
    time.sleep(5)  # the worker is computing the whole answer
    session.close()
    t3 = time.perf_counter()
    accuracy = float(((first[0] == 2) == (truth[z] == 1)).mean())
    return {"shape": list(shape), "first_slice_cold_s": round(t1 - t0, 2), "second_slice_s": round(t2 - t1, 2),
            "stop_s": round(t3 - t2 - 5, 2), "first_slice_accuracy": round(accuracy, 4),
            "pass": t1 - t0 <= 15.0}


def plot(result: dict, path: str) -> None:
    """Dice per round of the instant stage, the deep stage and the baseline, one panel per image (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = result["images"]
    fig, axes = plt.subplots(1, len(images), figsize=(2.6 * len(images), 2.6), squeeze=False)
    for ax, (name, r) in zip(axes[0], images.items()):
        rows = r["rounds"]
        rounds = [row["round"] for row in rows]
        lines = [("dice_instant", "o-", "instant stage (forest)"), ("dice_deep", "^-", "deep stage (U-Net)"),
                 ("dice_live", "-", "on screen"), ("dice_baseline", "s--", "ilastik-style baseline")]
        for key, style, label in lines:
            if key in rows[0]:
                ax.plot(rounds, [row[key] if row[key] is not None else np.nan for row in rows], style, ms=2.5,
                        lw=1, label=label)
        for stage, color in (("network", "tab:orange"), ("ensemble", "tab:green")):
            on = [row["round"] for row in rows if row["stage"] == stage]
            if on:
                ax.plot(on, [0.0] * len(on), "|", color=color, ms=6, transform=ax.get_xaxis_transform(),
                        label=f"{stage} on screen")
        ax.set_title(f"{name} {'x'.join(map(str, r['shape']))}", fontsize=8)
        ax.set_xlabel("round", fontsize=8)
        ax.tick_params(labelsize=7)
        low = np.nanmin([row.get("dice_deep") or np.nan for row in rows] + [row["dice_instant"] for row in rows])
        ax.set_ylim(max(0.0, min(0.8, float(low) - 0.02)), 1.0)
    axes[0][0].set_ylabel("Dice, unpainted voxels", fontsize=8)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="simulated rounds per image (default 20)")
    parser.add_argument("--train-seconds", type=float, default=10.0,
                        help="train_for between rounds (default 10, the issue's protocol)")
    parser.add_argument("--images", default="phantom,objects2d,nuclei_2d,nuclei_3d,brain",
                        help="comma-separated image names (also: coins, epi)")
    parser.add_argument("--no-deep", action="store_true", help="the instant stage only")
    parser.add_argument("--latency-strokes", type=int, default=20, help="strokes timed on 64x256x256 (0: skip)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the ilastik-style baseline")
    parser.add_argument("--seed", type=int, default=0, help="simulated user's seed")
    parser.add_argument("--trees", type=int, default=0, help="trees of the instant stage (default: InstantConfig's)")
    parser.add_argument("--plot", default="", help="also save Dice per round as this PNG")
    parser.add_argument("--large", default="", help="also time a large volume of this shape, e.g. 200,512,512")
    args = parser.parse_args()

    import platform

    out: dict = {"settings": vars(args), "cpus": os.cpu_count(), "machine": platform.machine(),
                 "load_average_start": os.getloadavg(), "images": {}}
    for name, (image, truth, spacing) in _images([n for n in args.images.split(",") if n]).items():
        out["images"][name] = run_quality(name, image, truth, spacing, args)
        print(f"{name}: done", file=sys.stderr, flush=True)
    if args.latency_strokes > 0:
        out["latency"] = run_latency(args, training=False)
        if not args.no_deep:
            out["latency_while_training"] = run_latency(args, training=True)
    if args.large:
        out["large"] = run_large(tuple(int(n) for n in args.large.split(",")), args.seed)
    out["load_average_end"] = os.getloadavg()
    if args.plot:
        plot(out, args.plot)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
