"""Block-wise (out-of-core) prediction into Zarr: memory flat in the volume size, and the
same labels as whole-volume prediction at about the same speed.

``--part memory``: float32 OME-Zarr volumes of 1x, 4x and 16x a base size are segmented
with the ``napari-medml predict ... --out pred.zarr`` console script in a subprocess
whose address space is capped with ``resource.setrlimit(RLIMIT_AS)``. torch alone maps
about 0.9 GiB of address space (libraries, reservations), so the cap is 1.5 GiB, the
16x volume is 6 GiB (4x the cap) and ``MALLOC_ARENA_MAX=1`` keeps glibc from reserving
a 64 MiB arena per thread (address space, not memory). Peak RSS of each run comes from
``os.wait4``. Target: every run completes under the cap; peak RSS flat across sizes.

``--part ratio``: a 256^3 volume, whole-volume ``Model.predict`` against
``predict_to_zarr`` with the default plan and with plans forced to 2 and 8 blocks.
Target: identical labels; time ratio (block-wise / whole) <= 1.15.

``--recipe zscore`` (or ``fill_nan,zscore``, ``gaussian:1.5,zscore``, ``median:3``...): the model replays that
preprocessing recipe, block by block with the whole image's statistics (one pass over the
volume per z-score, min-max or fill): its cost in time, and that memory stays flat.

    python benchmarks/bench_chunked_predict.py --part memory [--base-z 384] [--limit-mib 1536] [--recipe zscore]
    python benchmarks/bench_chunked_predict.py --part ratio [--size 256] [--recipe zscore]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 2**20


def _write_volume(path: Path, shape: tuple[int, ...]) -> None:
    """A smooth float32 pattern written slab by slab (never whole in memory)."""
    import numpy as np

    from napari_medml.io.zarr import create_ome_zarr

    arr = create_ome_zarr(path, shape, "float32", axes="ZYX", spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                          chunks=(64, 128, 128))  # fmt: skip
    y = np.arange(shape[1])[None, :, None]
    x = np.arange(shape[2])[None, None, :]
    for z0 in range(0, shape[0], 64):
        z = np.arange(z0, min(z0 + 64, shape[0]))[:, None, None]
        arr[z0:z0 + 64] = (np.sin(z / 7.0) + np.cos(y / 5.0) * np.sin(x / 9.0)).astype(np.float32)


def _limited_run(cmd: list[str], limit: int) -> tuple[int, float, float, str]:
    """Run ``cmd`` under RLIMIT_AS = ``limit`` bytes; (returncode, seconds, peak RSS MiB, stderr tail)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=cap, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        err.seek(0)
        tail = err.read().decode(errors="replace")[-600:]
    return proc.returncode, seconds, usage.ru_maxrss / 1024, tail


def _with_recipe(model, recipe: str | None):  # noqa: ANN001, ANN202
    """``model`` replaying the comma-separated recipe steps (none: as it is)."""
    if not recipe:
        return model
    from dataclasses import replace

    from napari_medml.config import PreprocessStep

    # "gaussian:1.5" gives a step its one number (sigma; median: size; fill_nan: value)
    first = {"gaussian": "sigma", "median": "size", "fill_nan": "value"}
    steps = tuple(PreprocessStep(name.strip(), {first[name.strip()]: float(value)} if value else {})
                  for name, _, value in (part.partition(":") for part in recipe.split(",")))
    model.config = replace(model.config, data=replace(model.config.data, preprocessing=steps))
    return model


