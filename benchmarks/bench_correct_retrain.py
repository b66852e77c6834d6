"""One correct-and-retrain cycle, through the core (no GUI).

The settings are the Train widget's defaults (UNet, features 16, depth 4, automatic
patch size, batch 2, default augmentation) on ``samples.phantom_3d()`` (48 x 96 x 96).
A briefly trained model predicts; the "user" corrects the prediction (here: the ground
truth in the slab where the prediction is worst); the cycle is what the Predict widget's
"Fine-tune and predict again" button runs: ``segmentation.corrections.retrain_on_corrections``
with the prediction as it was and the model's training data (30 steps, the widget's
default), then predicting again with the widget's default InferConfig. Prints JSON;
target: cycle < 60 s on a 2-core CPU.

``--real``: the real 2D nuclei (``real_data.nuclei_2d``, 512 x 512) instead. A U-Net is
trained on the left half (300 steps); its prediction of the whole image gets the truth
within 2 pixels of its errors in rows 0-159 of the right half (what a brush paints); the
Dice is reported on the whole image, the left half, the corrected rows and the right
half's unreviewed rest, after fine-tuning with and without the training data (a model
loaded from a bundle has none); then three rounds as the widget runs them (``rounds``).

    python benchmarks/bench_correct_retrain.py [--device auto] [--steps 30] [--initial-steps 60] [--seeds 5]
                                               [--real]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
from _common import environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default: auto)")
    parser.add_argument("--steps", type=int, default=30, help="fine-tuning steps (default: 30, as the widget)")
    parser.add_argument("--initial-steps", type=int, default=60,
                        help="steps of the initial training, 3 epochs (default: 60)")
    parser.add_argument("--real", action="store_true", help="the real 2D nuclei (see the description)")
    parser.add_argument("--seeds", type=int, default=5,
                        help="fine-tuning seeds averaged (default: 5; 1: the cycle alone)")
    args = parser.parse_args()
    if args.real:
        return real_nuclei(args)

    from napari_medml.config import InferConfig, OptimConfig, TrainConfig
    from napari_medml.engine.devices import resolve_device
    from napari_medml.segmentation.metrics import dice
    from napari_medml.samples import phantom_3d
    from napari_medml.segmentation.corrections import labelled_samples, retrain_on_corrections
    from napari_medml.segmentation.task import train

    p = phantom_3d(0)
    config = TrainConfig(optim=OptimConfig(epochs=3, steps_per_epoch=max(1, args.initial_steps // 3),
                                           learning_rate=3e-3), device=args.device)
    infer = InferConfig(overlap=0.25, device=args.device)  # the Predict widget's default overlap
    t0 = time.perf_counter()
    model = train(p.image, p.labels, config, spacing=p.spacing)
    initial_train_s = time.perf_counter() - t0
    before = model.predict(p.image, spacing=p.spacing, config=infer).labels

    # The correction: ground truth in the 8-slice slab where the prediction is worst.
    errors = [(before[z:z + 8] != p.labels[z:z + 8]).sum() for z in range(0, len(p.labels), 8)]
    z = 8 * int(np.argmax(errors))
    corrected = before.copy()
    corrected[z:z + 8] = p.labels[z:z + 8]

    t1 = time.perf_counter()
    gen = retrain_on_corrections(model, p.image, corrected, args.steps, spacing=p.spacing, predicted=before,
                                 replay=labelled_samples(p.image, p.labels, p.spacing))
    first_step_s = None
    while True:
        try:
            report = next(gen)
        except StopIteration as done:
            tuned = done.value
            break
        if first_step_s is None:
            first_step_s = time.perf_counter() - t1  # setup + one step
    t2 = time.perf_counter()
    after = tuned.predict(p.image, spacing=p.spacing, config=infer).labels
    t3 = time.perf_counter()

    def rounded(d: dict) -> dict:
        return {str(k): (None if v is None else round(float(v), 4)) for k, v in d.items()}

    cycle = t3 - t1
    print(json.dumps({
        "benchmark": "correct_retrain",
        "image_shape": list(p.image.shape),
        "patch_size": list(model.patch_size), "features": model.config.model.channels,
        "depth": model.config.model.depth, "batch": model.config.data.batch_size,
        "finetune_steps": args.steps,
        "initial_train_s": round(initial_train_s, 2),
        "finetune_s": round(t2 - t1, 2),
        "finetune_first_step_s": round(first_step_s or 0.0, 2),
        "finetune_s_per_step": round(report.elapsed_s / args.steps, 3),
        "predict_s": round(t3 - t2, 2),
        "cycle_s": round(cycle, 2),
        "target_cycle_s": 60, "pass": cycle < 60,
        "dice_before": rounded(dice(before, p.labels)),
        "dice_after": rounded(dice(after, p.labels)),
        **more_seeds(args, model, p, corrected, before, infer),
        **environment(resolve_device(args.device)),
    }, indent=2))


def more_seeds(args: argparse.Namespace, model: Any, p: Any, corrected: np.ndarray, before: np.ndarray,
               infer: Any) -> dict:
    """The mean and lowest Dice after fine-tuning with seeds 1 .. --seeds - 1 as well (the
    patch draws and augmentation: a small class such as the lesion varies by several points)."""
    from dataclasses import replace

    from napari_medml.engine.fit import run_to_end
    from napari_medml.segmentation.corrections import labelled_samples, retrain_on_corrections
    from napari_medml.segmentation.metrics import dice

    if args.seeds < 2:
        return {}
    runs = []
    for seed in range(args.seeds):
        seeded = replace(model.config, seed=seed)
        model.config = seeded
        tuned = run_to_end(retrain_on_corrections(model, p.image, corrected, args.steps, spacing=p.spacing,
                                                  predicted=before, replay=labelled_samples(p.image, p.labels,
                                                                                            p.spacing)))
        runs.append(dice(tuned.predict(p.image, spacing=p.spacing, config=infer).labels, p.labels))
    return {"seeds": args.seeds,
            "dice_after_mean": {str(k): round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]},
            "dice_after_lowest": {str(k): round(float(min(r[k] for r in runs)), 4) for k in runs[0]}}


def real_nuclei(args: argparse.Namespace) -> None:
    from dataclasses import replace

    import torch
    from real_data import INSTALL, available, nuclei_2d
    from scipy import ndimage

    from napari_medml.config import DataConfig, OptimConfig, TrainConfig
    from napari_medml.engine.fit import run_to_end
    from napari_medml.segmentation.corrections import labelled_samples, retrain_on_corrections
    from napari_medml.segmentation.task import train

    if "nuclei_2d" not in available():
        raise SystemExit(f"the real images are not installed: {INSTALL}")
    torch.manual_seed(0)
    r = nuclei_2d()
    image, truth = r.image.astype(np.float32), (r.labels > 0).astype(np.uint8)
    config = TrainConfig(data=DataConfig(spatial_dims=2, val_fraction=0.0), device=args.device, seed=0,
                         optim=OptimConfig(epochs=1, steps_per_epoch=300, optimizer="adamw", learning_rate=0.002))
    t0 = time.perf_counter()
    model = train(image[:, :256], truth[:, :256], config)
    train_s = time.perf_counter() - t0
    before = model.predict(image).labels
    strip = np.zeros(truth.shape, bool)
    strip[:160, 256:] = True
    painted = ndimage.binary_dilation(strip & (before != truth), np.ones((5, 5), bool)) & strip
    corrected = before.copy()
    corrected[painted] = truth[painted]

    def scores(labels: np.ndarray) -> dict:
        def dice(a: np.ndarray, b: np.ndarray) -> float:
            a, b = a > 0, b > 0
            return round(float(2 * (a & b).sum() / (a.sum() + b.sum())), 4)

        return {"whole": dice(labels, truth), "left_half": dice(labels[:, :256], truth[:, :256]),
                "corrected_rows": dice(labels[:160, 256:], truth[:160, 256:]),
                "unreviewed_rest": dice(labels[160:, 256:], truth[160:, 256:])}

    out = {"benchmark": "correct_retrain_real_nuclei_2d", "initial_train_s": round(train_s, 1),
           "painted_share_of_corrected_rows": round(float(painted.sum() / strip.sum()), 3),
           "finetune_steps": args.steps, "finetune_seeds": args.seeds, "dice_before": scores(before)}
    training = labelled_samples(image[:, :256], truth[:, :256])
    designs = {"with_training_data": dict(predicted=before, replay=training),  # a model trained in Train
               "without_training_data": dict(predicted=before),  # a model loaded from a bundle
               "prediction_taken_whole": {}}  # every voxel of the corrected layer as a label
    for name, kwargs in designs.items():
        runs, t1 = [], time.perf_counter()
        for seed in range(args.seeds):  # the fine-tuning's patch draws and augmentation
            model.config = replace(model.config, seed=seed)
            tuned = run_to_end(retrain_on_corrections(model, image, corrected, args.steps, **kwargs))
            runs.append(scores(tuned.predict(image).labels))
        out[f"finetune_and_predict_s_{name}"] = round((time.perf_counter() - t1) / args.seeds, 1)
        out[f"dice_after_{name}"] = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}
        out[f"dice_after_{name}_min"] = {k: min(r[k] for r in runs) for k in runs[0]}
    model.config = replace(model.config, seed=0)
    out["rounds"] = rounds(model, image, truth, training, args.steps)
    print(json.dumps(out, indent=2))


def rounds(model: Any, image: np.ndarray, truth: np.ndarray, training: list, steps: int) -> list[dict]:
    """Three rounds as the Predict widget runs them (``correction_round``): round k paints the
    truth within 2 pixels of the errors in rows 160k .. 160k + 159 of the right half of the
    layer it got back. Dice of the network's own prediction (the 3 row bands of the right
    half, the left half) and of the layer shown (which keeps the edits)."""
    from scipy import ndimage

    from napari_medml.engine.fit import run_to_end
    from napari_medml.segmentation.correction_round import correction_round

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a > 0, b > 0
        return round(float(2 * (a & b).sum() / (a.sum() + b.sum())), 4)

    def bands(labels: np.ndarray) -> dict:
        out = {"left_half": dice(labels[:, :256], truth[:, :256])}
        for k in range(3):
            rows = slice(160 * k, 160 * (k + 1) if k < 2 else None)
            out[f"right_rows_{rows.start}+"] = dice(labels[rows, 256:], truth[rows, 256:])
        return out

    layer = model.predict(image).labels  # the network's answer, then with the edits kept
    shown, edited = layer.copy(), None
    report, replay = [{"round": 0, "network": bands(layer)}], list(training)
    for k in range(3):
        strip = np.zeros(truth.shape, bool)
        strip[160 * k:160 * (k + 1), 256:] = True
        painted = ndimage.binary_dilation(strip & (layer != truth), np.ones((5, 5), bool)) & strip
        layer[painted] = truth[painted]  # painted into the layer, as napari's brush does
        result = run_to_end(correction_round(model, image, layer, shown, steps, axes="YX", spacing=(1.0, 1.0),
                                             edited=edited, replay=replay))
        model, layer, shown, edited = result.model, result.prediction.labels, result.as_predicted, result.edited
        replay = replay + result.learned
        report.append({"round": k + 1, "painted_pixels": int(painted.sum()),
                       "network": bands(model.predict(image).labels), "layer": bands(layer)})
    return report


if __name__ == "__main__":
    main()
