"""The napari-medml command line, run in-process through ``main()`` and once as the
installed console script. Training is tiny (a 24x48x48 phantom, a few steps) so the
end-to-end run stays well under a minute on a CPU."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_medml.cli import main
from napari_medml.io import Volume, read_volume, write_volume
from napari_medml.samples import phantom_3d

SHAPE = (24, 48, 48)
TRAIN_OPTIONS = ["--epochs", "2", "--steps-per-epoch", "3", "--patch-size", "16", "32", "32",
                 "--features", "8", "--depth", "3", "--batch-size", "2", "--no-augment",
                 "--device", "cpu", "--seed", "0"]  # fmt: skip


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-medml: error: ")
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    p = phantom_3d(seed=0, shape=SHAPE)
    # an origin and a non-trivial (but axis-aligned) affine that outputs must keep
    origin = (-12.0, 5.0, 7.5)
    affine = np.diag([*p.spacing[::-1], 1.0])
    affine[:3, 3] = origin[::-1]
    image = folder / "ct.nii.gz"
    labels = folder / "ct_seg.nii.gz"
    write_volume(image, Volume(p.image, p.spacing, origin, affine))
    write_volume(labels, Volume(p.labels, p.spacing, origin, affine, is_labels=True))
    return {"image": image, "labels": labels, "folder": folder}


@pytest.fixture(scope="module")
def trained(phantom_files, tmp_path_factory) -> dict[str, Path]:
    bundle = tmp_path_factory.mktemp("models") / "phantom-model"
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(["train", "--image", str(phantom_files["image"]), "--labels",
                     str(phantom_files["labels"]), "--out", str(bundle), *TRAIN_OPTIONS])  # fmt: skip
    assert code == 0, err.getvalue()
    return {**phantom_files, "bundle": bundle, "stderr": err.getvalue(), "stdout": out.getvalue()}


# --- help -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("train", ["--image", "--labels", "--out", "--spatial-dims", "--network", "--sparse",
                   "--background-id", "--epochs", "--steps-per-epoch", "--max-minutes",
                   "--patch-size", "--batch-size", "--optimizer", "--lr", "--loss",
                   "--val-fraction", "--seed", "--device", "--features", "--depth"]),
        ("predict", ["--model", "--image", "--out", "--probabilities", "--uncertainty", "--tta",
                     "--overlap", "--min-size", "--fill-holes", "--keep-largest", "--device"]),
        ("evaluate", ["--prediction", "--labels"]),
    ],
)  # fmt: skip
def test_help_lists_the_options(capsys, command, options):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    for option in options:
        assert option in out


def test_every_argument_has_help():
    import argparse

    from napari_medml.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("napari-medml", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{name} {action.option_strings} has no help"


def test_top_level_help_lists_commands(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for command in ("train", "predict", "evaluate"):
        assert command in out


def test_console_script_help_is_quick_and_light():
    script = Path(sys.executable).with_name("napari-medml")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: napari-medml" in done.stdout and "evaluate" in done.stdout
    # parsing the command line must not import the heavy stack
    code = ("import sys; from napari_medml.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'monai', 'napari', 'qtpy') if m in sys.modules))")
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert light.stdout.strip() == "[]", light.stderr


# --- train -> predict -> evaluate ----------------------------------------------------------


def test_train_writes_a_bundle(trained):
    assert (trained["bundle"] / "config.json").is_file()
    assert (trained["bundle"] / "weights.safetensors").is_file()
    config = json.loads((trained["bundle"] / "config.json").read_text())
    assert config["class_ids"] == [0, 1, 2, 3]
    assert config["spatial_dims"] == 3


def test_train_prints_epoch_lines(trained):
    err = trained["stderr"]
    assert "epoch 1/2" in err and "epoch 2/2" in err and "val_dice" in err
    # each epoch's line shows the rate its last step trained with, and the bundle's history keeps
    # the same (trial 29: it kept the next step's rate under the same name)
    from napari_medml.api import load_model

    kept = [h["learning_rate"] for h in load_model(trained["bundle"]).history]
    shown = [float(r) for r in re.findall(r"  lr (\S+)  ", err)]
    assert len(shown) == 2 and shown[0] > shown[1] > 0 and kept == pytest.approx(shown, rel=5e-3), (shown, kept)
    assert "saved model bundle" in err
    assert "Traceback" not in err
    assert trained["stdout"] == ""  # stdout stays free for results


def test_predict_keeps_spacing_origin_and_affine(trained, tmp_path, capsys, monkeypatch):
    from napari_medml.cli import progress

    monkeypatch.setattr(progress, "LOG_AFTER_S", 0.0)  # a line per tenth from the start, as in a long run
    out = tmp_path / "pred" / "ct_pred.nii.gz"
    probs, unc = tmp_path / "probs.nii.gz", tmp_path / "unc.tif"
    code, _, err = run_cli(capsys, "predict", "--model", trained["bundle"], "--image", trained["image"],
                           "--out", out, "--probabilities", probs, "--uncertainty", unc,
                           "--overlap", "0.25", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    source = read_volume(trained["image"])
    labels = read_volume(out)
    assert labels.data.shape == SHAPE
    assert np.issubdtype(labels.data.dtype, np.integer)
    assert set(np.unique(labels.data)) <= {0, 1, 2, 3}
    assert labels.is_labels
    assert labels.spacing == pytest.approx(source.spacing)
    assert labels.origin == pytest.approx(source.origin)
    np.testing.assert_allclose(labels.affine, source.affine)
    p = read_volume(probs)
    assert p.data.shape == (4, *SHAPE)
    np.testing.assert_allclose(p.data.sum(axis=0), 1.0, atol=2e-2)
    np.testing.assert_allclose(p.affine, source.affine)
    u = read_volume(unc)
    assert u.data.shape == SHAPE and u.spacing == pytest.approx(source.spacing)
    # trial 41: a 13-minute whole-volume prediction printed nothing into a log; a line per tenth now
    tenths = re.findall(r"predicted (\d+) of (\d+) windows \((\d+)%\)", err)
    assert tenths and tenths[-1][2] == "100" and tenths[-1][0] == tenths[-1][1], err
    assert "predicts it block by block" not in err  # a small image gets no block-wise tip
    monkeypatch.setattr(progress, "LOG_AFTER_S", 60.0)  # a run shorter than that says no tenths
    code, _, err = run_cli(capsys, "predict", "--model", trained["bundle"], "--image", trained["image"],
                           "--out", tmp_path / "quiet.nii.gz", "--device", "cpu")  # fmt: skip
    assert code == 0 and "windows (" not in err, err


def test_a_large_image_predicted_whole_is_told_of_the_block_wise_output(trained, tmp_path, capsys, monkeypatch):
    from napari_medml.cli import predict

    monkeypatch.setattr(predict, "LARGE_IN_MEMORY", 1000)
    code, _, err = run_cli(capsys, "predict", "--model", trained["bundle"], "--image", trained["image"],
                           "--out", tmp_path / "p.nii.gz", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert (f"image '{trained['image']}' has 0 M voxels, predicted whole in memory (several GB): --out NAME.zarr "
            "predicts it block by block") in err, err


def test_predict_follows_the_plans_test_time_augmentation(trained, tmp_path, capsys):
    """A model trained with the plan (the default) predicts with test-time augmentation and
    says so; the result equals --tta's; --no-tta turns it off; a --no-plan model keeps it off."""
    runs = {}
    for flag in ("", "--tta", "--no-tta"):
        probs = tmp_path / f"probs{flag}.nii.gz"
        code, out, err = run_cli(capsys, "predict", "--model", trained["bundle"], "--image", trained["image"],
                                 "--out", tmp_path / f"pred{flag}.nii.gz", "--probabilities", probs,
                                 "--device", "cpu", *([flag] if flag else []))  # fmt: skip
        assert code == 0, err
        runs[flag] = (read_volume(probs).data, err)
    assert json.loads((trained["bundle"] / "config.json").read_text())["plan"]["tta"] is True
    assert "(test-time augmentation: on, as the model's plan chose; --no-tta turns it off)" in runs[""][1]
    assert "test-time augmentation" not in runs["--no-tta"][1] + runs["--tta"][1]
    np.testing.assert_array_equal(runs[""][0], runs["--tta"][0])
    assert np.abs(runs[""][0] - runs["--no-tta"][0]).max() > 1e-3  # the flips changed the probabilities

    unplanned = tmp_path / "unplanned"
    code, _, err = run_cli(capsys, "train", "--image", trained["image"], "--labels", trained["labels"],
                           "--out", unplanned, *TRAIN_OPTIONS, "--epochs", "1", "--no-plan")  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", "--model", unplanned, "--image", trained["image"],
                           "--out", tmp_path / "unplanned.nii.gz", "--device", "cpu")  # fmt: skip
    assert code == 0 and "test-time augmentation" not in err, err


