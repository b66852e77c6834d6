"""Data-parallel training (PyTorch DDP) as a user starts it: ``torchrun --nproc-per-node 2
-m napari_medml train ...`` and ``napari-medml train --nproc 2 ...``, in subprocesses,
two CPU processes with the gloo backend (what CI has).

Checks: one bundle written by rank 0, of the same kind as a one-process run's (files,
config keys, tensor names and shapes: no ``module.`` prefixes), loadable and predicting;
progress lines once (rank 0 only); each process draws its own patches; Ctrl-C to the
launcher and the time limit end both processes cleanly at the same step (status 0, the
best model saved, no stray files); processes that time a step differently train rank 0's
plan together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_medml.io import Volume, write_volume
from napari_medml.samples import phantom_3d, shape_classes

SHAPE = (24, 48, 48)
OPTIONS = ["--patch-size", "16", "32", "32", "--features", "8", "--depth", "3", "--lr", "0.003",
           "--no-augment", "--device", "cpu", "--seed", "0"]  # fmt: skip


def tool(name: str) -> str:
    """A console script installed next to this Python (the environment under test)."""
    return str(Path(sys.executable).with_name(name))


def environment(tmp: Path) -> dict[str, str]:
    # TMPDIR: the test's own, to see what a run leaves behind; one thread per process
    return {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}


def run(argv: list[object], tmp: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          env=environment(tmp))  # fmt: skip


def torchrun(*argv: object) -> list[object]:
    return [tool("torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "napari_medml", *argv]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ddp")
    p = phantom_3d(seed=0, shape=SHAPE)
    image, labels = folder / "ct.nii.gz", folder / "ct_seg.nii.gz"
    write_volume(image, Volume(p.image, p.spacing, (0.0,) * 3))
    write_volume(labels, Volume(p.labels, p.spacing, (0.0,) * 3, is_labels=True))
    tmp = folder / "tmp"
    tmp.mkdir()
    return {"image": image, "labels": labels, "folder": folder, "tmp": tmp}


def bundle_kind(path: Path) -> dict[str, object]:
    """What makes a bundle what it is: its files, config keys and tensors (name -> shape)."""
    from safetensors.numpy import load_file

    config = json.loads((path / "config.json").read_text())
    tensors = {k: v.shape for k, v in load_file(path / "weights.safetensors").items()}
    return {"files": sorted(p.name for p in path.iterdir()), "keys": sorted(config),
            "task": config.get("task"), "tensors": tensors}  # fmt: skip


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.sum(a & b) / max(1, np.sum(a) + np.sum(b)))


def test_nproc_is_left_out_of_what_torchrun_starts() -> None:
    from napari_medml.cli.launch import without_nproc

    argv = ["--debug", "train", "--nproc", "2", "--image", "a.nii", "--nproc=3", "--out", "m"]
    assert without_nproc(argv) == ["--debug", "train", "--image", "a.nii", "--out", "m"]


def test_nproc_mistakes_are_caught_before_any_process_starts(phantom, capsys, monkeypatch) -> None:
    import torch

    from napari_medml.cli import main

    assert main(["train", "--nproc", "0", "--image", str(phantom["image"]), "--out", "x"]) == 2
    assert "--nproc" in capsys.readouterr().err
    assert main(["train", "--nproc", "2", "--image", str(phantom["image"]), "--out", "x"]) == 2
    assert "needs --labels" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a machine with one GPU
    code = main(["train", "--nproc", "2", "--image", str(phantom["image"]), "--labels", str(phantom["labels"]),
                 "--out", str(phantom["folder"] / "x")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--nproc 2 but this machine has 1 GPUs" in err and "--device cpu" in err
    assert not (phantom["folder"] / "x").exists()


def test_torchrun_trains_one_bundle_like_a_single_process_run(phantom) -> None:
    from napari_medml import load_model
    from napari_medml.cli import main

    data = ["--image", phantom["image"], "--labels", phantom["labels"]]
    ddp_out, one_out = phantom["folder"] / "ddp", phantom["folder"] / "one"
    steps = ["--epochs", "3", "--steps-per-epoch", "8"]
    # two processes of batch 1 = the samples per step of one process of batch 2
    # one norm for both: the plan takes batch norm for one CPU process of batch 2, instance norm for two processes
    norm = ["--norm", "instance"]
    done = run(torchrun("train", *data, *steps, "--batch-size", "1", *OPTIONS, *norm, "--out", ddp_out),
               phantom["tmp"])
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "Traceback" not in err and "error" not in err.lower(), err
    assert done.stdout == ""
    # rank 0 alone prints: each line once
    assert err.count("data parallel: 2 processes (gloo), batch 1 per process: 2 samples per step") == 1, err
    for line in ("epoch 1/3", "epoch 3/3", "saved model bundle"):
        assert err.count(line) == 1, err
    assert "drew the same first batch" not in err  # each process draws its own patches (seed + rank)
    # the kind of bundle does not depend on the length of the run
    one_run = ("train", *data, "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", *OPTIONS, *norm)
    assert main([str(a) for a in (*one_run, "--out", one_out)]) == 0

    ddp, one = bundle_kind(ddp_out), bundle_kind(one_out)
    assert ddp == one  # same files (no checkpoints left), config keys, tensor names and shapes
    assert not any(name.startswith("module.") for name in ddp["tensors"])
    model = load_model(ddp_out)
    p = phantom_3d(seed=0, shape=SHAPE)
    labels = model.predict(p.image, spacing=p.spacing).labels
    assert labels.shape == SHAPE and set(np.unique(labels)) <= {0, 1, 2, 3}
    # 24 steps of 2 patches learn the body (class 1 and everything inside it)
    assert dice(labels > 0, p.labels > 0) > 0.6


def test_nproc_shortcut_stops_every_process_on_ctrl_c(phantom) -> None:
    from napari_medml import load_model

    out = phantom["folder"] / "stopped"
    argv = [tool("napari-medml"), "train", "--nproc", "2", "--image", phantom["image"], "--labels",
            phantom["labels"], "--epochs", "500", "--steps-per-epoch", "4", "--batch-size", "1", *OPTIONS,
            "--out", out]  # fmt: skip
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment(phantom["tmp"]))  # fmt: skip
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "epoch 2/500" in line:  # both processes are training, and epoch 1 left its checkpoint
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(180), "".join(lines)
        proc.send_signal(signal.SIGINT)  # Ctrl-C in the terminal reaches the launcher
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    err = "".join(lines)
    assert code == 0, err  # as a one-process run: the first Ctrl-C stops and keeps the best model
    assert "Traceback" not in err, err
    assert err.count("stopping all processes after this step") == 1, err
    assert err.count("stopped by user") == 1 and err.count("saved model bundle") == 1, err
    model = load_model(out)
    epochs = [row["epoch"] for row in model.history]
    assert 2 <= len(epochs) < 500
    assert (out / "checkpoints" / "last" / "train_state.json").is_file()  # a stopped run resumes (--resume)
    assert err.count("the same command with --resume continues the run") == 1, err
    assert [p.name for p in phantom["tmp"].iterdir() if "medml" in p.name] == []  # the stop file's folder is gone


def test_time_limit_ends_both_processes_of_a_classifier(tmp_path) -> None:
    from napari_medml import load_model

    sc = shape_classes(seed=0, n=32, size=32)
    np.save(tmp_path / "stack.npy", sc.images)
    (tmp_path / "classes.csv").write_text("sample,class\n" + "".join(f"{i},{c}\n" for i, c in enumerate(sc.classes)))
    out = tmp_path / "classifier"
    done = run(torchrun("train", "--task", "classification", "--level", "image", "--image", tmp_path / "stack.npy",
                        "--classes", tmp_path / "classes.csv", "--epochs", "10000", "--steps-per-epoch", "5",
                        "--batch-size", "4", "--max-minutes", "0.05", "--features", "8", "--depth", "3",
                        "--device", "cpu", "--seed", "0", "--out", out), tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("time limit of 0.05 min reached") == 1, done.stderr
    assert done.stderr.count("saved classifier bundle") == 1, done.stderr
    classifier = load_model(out)
    assert classifier.class_ids == tuple(sorted(set(sc.classes.tolist())))
    assert len(classifier.history) < 10000


def test_torchrun_trains_an_ensemble_fold_after_fold(phantom) -> None:
    """Several runs in one process (the folds of --folds) share the one process group."""
    from napari_medml import load_model

    out = phantom["folder"] / "ensemble"
    done = run(torchrun("train", "--image", phantom["image"], "--labels", phantom["labels"], "--folds", "2",
                        "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "1", "--patch-size", "16", "16",
                        "32", "--features", "8", "--depth", "3", "--no-augment", "--device", "cpu", "--out", out),
               phantom["tmp"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("data parallel: 2 processes") == 2, done.stderr  # one line per fold, rank 0 only
    assert "ensemble of 2 models" in done.stderr
    model = load_model(out)
    assert len(model.members) == 2


def test_a_bare_torchrun_holds_its_folder_as_a_one_process_run_does(phantom) -> None:
    """Review 21: under a bare torchrun no process held --out: a run beside another, or a --resume
    on other files, trained and saved with exit 0."""
    from lock_holder import lock_held_elsewhere

    out = phantom["folder"] / "held"
    (out / "checkpoints").mkdir(parents=True)
    lock = out / "checkpoints" / "run.lock"
    with lock_held_elsewhere(lock) as holder:
        done = run(torchrun("train", "--image", phantom["image"], "--labels", phantom["labels"], "--epochs", "1",
                            "--steps-per-epoch", "2", *OPTIONS, "--out", out), phantom["tmp"])
    assert done.returncode != 0 and "saved model bundle" not in done.stderr
    assert (f"napari-medml: error: another napari-medml run (process {holder.pid}) is writing to '{out}'"
            in done.stderr), done.stderr
    assert not (out / "config.json").exists()


# A script under torchrun whose processes time a training step differently (a busy core in
# process 1: 0.2 s, process 0: 0.01 s), plan from those timings, and train what they planned.
BUSY_CORE_SCRIPT = '''
import hashlib, json, os
from dataclasses import replace

import numpy as np

import napari_medml.segmentation.step_time as step_time
from napari_medml import api
from napari_medml.config import DataConfig, OptimConfig, TrainConfig
from napari_medml.engine.fit import run_to_end
from napari_medml.segmentation.planning import plan_run

rank = int(os.environ["RANK"])
step_time.measure_step = lambda *a, **k: 0.01 if rank == 0 else 0.2
rng = np.random.default_rng(0)
image = rng.normal(size=(64, 64)).astype(np.float32)
labels = np.zeros((64, 64), np.uint8)
labels[10:30, 10:30], labels[40:60, 35:55] = 1, 2
config = TrainConfig(data=DataConfig(spatial_dims=2), optim=OptimConfig(max_minutes=0.5), device="cpu", amp=False)
plan = plan_run(image, labels, config)
run = plan.apply(config)  # the planned network, in a short run
run = replace(run, data=replace(run.data, folds=1), optim=replace(run.optim, epochs=1, steps_per_epoch=2))
model = run_to_end(api.fit(image, labels, run, plan=plan))
weights = hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.network.state_dict().values()))
# one file a process: two processes printing to one pipe may interleave their lines
result = {"rank": rank, "plan": plan.to_dict(), "weights": weights.hexdigest()}
with open(os.path.join(os.path.dirname(__file__), f"result-{rank}.json"), "w") as f:
    json.dump(result, f)
'''


def test_every_process_trains_rank_0s_plan_whatever_its_own_step_timing(tmp_path) -> None:
    """Review 32: each process planned from its own step timing; a busy process planned a
    narrower network (8 channels against 16) and DDP failed on the mismatched weights while
    rank 0 waited. Now rank 0 plans and every process trains its plan."""
    script = tmp_path / "busy_core.py"
    script.write_text(BUSY_CORE_SCRIPT)
    proc = subprocess.Popen([tool("torchrun"), "--standalone", "--nproc-per-node", "2", str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(tmp_path))
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:  # the old code hung: torchrun ends its processes on SIGTERM
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    results = [json.loads((tmp_path / f"result-{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in results] == [0, 1], out
    first, second = results
    assert first["plan"] == second["plan"]
    assert first["plan"]["channels"] == 16  # rank 0's timing: 0.01 s a step, past WIDE_STEPS in 30 s
    assert first["plan"]["step_seconds"] == 0.01
    assert first["weights"] == second["weights"]  # one network, trained together


def test_a_planned_run_with_a_time_limit_and_the_default_loss_trains_in_two_processes(phantom) -> None:
    """Trial 41: `train --nproc 2 ... --max-minutes 0.5` hung for the process group's 2 hours. Rank 0
    timed a step for the plan alone, and the Dice loss's all_reduce waited for rank 1, which waited
    for the plan. The README's command, as given: the default loss (dice_ce), planned."""
    from napari_medml import load_model

    out = phantom["folder"] / "planned"
    argv = [tool("napari-medml"), "train", "--nproc", "2", "--image", phantom["image"], "--labels",
            phantom["labels"], "--max-minutes", "0.1", "--device", "cpu", "--seed", "0", "--out", out]
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment(phantom["tmp"]))  # fmt: skip
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:  # the hang: torchrun ends its processes on SIGTERM
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert err.count("plan: 1 image(s)") == 1 and err.count("saved model bundle") == 1, err[-3000:]
    assert load_model(out).config.optim.loss == "dice_ce"
