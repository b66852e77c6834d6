"""Where the 2D nuclei Dice is lost: each nucleus's outline, predicted against drawn.

Trains the plan on the first half of the DSB2018 image as ``bench_plan_quality.py`` does
(``napari-medml train --max-minutes M --seed 0``, then ``predict``), or takes a
prediction of the second half that is already on disk (``--prediction``), and measures,
for each drawn nucleus of the second half, how far the predicted outline lies outside
(+) or inside (-) the drawn one: (added pixels - missed pixels) / outline pixels, in
pixels. Predicted pixels are given to the nearest drawn nucleus within 3 pixels
(``skimage.segmentation.expand_labels``). Prints one JSON object:

- ``width_error_px``: mean, standard deviation and quantiles over the nuclei;
- ``correlation``: of the width error with the nucleus's mean intensity, area and edge
  contrast (its mean minus the mean of a ring 1-2 pixels outside);
- ``dice``: as predicted; with the whole mask grown or shrunk by one pixel; and with the
  better of grown / as is / shrunk chosen per nucleus by the drawn outline (an oracle:
  what a 1-pixel, nucleus-by-nucleus boundary choice is worth).

    .venv/bin/python benchmarks/bench_boundary_width.py --minutes 4
    .venv/bin/python benchmarks/bench_boundary_width.py --prediction pred.npy
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_plan_quality  # noqa: E402
import real_data  # noqa: E402


def second_half_instances() -> tuple[np.ndarray, np.ndarray]:
    """The image and instance labels of the scored half (as ``bench_plan_quality.halves``)."""
    real = real_data.nuclei_2d()
    image, labels = np.asarray(real.image, np.float64), np.asarray(real.labels)
    cut = image.shape[0] // 2  # halves() cuts the longest axis; the image is square: axis 0
    return image[cut:], labels[cut:]


def outline_widths(pred: np.ndarray, instances: np.ndarray, image: np.ndarray) -> dict:
    """Per-nucleus width error of ``pred`` (2D, foreground > 0) against ``instances``."""
    from scipy import ndimage as ndi
    from skimage.segmentation import expand_labels

    fg, drawn = pred > 0, instances > 0
    owner = expand_labels(instances, 3)
    widths, means, areas, contrasts = [], [], [], []
    oracle = fg.copy()
    grown, shrunk = ndi.binary_dilation(fg), ndi.binary_erosion(fg)
    for i in np.unique(instances[drawn]):
        mine, nucleus = owner == i, instances == i
        outline = np.count_nonzero(nucleus & ~ndi.binary_erosion(nucleus))
        p = fg & mine
        widths.append((np.count_nonzero(p & ~nucleus) - np.count_nonzero(nucleus & ~p)) / outline)
        ring = ndi.binary_dilation(nucleus, iterations=2) & ~ndi.binary_dilation(nucleus) & ~drawn
        means.append(image[nucleus].mean())
        areas.append(np.count_nonzero(nucleus))
        contrasts.append(image[nucleus].mean() - image[ring].mean() if ring.any() else np.nan)
        choices = (p, grown & mine, shrunk & mine)
        best = min(choices, key=lambda c: np.count_nonzero((c ^ nucleus) & mine))
        oracle[mine] = best[mine]
    w = np.asarray(widths)

    def corr(values: list) -> float:
        v = np.asarray(values, float)
        ok = ~np.isnan(v)
        return round(float(np.corrcoef(v[ok], w[ok])[0, 1]), 3)

    def dice(mask: np.ndarray) -> float:
        return round(2.0 * np.count_nonzero(mask & drawn) / (np.count_nonzero(mask) + np.count_nonzero(drawn)), 4)

    return {"nuclei": int(w.size),
            "width_error_px": {"mean": round(float(w.mean()), 3), "sd": round(float(w.std()), 3),
                               "quantiles_5_25_50_75_95": [round(float(q), 2) for q in
                                                           np.percentile(w, [5, 25, 50, 75, 95])]},
            "correlation": {"mean_intensity": corr(means), "area": corr(areas), "edge_contrast": corr(contrasts)},
            "dice": {"as_predicted": dice(fg), "grown_1px": dice(grown), "shrunk_1px": dice(shrunk),
                     "per_nucleus_1px_oracle": dice(oracle)},
            "foreground_share": {"predicted": round(float(fg.mean()), 4), "drawn": round(float(drawn.mean()), 4)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="training time (default 4)")
    parser.add_argument("--prediction", type=Path, help="a prediction of the second half (.npy, 256x512) to "
                        "measure instead of training one")
    args = parser.parse_args()
    image, instances = second_half_instances()
    result: dict = {}
    if args.prediction is not None:
        pred = np.load(args.prediction)
        result["prediction"] = str(args.prediction)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            pred, info = bench_plan_quality.medml(bench_plan_quality.halves("nuclei_2d"), args.minutes, Path(tmp),
                                                  "after", None)
        result["training"] = {k: info[k] for k in ("steps", "models", "validation_dice", "train_s")}
        result["minutes"] = args.minutes
    if pred.shape != instances.shape:
        sys.exit(f"--prediction has shape {pred.shape}; the scored half is {instances.shape}")
    result.update(outline_widths(pred, instances, image))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
