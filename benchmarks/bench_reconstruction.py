"""Is the pretraining reconstruction a denoiser? Its distance to the noise-free phantom.

Pretrains (masked blocks + noise, MSE) on four ``samples.phantom_3d`` volumes (seeds 0-3,
48 x 96 x 96), reconstructs seed 0 (seen) and seed 7 (unseen) and prints JSON: the mean
squared difference to the noise-free image (each tissue class at its median intensity) of
the input, of the reconstruction and of a Gaussian blur of about one voxel (sigma 0.5, 1, 1
voxels, i.e. 1 mm), away from class edges (2 voxels), where only the noise differs.

    python benchmarks/bench_reconstruction.py [--steps 1000]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="pretraining steps (default: 1000)")
    args = parser.parse_args()
    from scipy import ndimage as ndi

    from napari_medml import api
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from napari_medml.samples import phantom_3d

    vols = [phantom_3d(s) for s in range(4)]
    cfg = TrainConfig(task="pretraining", data=DataConfig(spatial_dims=3, batch_size=2, patch_size=(32, 64, 64)),
                      model=ModelConfig(channels=16, depth=4), augment=AugmentConfig.none(), device="cpu",
                      optim=OptimConfig(epochs=max(1, args.steps // 25), steps_per_epoch=25, schedule="constant"))
    t = time.perf_counter()
    model = api.train([v.image for v in vols], None, cfg, spacing=vols[0].spacing)
    pretrain_s = time.perf_counter() - t
    out = {}
    for seed in (0, 7):
        v = phantom_3d(seed)
        img, lab = v.image.astype(np.float32), v.labels
        clean = np.zeros_like(img)
        inner = ndi.binary_erosion(np.ones(lab.shape, bool), iterations=2)
        for c in np.unique(lab):
            clean[lab == c] = np.median(img[lab == c])
            inner &= ~(ndi.binary_dilation(lab == c, iterations=2) & ~ndi.binary_erosion(lab == c, iterations=2))
        candidates = {"input": img, "reconstruction": model.reconstruct(img, spacing=v.spacing).image,
                      "gaussian_1mm": ndi.gaussian_filter(img, (0.5, 1.0, 1.0))}
        out[f"seed_{seed}"] = {k: round(float(np.mean((a[inner] - clean[inner]) ** 2)), 5)
                               for k, a in candidates.items()}
    print(json.dumps({"benchmark": "reconstruction", "pretrain_steps": args.steps, "pretrain_s": round(pretrain_s, 1),
                      "mse_to_noise_free_away_from_edges": out}, indent=2))


if __name__ == "__main__":
    main()