def test_evaluate_prints_json_per_class(trained, tmp_path, capsys):
    pred = tmp_path / "pred.nii.gz"
    assert main(["predict", "--model", str(trained["bundle"]), "--image", str(trained["image"]),
                 "--out", str(pred), "--tta", "--device", "cpu"]) == 0  # fmt: skip
    capsys.readouterr()
    code, out, err = run_cli(capsys, "evaluate", "--prediction", pred, "--labels", trained["labels"])
    assert code == 0, err
    result = json.loads(out)
    assert result["spacing"] == pytest.approx([2.0, 1.0, 1.0])
    assert set(result["classes"]) >= {"1", "2", "3"}
    for scores in result["classes"].values():
        assert 0.0 <= scores["dice"] <= 1.0
        assert 0.0 <= scores["iou"] <= scores["dice"] + 1e-9
        assert scores["hd95"] is None or scores["hd95"] >= 0.0
    assert 0.0 <= result["mean_dice"] <= 1.0


def test_evaluate_on_known_files_in_physical_units(tmp_path, capsys):
    gt = np.zeros((6, 10, 10), np.uint8)
    gt[2, 4, 4] = 5
    pred = np.zeros_like(gt)
    pred[3, 4, 4] = 5  # one slice away: 2.5 mm
    spacing = (2.5, 0.5, 0.5)
    write_volume(tmp_path / "gt_seg.tif", Volume(gt, spacing, (0.0,) * 3, is_labels=True))
    write_volume(tmp_path / "pred_seg.npy", Volume(pred, (1.0,) * 3, (0.0,) * 3, is_labels=True))
    code, out, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "pred_seg.npy",
                             "--labels", tmp_path / "gt_seg.tif")  # fmt: skip
    assert code == 0
    assert "warning" in err  # the .npy has no spacing: the labels' spacing is used
    result = json.loads(out)
    assert result["classes"]["5"]["dice"] == 0.0
    assert result["classes"]["5"]["hd95"] == pytest.approx(2.5)


