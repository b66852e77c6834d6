"""One correct-and-retrain cycle on the 3D phantom, through the core (no GUI).

A briefly trained model predicts; the "user" corrects the prediction (here: the
ground truth in the slab where the prediction is worst); the cycle is fine-tuning on the
corrected labels (fit(..., init_model=model)) plus predicting again, as the Predict
widget's "Fine-tune and predict again" button does. Prints JSON; target: cycle < 60 s on
a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np

from napari_medml.config import DataConfig, InferConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.metrics import dice
from napari_medml.samples import phantom_3d
from napari_medml.train import train

FINETUNE_STEPS = 30


def main() -> None:
    p = phantom_3d(0)
    config = TrainConfig(
        data=DataConfig(patch_size=(16, 64, 64), batch_size=2),
        model=ModelConfig(features=8, depth=3),
        optim=OptimConfig(epochs=2, steps_per_epoch=20, learning_rate=3e-3),
        device="cpu",
    )
    infer = InferConfig(overlap=0.25, device="cpu")
    t0 = time.perf_counter()
    model = train(p.image, p.labels, config, spacing=p.spacing)
    initial_train_s = time.perf_counter() - t0
    before = model.predict(p.image, spacing=p.spacing, config=infer).labels

    # The correction: ground truth in the 8-slice slab where the prediction is worst.
    errors = [(before[z:z + 8] != p.labels[z:z + 8]).sum() for z in range(0, len(p.labels), 8)]
    z = 8 * int(np.argmax(errors))
    corrected = before.copy()
    corrected[z:z + 8] = p.labels[z:z + 8]

    tune = dataclasses.replace(
        model.config,
        data=dataclasses.replace(model.config.data, val_fraction=0.0),
        optim=dataclasses.replace(model.config.optim, epochs=1, steps_per_epoch=FINETUNE_STEPS,
                                  schedule="constant"),
    )
    t1 = time.perf_counter()
    tuned = train(p.image, corrected, tune, spacing=p.spacing, init_model=model)
    t2 = time.perf_counter()
    after = tuned.predict(p.image, spacing=p.spacing, config=infer).labels
    t3 = time.perf_counter()

    def rounded(d: dict) -> dict:
        return {str(k): (None if v is None else round(float(v), 4)) for k, v in d.items()}

    print(json.dumps({
        "benchmark": "correct_retrain",
        "image_shape": list(p.image.shape),
        "finetune_steps": FINETUNE_STEPS,
        "initial_train_s": round(initial_train_s, 2),
        "finetune_s": round(t2 - t1, 2),
        "predict_s": round(t3 - t2, 2),
        "cycle_s": round(t3 - t1, 2),
        "target_cycle_s": 60,
        "dice_before": rounded(dice(before, p.labels)),
        "dice_after": rounded(dice(after, p.labels)),
    }, indent=2))


if __name__ == "__main__":
    main()
