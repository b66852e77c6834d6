"""Where the pretraining's reconstruction error (the anomaly map) is high: a bright cube in a brain MRI.

Pretrains (masked blocks + noise, MSE) on three 32 x 64 x 64 crops of the MNI152 T1 at 2 mm
(``real_data.brain_mri()``, every second voxel), then maps the reconstruction error of a
fourth crop, unseen, into which an 8 x 8 x 8 cube at 1.5 times the image's maximum was put.
Prints JSON: the mean error inside the cube, on its one-voxel rim, in air and in the other
tissue, the image's median, and the share of the cube's and the rim's voxels above the
image's 99th percentile.

    python benchmarks/bench_anomaly.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="pretraining steps (default: 300)")
    args = parser.parse_args()
    from scipy import ndimage as ndi

    import real_data
    from napari_medml import api
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig

    brain = real_data.brain_mri().image[::2, ::2, ::2].astype(np.float32)
    y, x = slice(20, 84), slice(15, 79)
    crops = [brain[z0:z0 + 32, y, x] for z0 in (10, 30, 45)]
    test = brain[62:94, y, x].copy()
    cube = np.zeros(test.shape, bool)
    cube[10:18, 30:38, 30:38] = True
    test[cube] = 1.5 * test.max()
    cfg = TrainConfig(task="pretraining", data=DataConfig(spatial_dims=3, batch_size=2, patch_size=(32, 64, 64)),
                      model=ModelConfig(channels=16, depth=4), augment=AugmentConfig.none(), device="cpu", seed=0,
                      optim=OptimConfig(epochs=max(1, args.steps // 25), steps_per_epoch=25))
    t = time.perf_counter()
    model = api.train(crops, None, cfg, spacing=(2.0, 2.0, 2.0))
    pretrain_s = time.perf_counter() - t
    error = np.asarray(model.reconstruct(test, spacing=(2.0, 2.0, 2.0)).error)
    rim = ndi.binary_dilation(cube) & ~cube
    air = (test <= 0.05 * brain.max()) & ~rim
    tissue = ~air & ~cube & ~rim
    p99 = float(np.percentile(error, 99))

    def mean(mask: np.ndarray) -> float:
        return round(float(error[mask].mean()), 3)

    print(json.dumps({"benchmark": "anomaly", "pretrain_steps": args.steps, "pretrain_s": round(pretrain_s, 1),
                      "final_val_loss": (model.history[-1] if model.history else {}).get("val_loss"),
                      "mean_error": {"cube": mean(cube), "cube_rim": mean(rim), "air": mean(air),
                                     "tissue": mean(tissue), "image_median": round(float(np.median(error)), 3)},
                      "share_above_p99": {"cube": round(float((error[cube] > p99).mean()), 3),
                                          "cube_rim": round(float((error[rim] > p99).mean()), 3)}}, indent=2))


if __name__ == "__main__":
    main()
