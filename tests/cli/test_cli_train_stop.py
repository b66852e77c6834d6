"""``train`` through the installed console script, in a subprocess, as a user runs it:
Ctrl-C keeps the checkpoints so ``--resume`` continues the run; a file with NaN is named;
core messages name the options (``--val-fraction``); ``--folds`` lines name the fold."""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from napari_medml.io import Volume, write_volume

TINY = ["--features", "4", "--depth", "2", "--patch-size", "8", "16", "16", "--batch-size", "1", "--no-augment",
        "--no-plan", "--device", "cpu", "--seed", "0"]


def script() -> str:
    path = Path(sys.executable).with_name("napari-medml")
    return str(path) if path.exists() else shutil.which("napari-medml") or "napari-medml"


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*argv: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script(), *map(str, argv)], capture_output=True, text=True, timeout=timeout, env=env())


def lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def phantom(seed: int, shape: tuple[int, ...] = (8, 32, 32)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    labels = ((y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < (shape[1] / 4) ** 2).astype(np.uint8)
    image = (labels * 2.0 + rng.normal(0, 0.5, shape)).astype(np.float32)
    return image, labels


def interrupt_at(argv: list, pattern: str, wait: float = 180, sig: int = signal.SIGINT,
                 delay: float = 0.0) -> tuple[int, str]:
    """Run ``argv``, press Ctrl-C (or send ``sig``) ``delay`` seconds after a stderr line matches
    ``pattern``; (exit code, stderr)."""
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env())  # fmt: skip
    seen: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            seen.append(line)
            if re.search(pattern, line):
                started.set()
        started.set()  # the run ended (an error): the caller's assertions show it

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(wait) and proc.poll() is None, "".join(seen)
        time.sleep(delay)
        proc.send_signal(sig)  # Ctrl-C
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    return code, "".join(seen)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("stop")
    out = {}
    for k in range(3):
        image, labels = phantom(k)
        out[f"img{k}"], out[f"lab{k}"] = folder / f"img{k}.nii.gz", folder / f"lab{k}.nii.gz"
        write_volume(out[f"img{k}"], Volume(image, (2.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
        write_volume(out[f"lab{k}"], Volume(labels, (2.0, 1.0, 1.0), (0.0, 0.0, 0.0), is_labels=True))
    bad, _ = phantom(1)
    bad[2, 3:6, 3:6] = np.nan
    out["nan"] = folder / "b.nii.gz"
    write_volume(out["nan"], Volume(bad, (2.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    return out


def test_ctrl_c_keeps_the_checkpoints_and_resume_continues_from_the_stopped_step(files, tmp_path) -> None:
    from napari_medml import load_model

    out = tmp_path / "model"
    argv = [script(), "train", "--image", files["img0"], "--labels", files["lab0"], "--out", out,
            "--steps-per-epoch", "3", *TINY, "--patch-size", "4", "16", "16"]  # fmt: skip
    code, err = interrupt_at([*argv, "--epochs", "500"], r"epoch 2/500\b")  # epoch 1 has left its checkpoint
    assert code == 0, err
    assert lines(err)[-1] == (f"napari-medml: stopped: saved the best model so far to {out} and kept the run's "
                              f"checkpoints in {out / 'checkpoints'}; the same command with --resume continues the run")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "weights.safetensors"]
    state = json.loads((out / "checkpoints" / "last" / "train_state.json").read_text())
    stopped_step, stopped_epoch = state["step"], state["epoch"]
    assert 3 <= stopped_step < 1500
    epochs = stopped_epoch + 2  # the resumed run ends two epochs after the stopped one
    # the checkpoint holds a 4-channel network: another width would be ignored, so it is refused
    changed = run(*argv[1:], "--epochs", epochs, "--resume", "--features", "8")
    assert changed.returncode == 2 and lines(changed.stderr) == [
        "napari-medml: error: --resume continues the stopped run with its own settings: --channels is 8, the "
        "run's 4: drop those options, or train a new run without --resume"]
    # review 20: options that set no field of their own were not compared, and the run went on as before
    changed = run(*argv[1:], "--epochs", epochs, "--resume", "--task", "instances")
    assert changed.returncode == 2 and lines(changed.stderr) == [
        "napari-medml: error: --resume continues the stopped run with its own settings: --task is instances, the "
        "run's segmentation: drop those options, or train a new run without --resume"]
    done = run(*argv[1:], "--epochs", epochs, "--resume")
    assert done.returncode == 0, done.stderr
    assert lines(done.stderr)[-1].startswith(f"napari-medml: saved model bundle to {out}")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "weights.safetensors"]
    history = load_model(out).history
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))  # earlier epochs kept, then more
    assert [row["step"] for row in history] == [3 * e for e in range(1, epochs + 1)]
    assert history[-1]["step"] == 3 * epochs > stopped_step


def test_resume_continues_the_planned_run_without_planning_it_again(files, tmp_path) -> None:
    # planned again, the step was timed again: a trial's resumed run got other epochs and steps
    # per epoch (epoch 2 twice in its log) and lost the best epoch from its last line
    from napari_medml import load_model

    out = tmp_path / "planned"
    argv = [script(), "train", "--image", files["img0"], "--labels", files["lab0"], "--out", out, "--epochs", "500",
            "--features", "4", "--depth", "2", "--device", "cpu", "--seed", "0"]  # fmt: skip
    code, err = interrupt_at(argv, r"epoch 2/500\b")
    assert code == 0 and "plan: " in err, err
    stopped = json.loads((out / "checkpoints" / "last" / "train_state.json").read_text())["epoch"]
    planned = load_model(out).config.optim
    done = run(*argv[1:], "--resume", "--epochs", stopped + 1)
    assert done.returncode == 0, done.stderr
    # trial 46: a changed length changes the schedule's rate, and the line said only "its own settings"
    assert "plan: " not in done.stderr and (
        "napari-medml: --resume: the stopped run goes on with the settings it started with (not planned again), but "
        f"{stopped + 1} epochs instead of 500: its {planned.schedule} schedule follows that length, so the "
        "learning rate goes on from where a run of that length would be at this step") in lines(done.stderr), (
        done.stderr)
    assert re.search(r"saved model bundle to .* \(best epoch \d+", lines(done.stderr)[-1]), done.stderr
    final = load_model(out)
    assert final.config.optim.steps_per_epoch == planned.steps_per_epoch and len(final.history) == stopped + 1
    # the line says how many steps the run trained, the steps before the stop included
    assert f"; trained {planned.steps_per_epoch * (stopped + 1)} steps in " in lines(done.stderr)[-1], done.stderr


def test_ctrl_c_in_an_ensemble_keeps_the_finished_folds_and_resume_trains_the_rest(files, tmp_path) -> None:
    import torch

    from napari_medml import load_model

    out, epochs = tmp_path / "ensemble", 60
    argv = [script(), "train", "--image", files["img0"], "--labels", files["lab0"], "--out", out, "--folds", "2",
            "--epochs", epochs, "--steps-per-epoch", "3", *TINY, "--patch-size", "4", "8", "16"]  # fmt: skip
    # fold 1 finished, fold 2 has left a checkpoint
    code, err = interrupt_at(argv, rf"fold 2/2\s+epoch 2/{epochs}\b", wait=240)
    assert code == 0, err
    assert lines(err)[-1] == (f"napari-medml: stopped: saved an ensemble of the 2 of 2 folds trained so far to {out} "
                              f"and kept the run's checkpoints in {out / 'checkpoints'}; the same command with "
                              "--resume continues the run (the finished folds are kept)")
    kept = out / "checkpoints"
    assert (kept / "fold-1" / "member" / "config.json").is_file() and (kept / "fold-2" / "last").is_dir()
    stopped = load_model(out)
    stopped_epochs = len(stopped.members[1].history)
    assert len(stopped.members[0].history) == epochs and stopped_epochs < epochs

    done = run(*argv[1:], "--resume")
    assert done.returncode == 0, done.stderr
    assert "fold 1/2" not in done.stderr  # the finished fold is not trained again
    assert lines(done.stderr)[-1].startswith(f"napari-medml: saved model bundle to {out} (ensemble of 2 models")
    assert not kept.exists()
    final = load_model(out)
    first_then, first_now = stopped.members[0].network.state_dict(), final.members[0].network.state_dict()
    assert all(torch.equal(first_then[k], first_now[k]) for k in first_then)
    assert [row["epoch"] for row in final.members[1].history] == list(range(1, epochs + 1))  # continued


@pytest.mark.parametrize("command", ["classification", "pretrain"])
def test_resume_of_a_classifier_or_a_pretraining_run_goes_on_with_its_own_settings(files, tmp_path, command) -> None:
    """Review 46: a classifier started with --epochs 50 and resumed without it trained to the
    default 30; pretraining too took the options given now, not the run's."""
    import tifffile

    from napari_medml import load_model
    from napari_medml.samples import shape_classes

    out, epochs = tmp_path / command, 40
    if command == "classification":
        sc = shape_classes(seed=0, n=12, size=24)
        tifffile.imwrite(tmp_path / "stack.tif", sc.images.astype(np.float32))
        (tmp_path / "classes.csv").write_text("".join(f"{i},{c}\n" for i, c in enumerate(sc.classes)))
        argv = [script(), "train", "--task", "classification", "--image", tmp_path / "stack.tif", "--classes",
                tmp_path / "classes.csv", "--network", "resnet18", "--batch-size", "2", "--device", "cpu"]
    else:
        argv = [script(), "pretrain", "--image", files["img0"], "--features", "4", "--depth", "2", "--patch-size", "8",
                "16", "16", "--batch-size", "1", "--device", "cpu", "--seed", "0"]
    given = [*argv, "--out", out, "--steps-per-epoch", "1", "--epochs", epochs]
    code, err = interrupt_at(given, rf"epoch 3/{epochs}\b")
    assert code == 0, err
    if command == "classification":  # the samples' own options: named with the files (review 46)
        other = run(*argv[1:], "--out", out, "--steps-per-epoch", "1", "--resume", "--input-size", "16", "16")
        assert other.returncode == 2 and lines(other.stderr)[-1].endswith(
            "than the stopped run's, or --level, --input-size, --tile-size or --object-box make other samples of "
            "them: resume with the files and those options it started with, or train a new run without --resume"
        ), other.stderr
    done = run(*argv[1:], "--out", out, "--steps-per-epoch", "1", "--resume")  # --epochs not given again
    assert done.returncode == 0, done.stderr
    assert ("napari-medml: --resume: the stopped run goes on with the settings it started with (not planned "
            "again)") in lines(done.stderr), done.stderr
    assert len(load_model(out).history) == epochs  # the run's own 40, not the default
    shorter = run(*argv[1:], "--out", tmp_path / "other", "--steps-per-epoch", "1", "--epochs", "2")
    assert shorter.returncode == 0, shorter.stderr


def test_nan_in_the_second_image_names_its_file(files, tmp_path) -> None:
    done = run("train", "--image", files["img0"], "--image", files["nan"], "--image", files["img2"],
               "--labels", files["lab0"], "--labels", files["lab1"], "--labels", files["lab2"],
               "--out", tmp_path / "m", "--epochs", "1", "--steps-per-epoch", "1", *TINY)  # fmt: skip
    assert done.returncode == 1
    assert lines(done.stderr) == [f"napari-medml: error: image '{files['nan']}' contains 9 NaN or infinite "
                                  "value(s): fill them first (napari: Preprocess > fill NaN/inf, a step that "
                                  "models trained on its layer replay; Python: "
                                  "napari_medml.preprocessing.ops.fill_nonfinite)"]
    assert not (tmp_path / "m").exists()


def test_val_fraction_too_large_names_the_option(files, tmp_path) -> None:
    done = run("train", "--image", files["img0"], "--labels", files["lab0"], "--out", tmp_path / "m",
               "--val-fraction", "0.99", "--epochs", "1", "--steps-per-epoch", "1", *TINY)  # fmt: skip
    assert done.returncode == 1
    assert lines(done.stderr) == ["napari-medml: error: image of shape (8, 32, 32) is too small to hold out a "
                                  "validation block of --val-fraction 0.99 of it: lower the validation share, "
                                  "or set --val-fraction 0 (no validation)"]


def test_folds_lines_name_the_fold_and_its_epoch(files, tmp_path) -> None:
    done = run("train", "--image", files["img0"], "--image", files["img1"], "--labels", files["lab0"],
               "--labels", files["lab1"], "--out", tmp_path / "m", "--folds", "2", "--epochs", "1",
               "--steps-per-epoch", "1", "--val-fraction", "0.2", *TINY)  # fmt: skip
    assert done.returncode == 0, done.stderr
    # the default share given: unused, and said so as any other share is (note 48)
    assert ("napari-medml: --val-fraction 0.2 is not used with folds: each of the 2 models is validated on its own "
            "fold, 1/2 of the data") in lines(done.stderr), done.stderr
    epoch_lines = [line.split("  ")[:3] for line in lines(done.stderr) if line.startswith("fold ")]
    assert [parts[:2] for parts in epoch_lines] == [["fold 1/2", "epoch 1/1"], ["fold 2/2", "epoch 1/1"]]
    assert "epoch 2/2" not in done.stderr


def test_nan_in_the_image_to_predict_names_its_file(tmp_path):
    import nibabel as nib

    image = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32)
    labels = (image > 0.5).astype(np.uint8)
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "a_seg.nii.gz")
    image[2, 3, 4] = np.nan
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "b.nii.gz")
    done = run("train", "--image", str(tmp_path / "a.nii.gz"), "--labels", str(tmp_path / "a_seg.nii.gz"),
                "--out", str(tmp_path / "model"), "--epochs", "1", "--steps-per-epoch", "1", "--features", "4",
                "--depth", "2", "--no-plan", "--patch-size", "8", "8", "8")
    assert done.returncode == 0, done.stderr
    done = run("predict", "--model", str(tmp_path / "model"), "--image", str(tmp_path / "b.nii.gz"),
                "--out", str(tmp_path / "p.nii.gz"))
    assert done.returncode == 1 and f"image '{tmp_path / 'b.nii.gz'}' contains 1 NaN" in done.stderr, done.stderr
    assert not (tmp_path / "p.nii.gz").exists()


