"""Peak memory of ``Model.predict`` on a large volume: labels only vs with probabilities.

Each measurement runs in a fresh subprocess, so one mode's peak cannot hide the
other's. tracemalloc cannot see torch's allocations, so host memory is the
process's peak resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``),
reported as the peak and as the increase over the resident set just before
``predict`` (image and network already loaded); on CUDA also
``torch.cuda.max_memory_allocated``.

Reference sizes for a 256^3 volume with 3 classes: the float32 input is 64 MiB, a
float32 probability volume 192 MiB, a float16 one 96 MiB, the uint8 labels 16 MiB.
No fixed target; what to look for: asking for probabilities should add at most
their float16 copy (``probabilities_extra_mib`` <= ``float16_probabilities_mib``),
and labels only should need a few volume-sized buffers (the blended float32
probabilities MONAI accumulates, its weight map, the labels), not one per window.

    python benchmarks/bench_predict_memory.py [--size 256] [--classes 3] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MiB = 2**20


def _maxrss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MiB


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MiB
    except OSError:  # not Linux: fall back to the peak so far
        return _maxrss_mib()


def worker(args: argparse.Namespace) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    from _common import make_model, make_volume, sync
    from napari_medml.config import InferConfig
    from napari_medml.engine.devices import resolve_device

    device = resolve_device(args.device)
    model = make_model(classes=args.classes, patch=args.patch, features=args.features, depth=args.depth)
    image = make_volume(args.size)
    probabilities = args.worker == "probabilities"
    config = InferConfig(overlap=args.overlap, device=args.device, return_probabilities=probabilities, tta=args.tta)
    model.network.to(device)
    # One window first: loads the compute libraries (oneDNN, cuDNN), which are not
    # prediction memory, before the baseline is read.
    model.predict(make_volume(args.patch), config=config)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = _current_rss_mib()
    start = time.perf_counter()
    pred = model.predict(image, config=config)
    sync(device)
    seconds = time.perf_counter() - start
    result = {
        "mode": args.worker,
        "tta": bool(args.tta),
        "seconds": seconds,
        "rss_before_predict_mib": before,
        "peak_rss_mib": _maxrss_mib(),
        "peak_increase_mib": _maxrss_mib() - before,
        "labels_dtype": str(pred.labels.dtype),
        "probabilities_dtype": None if pred.probabilities is None else str(pred.probabilities.dtype),
    }
    if device.type == "cuda":
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / MiB
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="volume edge length (default: 256)")
    parser.add_argument("--classes", type=int, default=3, help="output classes incl. background (default: 3)")
    parser.add_argument("--patch", type=int, default=64, help="sliding-window roi edge (default: 64)")
    parser.add_argument("--features", type=int, default=8,
                        help="UNet width; small by default so CPU runs stay short (default: 8)")
    parser.add_argument("--depth", type=int, default=3, help="UNet levels (default: 3)")
    parser.add_argument("--overlap", type=float, default=0.25, help="window overlap (default: 0.25)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default: auto)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation (the image and its flip along each axis, as planned models "
                        "predict)")
    parser.add_argument("--worker", choices=("labels", "probabilities"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    here = os.path.dirname(os.path.abspath(__file__))
    runs = []
    for mode in ("labels", "probabilities"):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode] + [
            f"--{k.replace('_', '-')}" + ("" if isinstance(v, bool) else f"={v}")
            for k, v in vars(args).items() if k != "worker" and v is not False
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=here, check=False)
        if done.returncode != 0:
            sys.exit(f"worker '{mode}' failed:\n{done.stderr}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    labels, probs = runs
    input_mib = args.size**3 * 4 / MiB
    from _common import environment
    from napari_medml.engine.devices import resolve_device

    report = {
        "benchmark": "predict_memory",
        "volume": [args.size] * 3, "classes": args.classes, "roi": [args.patch] * 3,
        "overlap": args.overlap, "features": args.features, "depth": args.depth, "tta": bool(args.tta),
        "input_float32_mib": input_mib,
        "labels_only": labels, "with_probabilities": probs,
        "labels_only_increase_over_input": labels["peak_increase_mib"] / input_mib,
        "probabilities_extra_mib": probs["peak_rss_mib"] - labels["peak_rss_mib"],
        "float16_probabilities_mib": args.classes * args.size**3 * 2 / MiB,
        **environment(resolve_device(args.device)),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