# --- errors: one line, no traceback, non-zero exit ----------------------------------------------


def test_missing_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--image", tmp_path / "nope.nii.gz", "--labels",
                           tmp_path / "nope_seg.nii.gz", "--out", tmp_path / "m")  # fmt: skip
    assert_one_line_error(code, err, "nope.nii.gz", "does not exist")


def test_shape_mismatch_in_train(phantom_files, tmp_path, capsys):
    small = tmp_path / "small_seg.nii.gz"
    write_volume(small, Volume(np.zeros((24, 48, 40), np.uint8), (2.0, 1.0, 1.0), (0.0,) * 3, is_labels=True))
    code, _, err = run_cli(capsys, "train", "--image", phantom_files["image"], "--labels", small,
                           "--out", tmp_path / "m")  # fmt: skip
    assert_one_line_error(code, err, "shape", "small_seg.nii.gz")
    assert not (tmp_path / "m").exists()


def test_shape_mismatch_in_evaluate(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros((4, 5), np.uint8))
    np.save(tmp_path / "b.npy", np.zeros((5, 4), np.uint8))
    code, _, err = run_cli(capsys, "evaluate", "--prediction", tmp_path / "a.npy", "--labels", tmp_path / "b.npy")
    assert_one_line_error(code, err, "shape")


def test_missing_bundle(phantom_files, tmp_path, capsys):
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "no-model", "--image",
                           phantom_files["image"], "--out", tmp_path / "p.nii.gz")  # fmt: skip
    assert_one_line_error(code, err, "no-model")


def test_output_never_overwrites_the_input(trained, capsys):
    code, _, err = run_cli(capsys, "predict", "--model", trained["bundle"], "--image", trained["image"],
                           "--out", trained["image"])  # fmt: skip
    assert_one_line_error(code, err, "overwrite")


def test_unsupported_output_type(trained, tmp_path, capsys):
    code, _, err = run_cli(capsys, "predict", "--model", trained["bundle"], "--image", trained["image"],
                           "--out", tmp_path / "pred.png")  # fmt: skip
    assert_one_line_error(code, err, "pred.png")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["train", "--image", "a.nii", "--labels", "b.nii", "--out", "m", "--bogus"], ["--bogus"]),
        (["train", "--image", "a.nii", "--labels", "b.nii", "--out", "m", "--sparse"], ["--background-id"]),
        (["train", "--image", "a.nii", "--labels", "b.nii", "--out", "m", "--epochs", "x"], ["--epochs"]),
        (["train", "--image", "a.nii", "--image", "c.nii", "--labels", "b.nii", "--out", "m"], ["labels"]),
        (["predict", "--model", "m", "--image", "a.nii"], ["--out"]),
        (["evaluate", "--prediction", "a.nii", "--labels", "b.nii", "--device", "cpu"], ["--device"]),
        ([], ["COMMAND"]),
    ],
)
def test_bad_command_lines(capsys, argv, words):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(code, err, *words)


def test_bad_config_value_is_one_line(phantom_files, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--image", phantom_files["image"], "--labels",
                           phantom_files["labels"], "--out", tmp_path / "m", "--lr", "-1")  # fmt: skip
    assert_one_line_error(code, err, "--lr")


# --- Ctrl-C ---------------------------------------------------------------------------------


