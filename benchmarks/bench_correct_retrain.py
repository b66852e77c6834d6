"""One correct-and-retrain cycle on the 3D phantom, through the core (no GUI).

The settings are the Train widget's defaults (UNet, features 16, depth 4, automatic
patch size, batch 2, default augmentation) on ``samples.phantom_3d()`` (48 x 96 x 96).
A briefly trained model predicts; the "user" corrects the prediction (here: the ground
truth in the slab where the prediction is worst); the cycle is what the Predict widget's
"Fine-tune and predict again" button runs: ``segmentation.task.retrain_on_corrections`` and
``init_model=model`` (30 steps, the widget's default), then predicting again with the
widget's default InferConfig. Prints JSON; target: cycle < 60 s on a 2-core CPU.

    python benchmarks/bench_correct_retrain.py [--device auto] [--steps 30] [--initial-steps 60]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default: auto)")
    parser.add_argument("--steps", type=int, default=30, help="fine-tuning steps (default: 30, as the widget)")
    parser.add_argument("--initial-steps", type=int, default=60,
                        help="steps of the initial training, 3 epochs (default: 60)")
    args = parser.parse_args()

    from napari_medml.config import InferConfig, OptimConfig, TrainConfig
    from napari_medml.engine.devices import resolve_device
    from napari_medml.segmentation.metrics import dice
    from napari_medml.samples import phantom_3d
    from napari_medml.segmentation.task import retrain_on_corrections, train

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
    gen = retrain_on_corrections(model, p.image, corrected, args.steps, spacing=p.spacing)
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
        **environment(resolve_device(args.device)),
    }, indent=2))


if __name__ == "__main__":
    main()
