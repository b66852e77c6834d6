"""Overhead of ``Model.predict`` over calling MONAI's sliding window directly.

Both sides use the same network, roi (patch size), overlap, blending mode,
sw_batch_size and device (with autocast on CUDA, as ``Model.predict`` does). The
baseline is what one would write by hand: ``sliding_window_inference`` on the
array, then the channel argmax. ``Model.predict`` additionally normalizes, takes
the softmax per window, maps channels to class ids and reports progress.

Target: median(predict) / median(direct) <= 1.05. Prints JSON on stdout.

    python benchmarks/bench_predict_overhead.py [--size 128] [--patch 64] [--repeats 5] [--device auto]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

from _common import environment, make_model, make_volume, sync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="volume edge length in voxels (default: 128)")
    parser.add_argument("--patch", type=int, default=64, help="sliding-window roi edge (default: 64)")
    parser.add_argument("--features", type=int, default=16, help="UNet width (default: 16)")
    parser.add_argument("--overlap", type=float, default=0.5, help="window overlap (default: 0.5)")
    parser.add_argument("--sw-batch-size", type=int, default=4, help="windows per forward pass (default: 4)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (default: 5)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default: auto)")
    args = parser.parse_args()

    import torch
    from monai.inferers import sliding_window_inference

    from napari_medml.config import InferConfig
    from napari_medml.engine.devices import amp_enabled, resolve_device

    device = resolve_device(args.device)
    model = make_model(patch=args.patch, features=args.features)
    image = make_volume(args.size)
    config = InferConfig(overlap=args.overlap, sw_batch_size=args.sw_batch_size, device=args.device)
    net = model.network.to(device).eval()
    roi = model.patch_size
    amp = amp_enabled(device, config.amp)

    def direct() -> None:
        ctx = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            x = torch.from_numpy(image)[None, None].to(device)
            out = sliding_window_inference(x, roi, args.sw_batch_size, net, overlap=args.overlap,
                                           mode=config.blend, progress=False)
            out.argmax(1).to(torch.uint8).cpu().numpy()

    def predict() -> None:
        model.predict(image, config=config)

    times: dict[str, list[float]] = {"predict": [], "direct": []}
    for run in (predict, direct):  # warm-up: allocator, cuDNN autotune, lazy imports
        run()
    for _ in range(args.repeats):  # interleaved, so drift affects both alike
        for name, run in (("predict", predict), ("direct", direct)):
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["predict"] / med["direct"]
    print(json.dumps({
        "benchmark": "predict_overhead",
        "volume": [args.size] * 3, "roi": list(roi), "overlap": args.overlap,
        "sw_batch_size": args.sw_batch_size, "mode": config.blend, "network": "unet",
        "features": args.features, "repeats": args.repeats,
        "predict_s": times["predict"], "direct_s": times["direct"],
        "median_predict_s": med["predict"], "median_direct_s": med["direct"],
        "ratio": ratio, "target": "<= 1.05", "pass": ratio <= 1.05,
        **environment(device),
    }, indent=2))


if __name__ == "__main__":
    main()