def test_ctrl_c_before_the_first_epoch_ends_says_it_saved_the_last_weights(files, tmp_path) -> None:
    """Trial 30: a Ctrl-C a few steps into the first epoch said "saved the best model so far",
    with no validation run and no best checkpoint."""
    out = tmp_path / "model"
    argv = [script(), "train", "--image", files["img0"], "--labels", files["lab0"], "--out", out,
            "--steps-per-epoch", "1000000", *TINY, "--patch-size", "4", "16", "16", "--epochs", "2"]  # fmt: skip
    code, err = interrupt_at(argv, r"validation on the last", delay=8.0)  # training steps, far from an epoch's end
    assert code == 0, err
    assert lines(err)[-1] == (f"napari-medml: stopped: saved the last weights (stopped before the first epoch ended: "
                              f"there is no best epoch yet) to {out} and kept the run's checkpoints in "
                              f"{out / 'checkpoints'}; the same command with --resume continues the run")
    assert (out / "config.json").is_file() and not (out / "checkpoints" / "best").exists()


def test_sigterm_stops_as_ctrl_c_and_a_killed_run_is_named_as_such(files, tmp_path) -> None:
    """Trial 20: SIGTERM (kill, a batch scheduler's time limit) ended the process at once with no
    bundle; predict on a killed run's folder then said "not a bundle", naming a fix that failed."""
    out = tmp_path / "model"
    argv = [script(), "train", "--image", files["img0"], "--labels", files["lab0"], "--out", out,
            "--steps-per-epoch", "3", *TINY, "--patch-size", "4", "16", "16", "--epochs", "500"]  # fmt: skip
    code, err = interrupt_at(argv, r"epoch 2/500\b", sig=signal.SIGTERM)
    assert code == 0, err
    assert "terminated: stopping after this step and keeping the best model" in err
    assert "(a second signal aborts)" in err and "Ctrl-C" not in err
    assert lines(err)[-1].startswith(f"napari-medml: stopped: saved the best model so far to {out}")
    assert (out / "config.json").is_file() and not (out / "checkpoints" / "run.lock").exists()
    # a run killed outright leaves checkpoints only (and its lock): predict names --resume and the best epoch
    (out / "config.json").unlink()
    (out / "weights.safetensors").unlink()
    (out / "checkpoints" / "run.lock").write_text('{"pid": 999999999}')  # a process that no longer runs
    said = run("predict", "--model", out, "--image", files["img0"], "--out", tmp_path / "p.nii.gz")
    assert said.returncode != 0 and lines(said.stderr) == [
        f"napari-medml: error: {out} holds only the checkpoints of a training run that was killed before it saved "
        f"the model: continue it with the same 'napari-medml train ... --out {out}' and --resume, or use its best "
        f"epoch so far, the bundle '{out / 'checkpoints' / 'best'}'"]
    done = run(*argv[1:-2], "--epochs", "4", "--resume")  # the dead run's lock is no hold
    assert done.returncode == 0, done.stderr


