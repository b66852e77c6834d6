"""Classical instance baselines, and what the learned target can represent, as JSON.

The numbers a learned instance model must beat: Otsu + connected components and
Otsu + distance-transform watershed from peak seeds (``instances.classical.
classical_instances``), the watershed's parameters tuned by grid search on a
training part and scored on a held-out part with the DSB 2018 metrics
(``instances.metrics``: F1 and average precision at IoU 0.5, mean AP over
0.5-0.95, counts). Beside them, the round trip of the learned target
(``instances.targets.instance_target`` -> ``instances_from_outputs``) on the true
labels, exact and blurred: an upper bound of what a network learning that target
can reach.

Data:
* ``touching_objects_2d``: tuned on seeds 3-5, scored on seeds 0-2.
* Real nuclei, if a package installed here ships them with instance masks:
  StarDist's ``stardist/data/images`` holds ``img2d.tif``/``mask2d.tif`` (one
  512 x 512 fluorescence image from the Data Science Bowl 2018 training set,
  Caicedo et al., Nature Methods 2019) and ``img3d.tif``/``mask3d.tif`` (a
  synthetic 3D nuclei volume). They are read from disk with tifffile (stardist
  itself is not imported); tuned on the left half (X), scored on the right half.
  Absent (``"available": false``) when stardist is not installed.

    python benchmarks/bench_instances_classical.py
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

GRID = {"smooth": (0.0, 1.0, 2.0), "min_distance": (3.0, 5.0, 7.0, 9.0, 12.0),
        "seed_height": (0.0, 1.0), "min_size": (0.0, 20.0)}


def score(true_list, pred_list) -> dict:
    """Pooled DSB metrics over several images (StarDist's by_image=False)."""
    from napari_medml.instances.metrics import instance_scores, sum_matchings

    pooled = sum_matchings(instance_scores(t, p) for t, p in zip(true_list, pred_list))
    m = pooled.at(0.5)
    return {"f1_at_0.5": round(m.f1, 4), "ap_at_0.5": round(m.average_precision, 4),
            "mean_ap_0.5_0.95": round(pooled.mean_average_precision, 4),
            "n_true": m.n_true, "n_pred": m.n_pred, "tp": m.tp, "fp": m.fp, "fn": m.fn}


def classical(images, spacing, params) -> list[np.ndarray]:
    from napari_medml.instances.classical import classical_instances

    return [classical_instances(im, spacing, params) for im in images]


def tune(images, labels, spacing) -> tuple[object, dict]:
    """Grid search of the watershed baseline on training images, by pooled AP@0.5."""
    from napari_medml.instances.classical import ClassicalParams

    best, best_score = None, None
    for values in itertools.product(*GRID.values()):
        params = ClassicalParams(method="watershed", **dict(zip(GRID, values)))
        s = score(labels, classical(images, spacing, params))
        if best_score is None or (s["ap_at_0.5"], s["f1_at_0.5"]) > (best_score["ap_at_0.5"], best_score["f1_at_0.5"]):
            best, best_score = params, s
    return best, best_score


def round_trip(labels, spacing) -> dict:
    """Learned target -> post-processing on the true labels: exact, and blurred by 1 and 2 physical units."""
    from napari_medml.instances.postprocess import instances_from_outputs
    from napari_medml.instances.targets import instance_target

    out = {}
    for sigma in (0.0, 1.0, 2.0):
        preds = []
        for lab in labels:
            t = instance_target(lab, spacing)
            fg = (t.classes > 0).astype(np.float32)
            dist = t.distance
            if sigma:
                fg = ndi.gaussian_filter(fg, [sigma / s for s in spacing])
                dist = ndi.gaussian_filter(dist, [sigma / s for s in spacing])
            preds.append(instances_from_outputs(fg, dist, spacing))
        out["exact" if not sigma else f"blurred_sigma_{sigma:g}"] = score(labels, preds)
    return out


def compare(name, train_images, train_labels, test_images, test_labels, spacing) -> dict:
    from napari_medml.instances.classical import ClassicalParams

    t0 = time.perf_counter()
    params, train_score = tune(train_images, train_labels, spacing)
    tune_s = time.perf_counter() - t0
    connected = ClassicalParams(method="connected", smooth=params.smooth, min_size=params.min_size)
    return {
        "data": name, "spacing": list(spacing),
        "otsu_connected_components": score(test_labels, classical(test_images, spacing, connected)),
        "otsu_distance_watershed_tuned": {
            **score(test_labels, classical(test_images, spacing, params)),
            "params": {k: getattr(params, k) for k in GRID},
            "train_score": train_score, "tune_s": round(tune_s, 2)},
        "learned_target_round_trip": round_trip(test_labels, spacing),
    }


def stardist_images() -> Path | None:
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
    return folder if (folder / "mask2d.tif").is_file() else None


def halves(image: np.ndarray, labels: np.ndarray):
    """Left and right halves along X; objects cut by the split stay as their parts."""
    from skimage.segmentation import relabel_sequential

    mid = image.shape[-1] // 2
    left = (image[..., :mid], relabel_sequential(labels[..., :mid])[0])
    right = (image[..., mid:], relabel_sequential(labels[..., mid:])[0])
    return left, right


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    from napari_medml.samples import touching_objects_2d

    results = []
    train = [touching_objects_2d(s) for s in (3, 4, 5)]
    test = [touching_objects_2d(s) for s in (0, 1, 2)]
    results.append(compare("touching_objects_2d (tune seeds 3-5, score seeds 0-2)",
                           [s.image for s in train], [s.labels for s in train],
                           [s.image for s in test], [s.labels for s in test], (1.0, 1.0)))
    folder = stardist_images()
    if folder is None:
        results.append({"data": "real nuclei (stardist/data/images)", "available": False})
    else:
        import tifffile

        for name, dims in (("2d", 2), ("3d", 3)):
            image = tifffile.imread(folder / f"img{name}.tif").astype(np.float32)
            labels = tifffile.imread(folder / f"mask{name}.tif").astype(np.int32)
            (tr_im, tr_lab), (te_im, te_lab) = halves(image, labels)
            title = ("DSB 2018 nuclei, stardist img2d.tif 512 x 512" if dims == 2 else
                     "synthetic 3D nuclei, stardist img3d.tif 31 x 61 x 57 (spacing unknown: 1)")
            results.append(compare(f"{title} (tune left half, score right half)",
                                   [tr_im], [tr_lab], [te_im], [te_lab], (1.0,) * dims))
    print(json.dumps({"benchmark": "instances_classical", "grid": GRID, "results": results}, indent=2))


if __name__ == "__main__":
    main()
