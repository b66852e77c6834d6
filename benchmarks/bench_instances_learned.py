"""Learned instances (``task="instances"``) against the classical baseline, as JSON.

For each data set the network is trained on one part for a fixed time budget
(``--max-minutes``, default 4; ``--budget planned``, the default, plans the run from the
data and the budget as ``napari-medml train --task instances`` does; the run holds out a fifth of its training part to pick
the best epoch and tune the post-processing) and scored on the other part, never
seen in training. The classical baseline (Otsu, then a distance-transform watershed
from peak seeds) has its parameters tuned by grid search on the same training part
(``bench_instances_classical.tune``). Scores are pooled over the scored images
(StarDist's ``matching_dataset(by_image=False)``): F1 and AP = TP/(TP+FP+FN) at IoU 0.5,
and the mean AP over IoU 0.5, 0.55, ..., 0.9.

Data:
* ``touching_objects_2d``: trained on seeds 3-5, scored on seeds 0-2 (256 x 256 each).
* ``nuclei_2d`` (``benchmarks/real_data.py``; one 512 x 512 fluorescence image of the
  Data Science Bowl 2018 training set with instance masks): trained on the left half,
  scored on the right half.
* ``nuclei_3d`` (31 x 61 x 57 with instance masks): trained on the left half along X,
  scored on the right half.

    python benchmarks/bench_instances_learned.py [--max-minutes 4] [--data sample nuclei_2d nuclei_3d]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

# width, depth, patch, batch per data set: small objects need a full-resolution output
SETTINGS = {
    "sample": dict(spatial_dims=2, channels=16, depth=3, patch=(64, 64), batch=8, lr=3e-3),
    "nuclei_2d": dict(spatial_dims=2, channels=16, depth=4, patch=(96, 96), batch=8, lr=3e-3),
    "nuclei_3d": dict(spatial_dims=3, channels=16, depth=3, patch=(16, 32, 24), batch=4, lr=3e-3),
}


def score(true_list, pred_list) -> dict:
    """Pooled instance metrics, AP over IoU 0.5-0.9 (the issue's list)."""
    from napari_medml.instances.metrics import instance_scores, sum_matchings

    pooled = sum_matchings(instance_scores(t, p) for t, p in zip(true_list, pred_list))
    m = pooled.at(0.5)
    return {"f1_at_0.5": round(m.f1, 4), "ap_at_0.5": round(m.average_precision, 4),
            "mean_ap_0.5_0.9": round(pooled.mean_average_precision, 4),
            "n_true": m.n_true, "n_pred": m.n_pred, "tp": m.tp, "fp": m.fp, "fn": m.fn}


def _config(name: str, steps: int, spe: int, minutes: float | None):
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig

    s = SETTINGS[name]
    return TrainConfig(
        task="instances",
        data=DataConfig(spatial_dims=s["spatial_dims"], patch_size=s["patch"], batch_size=s["batch"],
                        val_fraction=0.2, normalization="percentile"),
        model=ModelConfig(channels=s["channels"], depth=s["depth"]),
        optim=OptimConfig(epochs=max(1, steps // spe), steps_per_epoch=spe, learning_rate=s["lr"],
                          max_minutes=minutes),
        augment=AugmentConfig(), device="cpu", seed=0)


def _cpu_s() -> float:
    """CPU seconds of this process per torch thread: the wall time an idle machine would take."""
    import torch

    return time.process_time() / torch.get_num_threads()


def learned(name: str, train_images, train_labels, test_images, test_labels, spacing, minutes: float,
            budget: str) -> dict:
    """Train for ``minutes``: of wall time (``budget="wall"``, the engine's time limit), or of
    CPU time per torch thread (``"cpu"``: what the run would take alone on this machine; a
    calibration run of 20 steps sets the number of steps so that the schedule decays over them)."""
    import torch

    import napari_medml
    from napari_medml.engine.reports import StopToken

    one = len(train_images) == 1
    images, labels = (train_images[0], train_labels[0]) if one else (train_images, train_labels)
    spe = 25
    plan = None
    if budget == "planned":  # what `napari-medml train --task instances --max-minutes M --seed 0` does
        from napari_medml.config import TrainConfig
        from napari_medml.segmentation.planning import plan_run

        base = TrainConfig(task="instances", optim=replace(TrainConfig().optim, max_minutes=minutes),
                           data=replace(TrainConfig().data, spatial_dims=SETTINGS[name]["spatial_dims"]),
                           device="cpu", seed=0)
        plan = plan_run(images, labels, base, spacing=spacing, keep=[])
        config = plan.apply(base)
    elif budget == "wall":
        config = _config(name, 10_000 * spe, spe, minutes)
    else:
        calibration = _config(name, 20, 20, None)
        calibration = replace(calibration, data=replace(calibration.data, val_fraction=0.0))
        marks = []  # (cpu, step) at each report before the epoch end (its tuning pass is not a step)
        for report in napari_medml.fit(images, labels, calibration, spacing=spacing):
            if not report.epoch_end:
                marks.append((_cpu_s(), report.step))
        (c_first, s_first), (c_last, s_last) = marks[1], marks[-1]
        per_step = (c_last - c_first) / max(1, s_last - s_first)
        steps = int(minutes * 60 * 0.9 / per_step)  # 10 % for validation at the epoch ends
        config = _config(name, steps, spe, None)
    t0, c0 = time.perf_counter(), _cpu_s()
    stop = StopToken()
    gen = napari_medml.fit(images, labels, config, spacing=spacing, stop=stop)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            model = done.value
            break
        if budget == "cpu" and _cpu_s() - c0 >= minutes * 60:
            stop.stop()
    train_s, train_cpu = time.perf_counter() - t0, _cpu_s() - c0
    t1 = time.perf_counter()
    preds = [model.predict(im, spacing=spacing).labels for im in test_images]
    s = SETTINGS[name] if plan is None else {"plan": plan.to_dict()["reasons"]}
    return {**score(test_labels, preds), "budget": budget, "train_wall_s": round(train_s, 1),
            "train_cpu_s_per_thread": round(train_cpu, 1), "predict_s": round(time.perf_counter() - t1, 2),
            "steps": model.history[-1]["step"] if model.history else 0, "planned_steps":
            config.optim.epochs * config.optim.steps_per_epoch,
            "best_epoch": model.provenance.get("best_epoch"), "params": model.params.to_dict(),
            "validation": model.provenance.get("post_processing"), "torch_threads": torch.get_num_threads(),
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}}


def classical_baseline(train_images, train_labels, test_images, test_labels, spacing) -> dict:
    from bench_instances_classical import GRID, classical, tune

    params, train_score = tune(train_images, train_labels, spacing)
    out = score(test_labels, classical(test_images, spacing, params))
    return {**out, "params": {k: getattr(params, k) for k in GRID}}


def data_sets(names):
    from bench_instances_classical import halves

    if "sample" in names:
        from napari_medml.samples import touching_objects_2d

        train = [touching_objects_2d(s) for s in (3, 4, 5)]
        test = [touching_objects_2d(s) for s in (0, 1, 2)]
        yield ("sample", "touching_objects_2d (train seeds 3-5, score seeds 0-2)",
               [s.image for s in train], [s.labels for s in train], [s.image for s in test],
               [s.labels for s in test], (1.0, 1.0))
    import real_data

    for key, load, title in (("nuclei_2d", real_data.nuclei_2d, "DSB 2018 nuclei 512 x 512"),
                             ("nuclei_3d", real_data.nuclei_3d, "3D nuclei 31 x 61 x 57")):
        if key not in names:
            continue
        data = load()
        (tr_im, tr_lab), (te_im, te_lab) = halves(data.image.astype(np.float32), data.labels.astype(np.int32))
        yield key, f"{title} (train left half, score right half)", [tr_im], [tr_lab], [te_im], [te_lab], data.spacing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-minutes", type=float, default=4.0, help="training time budget per data set")
    parser.add_argument("--budget", choices=("planned", "wall", "cpu"), default="planned",
                        help="planned: the command line's run (the plan from the data and the time limit, "
                        "default); wall: this script's fixed settings and the engine's time limit; cpu: fixed "
                        "settings, CPU time per torch thread (a shared, loaded machine: what the run would "
                        "take alone)")
    parser.add_argument("--data", nargs="+", default=["sample", "nuclei_2d", "nuclei_3d"],
                        choices=["sample", "nuclei_2d", "nuclei_3d"])
    args = parser.parse_args()
    results = []
    for key, title, tr_im, tr_lab, te_im, te_lab, spacing in data_sets(args.data):
        results.append({"data": title,
                        "classical_otsu_watershed_tuned": classical_baseline(tr_im, tr_lab, te_im, te_lab, spacing),
                        "learned_instances": learned(key, tr_im, tr_lab, te_im, te_lab, spacing, args.max_minutes,
                                                             args.budget)})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # partial results as they come
    print(json.dumps({"benchmark": "instances_learned", "max_minutes": args.max_minutes, "budget": args.budget,
                      "load_average_1min": round(os.getloadavg()[0], 2), "cores": os.cpu_count(),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