def test_one_run_at_a_time_and_resume_only_on_the_runs_files(files, tmp_path) -> None:
    """Trial 20: two runs on one --out each said "saved" (one model lost, one's checkpoints deleted);
    --resume trained on other files without a word; a new run replaced a stopped one's checkpoints
    silently."""
    out = tmp_path / "model"
    base = [script(), "train", "--out", out, "--steps-per-epoch", "3", *TINY, "--patch-size", "4", "16", "16"]
    first = ["--image", files["img0"], "--labels", files["lab0"]]
    proc = subprocess.Popen([str(a) for a in [*base, *first, "--epochs", "500"]],
                            stderr=subprocess.PIPE, text=True, env=env())
    try:
        for _ in range(1800):  # the lock is taken once the files are read; wait for a checkpoint to resume
            if (out / "checkpoints" / "last" / "train_state.json").exists() or proc.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert proc.poll() is None and (out / "checkpoints" / "run.lock").exists()
        second = run(*base[1:], *first, "--epochs", "1")
        assert second.returncode == 2 and lines(second.stderr) == [
            f"napari-medml: error: another napari-medml run (process {proc.pid}) is writing to '{out}': wait for it "
            "to end, or choose another --out"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert (out / "checkpoints").is_dir() and not (out / "checkpoints" / "run.lock").exists()
    other = run(*base[1:], "--image", files["img1"], "--labels", files["lab1"], "--epochs", "500", "--resume")
    assert other.returncode == 2 and lines(other.stderr)[-1] == (
        f"napari-medml: error: --resume: the training files ({files['img1']}, {files['lab1']}) hold "
        "other images or labels than the stopped run's: resume with the files it started with, or train a new run "
        "without --resume")
    fresh = run(*base[1:], *first, "--epochs", "1")
    assert fresh.returncode == 0, fresh.stderr
    assert (f"napari-medml: '{out}' holds the checkpoints of an interrupted run and the model it saved: this new "
            "run replaces them once it has its own, and the model when it ends (the same command with --resume "
            "would have continued it)") in lines(fresh.stderr)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "weights.safetensors"]
    again = run(*base[1:], *first, "--epochs", "1")  # trial 36: a finished bundle was replaced without a word
    assert again.returncode == 0, again.stderr
    assert (f"napari-medml: '{out}' holds a model bundle: this run replaces it when it ends (choose another --out "
            "to keep it)") in lines(again.stderr)


def test_leaving_a_fit_loop_with_break_ends_the_script_quietly(tmp_path) -> None:
    """Trial 20: the generator, closed as Python exited, tried to write a checkpoint and printed an
    'Exception ignored ... import of napari_medml halted' traceback."""
    script_text = f"""
import numpy as np
import napari_medml as mm
image = np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)
labels = (image > 0.5).astype(np.uint8)
config = mm.TrainConfig(data=mm.DataConfig(spatial_dims=2, patch_size=(16, 16)), model=mm.ModelConfig(channels=4,
                        depth=2), optim=mm.OptimConfig(epochs=50, steps_per_epoch=2), device="cpu",
                        checkpoint_dir={str(tmp_path / "ckpt")!r})
run = mm.fit(image, labels, config)
for report in run:
    if report.epoch_end and report.epoch >= 1:
        break
print("done")
"""
    done = subprocess.run([sys.executable, "-c", script_text], capture_output=True, text=True, timeout=300, env=env())
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert (tmp_path / "ckpt" / "last" / "train_state.json").is_file()  # the epoch's checkpoint