def part_memory(args: argparse.Namespace) -> dict:
    import zarr

    from _common import make_model

    limit = int(args.limit_mib * MiB)
    work = Path(tempfile.mkdtemp(prefix="medml-bench-chunked-", dir=args.workdir))
    exe = shutil.which("napari-medml", path=os.path.dirname(sys.executable)) or "napari-medml"
    runs = []
    try:
        model = _with_recipe(make_model(classes=2, patch=args.patch, features=args.features, depth=2), args.recipe)
        bundle = model.save(work / "bundle")
        for factor in (1, 4, 16):
            shape = (args.base_z * factor, args.yx, args.yx)
            volume, out = work / f"vol{factor}.ome.zarr", work / f"pred{factor}.zarr"
            _write_volume(volume, shape)
            cmd = [exe, "predict", "--model", str(bundle), "--image", str(volume), "--out", str(out),
                   "--overlap", str(args.overlap), "--block-memory", str(args.block_memory), "--device", "cpu"]
            code, seconds, peak, tail = _limited_run(cmd, limit)
            progress = dict(zarr.open_group(str(out), mode="r").attrs.get("napari_medml") or {}).get(
                "prediction", {}) if out.exists() else {}  # fmt: skip
            runs.append({
                "factor": factor, "shape": list(shape), "input_float32_mib": 4 * shape[0] * shape[1] * shape[2] / MiB,
                "returncode": code, "complete": bool(progress.get("complete")), "blocks": len(progress.get("done", [])),
                "seconds": round(seconds, 1), "peak_rss_mib": round(peak, 1),
                "plan": next((line for line in tail.splitlines() if "block plan" in line), tail if code else ""),
            })  # fmt: skip
            shutil.rmtree(volume, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peaks = [r["peak_rss_mib"] for r in runs]
    return {
        "benchmark": "chunked_predict_memory",
        "limit": f"RLIMIT_AS {args.limit_mib:g} MiB (resource.setrlimit in the child), MALLOC_ARENA_MAX=1",
        "limit_mib": args.limit_mib, "block_memory_mib": args.block_memory, "roi": [args.patch] * 3,
        "overlap": args.overlap, "network": f"UNet width {args.features}, depth 2, 2 classes (untrained)",
        "recipe": args.recipe,
        "runs": runs,
        "largest_input_over_limit": runs[-1]["input_float32_mib"] / args.limit_mib,
        "all_complete_under_limit": all(r["returncode"] == 0 and r["complete"] for r in runs),
        "peak_rss_spread_mib": max(peaks) - min(peaks),
    }


def part_ratio(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from _common import environment, make_model, make_volume
    from napari_medml.config import InferConfig
    from napari_medml.engine.devices import resolve_device
    from napari_medml.io import Volume
    from napari_medml.io.zarr import read_zarr
    from napari_medml.segmentation.chunked import plan_blocks
    from napari_medml.segmentation.to_zarr import predict_to_zarr

    torch.manual_seed(0)
    model = _with_recipe(make_model(classes=3, patch=args.patch, features=8, depth=3), args.recipe)
    image = make_volume(args.size)
    config = InferConfig(overlap=args.overlap, device="cpu")
    model.predict(make_volume(args.patch), config=config)  # loads oneDNN before timing
    work = Path(tempfile.mkdtemp(prefix="medml-bench-ratio-", dir=args.workdir))
    result: dict = {"benchmark": "chunked_vs_whole", "volume": [args.size] * 3, "roi": [args.patch] * 3,
                    "overlap": args.overlap, "classes": 3, "repeats": args.repeat, "recipe": args.recipe,
                    "plans": []}
    try:
        whole_times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            whole = model.predict(image, config=config).labels
            whole_times.append(time.perf_counter() - start)
        result["whole_seconds"] = round(min(whole_times), 2)
        shape = (args.size,) * 3
        plans = {"default (1024 MiB)": plan_blocks(shape, model.patch_size, channels=1, classes=3, config=config,
                                                   width=8),
                 "2 blocks": plan_blocks(shape, model.patch_size, channels=1, classes=3, config=config,
                                         block=(args.size // 2, args.size, args.size)),
                 "8 blocks": plan_blocks(shape, model.patch_size, channels=1, classes=3, config=config,
                                         block=(args.size // 2,) * 3)}  # fmt: skip
        for name, plan in plans.items():
            times = []
            for k in range(args.repeat):
                out = work / f"{len(result['plans'])}-{k}.zarr"
                start = time.perf_counter()
                predict_to_zarr(model, Volume(image, (1.0,) * 3, (0.0,) * 3, axes="ZYX"), out, config=config,
                                plan=plan)  # fmt: skip
                times.append(time.perf_counter() - start)
            labels = np.asarray(read_zarr(out).data)
            result["plans"].append({
                "plan": name, "description": plan.describe(), "seconds": round(min(times), 2),
                "time_ratio": round(min(times) / min(whole_times), 3),
                "differing_labels": int((labels != whole).sum()), "identical": bool(np.array_equal(labels, whole)),
            })  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(environment(resolve_device("cpu")))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("memory", "ratio"), required=True)
    parser.add_argument("--base-z", type=int, default=384, help="memory: Z of the 1x volume (default 384)")
    parser.add_argument("--yx", type=int, default=512, help="memory: Y and X of the volumes (default 512)")
    parser.add_argument("--limit-mib", type=float, default=1536, help="memory: RLIMIT_AS in MiB (default 1536)")
    parser.add_argument("--block-memory", type=float, default=256, help="memory: --block-memory (default 256)")
    parser.add_argument("--features", type=int, default=2, help="memory: UNet width (default 2)")
    parser.add_argument("--overlap", type=float, default=None, help="window overlap (memory 0, ratio 0.25)")
    parser.add_argument("--patch", type=int, default=64, help="sliding-window roi edge (default 64)")
    parser.add_argument("--size", type=int, default=256, help="ratio: volume edge (default 256)")
    parser.add_argument("--repeat", type=int, default=1, help="ratio: runs per variant, fastest kept (default 1)")
    parser.add_argument("--recipe", default=None, help="recipe steps the model replays, e.g. zscore (default none)")
    parser.add_argument("--workdir", default=None, help="folder for the temporary volumes (default: the temp folder)")
    args = parser.parse_args()
    if args.overlap is None:
        args.overlap = 0.0 if args.part == "memory" else 0.25
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    report = part_memory(args) if args.part == "memory" else part_ratio(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