def test_first_interrupt_stops_training_and_keeps_the_model():
    from napari_medml.cli.progress import drive_training, stop_on_interrupt
    from napari_medml.engine.reports import StopToken, TrainReport

    stop = StopToken()

    def fake_fit():  # stands in for train.fit: honours the stop token like the engine does
        for step in range(1, 100):
            if step == 3:
                os.kill(os.getpid(), signal.SIGINT)
            if stop.stopped:
                return "best model"
            yield TrainReport(step=step, epoch=1, total_steps=99, train_loss=1.0, learning_rate=0.1,
                              elapsed_s=0.0, eta_s=None)  # fmt: skip
        return "finished"

    previous = signal.getsignal(signal.SIGINT)
    with stop_on_interrupt(stop):
        model, best = drive_training(fake_fit(), epochs=1)
    assert stop.stopped and model == "best model" and best is None
    assert signal.getsignal(signal.SIGINT) is previous


def test_a_log_without_a_bar_says_where_a_long_epoch_is(monkeypatch, capsys):
    """Review 33: a first epoch of minutes printed nothing to a log (the bar shows only in a
    terminal), so a run in a script or a batch job gave no sign of life until its end."""
    from napari_medml.cli import progress
    from napari_medml.engine.reports import TrainReport

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)

    def fit():
        for step in range(1, 5):
            yield TrainReport(step=step, epoch=1, total_steps=40, train_loss=0.5, learning_rate=0.1,
                              elapsed_s=step * 3.0, eta_s=600.0 - 60 * step, epoch_end=step == 4)
        return "model"

    model, _ = progress.drive_training(fit(), epochs=10)
    err = capsys.readouterr().err.splitlines()
    assert model == "model"
    assert err[:3] == ["napari-medml: epoch 1/10, step 1/40, loss 0.5000, about 9 min left",
                       "napari-medml: epoch 1/10, step 2/40, loss 0.5000, about 8 min left",
                       "napari-medml: epoch 1/10, step 3/40, loss 0.5000, about 7 min left"]
    assert err[3].startswith("epoch 1/10  loss 0.5000") and len(err) == 4  # the epoch's own line
    long = TrainReport(step=3, epoch=1, total_steps=40, train_loss=0.5, learning_rate=0.1, elapsed_s=9.0,
                       eta_s=7300.0, time_limit_s=7400.0)
    assert progress.step_line(long, 10) == "epoch 1/10, step 3, loss 0.5000, about 122 min left"  # no 1.2e+02


def test_a_block_wise_prediction_is_told_its_own_line_and_a_second_interrupt_aborts(capsys):
    from napari_medml.cli.predict_blocks import BLOCKS_KEPT
    from napari_medml.cli.progress import stop_on_interrupt
    from napari_medml.engine.reports import StopToken
    from napari_medml.errors import Cancelled, raise_if_stopped

    stop = StopToken()
    with pytest.raises(KeyboardInterrupt), stop_on_interrupt(stop, BLOCKS_KEPT):
        with pytest.raises(Cancelled, match="prediction stopped"):
            for _ in range(1000):  # the windows of a block-wise prediction
                if _ == 3:
                    os.kill(os.getpid(), signal.SIGINT)
                raise_if_stopped(stop, "prediction stopped")
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C: no waiting for a check
        for _ in range(10**6):
            pass
    err = capsys.readouterr().err
    assert stop.stopped and err.count("\n") == 2
    assert "stopping at the next window; the finished blocks are kept (Ctrl-C again to abort)" in err


def test_progress_works_without_tqdm(monkeypatch, capsys):
    import builtins

    from napari_medml.cli.common import progress_bar

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with progress_bar("step") as bar:
        bar.total = 10
        bar.update(3)
        bar.set_postfix(loss="0.1")
        bar.write("epoch 1/1", file=sys.stderr)
    out, err = capsys.readouterr()
    assert bar.n == 3 and out == "" and err == "epoch 1/1\n"


def test_a_stopped_block_wise_prediction_says_how_many_blocks_it_kept(tmp_path):
    """Trial 50: stopped in its first block, it said "the finished blocks are kept"; none were."""
    import json as json_

    from napari_medml.cli.predict_blocks import _kept_line

    out = tmp_path / "p.zarr"
    assert _kept_line(out) == (f"no block had finished, so '{out}' holds none yet; run the same command again to "
                               "start it over")
    out.mkdir()
    (out / ".zattrs").write_text(json_.dumps({"napari_medml": {"prediction": {"done": [], "complete": False}}}))
    assert _kept_line(out).startswith("no block had finished")
    (out / ".zattrs").write_text(json_.dumps({"napari_medml": {"prediction": {"done": [0, 2], "complete": False}}}))
    assert _kept_line(out, " and its maps") == (f"the 2 finished blocks are kept in '{out}' and its maps; run the same "
                                                "command again to resume")
