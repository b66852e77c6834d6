"""``napari-medml train --max-minutes`` trains the ensemble its plan chose (run in-process
through ``main()``, so that the bar an ensemble must pass can be lowered for a run of seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medml.cli import main
from napari_medml.samples import touching_objects_2d
from napari_medml.segmentation import plan_folds


@pytest.fixture()
def files(tmp_path):
    s = touching_objects_2d(0, shape=(48, 96))
    np.save(tmp_path / "image.npy", s.image.astype(np.float32))
    np.save(tmp_path / "labels.npy", (s.labels > 0).astype(np.uint8))
    return tmp_path


def train(capsys, files, name, *extra):
    code = main(["train", "--image", str(files / "image.npy"), "--labels", str(files / "labels.npy"),
                 "--max-minutes", "0.1", "--device", "cpu", "--seed", "0", "--out", str(files / name), *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return err


def test_train_shares_its_time_limit_with_the_ensemble_the_plan_chose(files, capsys, monkeypatch):
    monkeypatch.setattr(plan_folds, "MEMBER_STEPS", 1)  # any step time passes: a run of seconds
    err = train(capsys, files, "planned")
    assert "  ensemble (folds): 4 (each model still takes about " in err, err
    assert "steps in its 0.025 min;" in err
    assert "fold 4 of 4" in err and "ensemble of 4 models" in err
    # each fold's first epoch line names it, however few of its planned epochs the clock let fold 1 train
    assert all(f"fold {k}/4  epoch 1/" in err for k in range(1, 5)), err
    bundle = files / "planned"
    assert sorted(p.name for p in (bundle / "members").iterdir()) == [f"fold-{k}" for k in range(1, 5)]
    config = json.loads((bundle / "config.json").read_text())
    assert config["plan"]["folds"] == 4 and config["plan"]["tta"] is True
    code = main(["predict", "--model", str(bundle), "--image", str(files / "image.npy"), "--out",
                 str(files / "pred.npy"), "--uncertainty", str(files / "unc.npy"), "--device", "cpu"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert np.load(files / "pred.npy").shape == (48, 96) and np.load(files / "unc.npy").max() > 0

    # the user's number of models wins, and says so
    err = train(capsys, files, "one", "--folds", "1")
    assert "  ensemble (folds): 1 (set by you)" in err and "ensemble of" not in err
    assert not (files / "one" / "members").exists()
    assert json.loads((files / "one" / "config.json").read_text())["plan"]["folds"] == 1


def test_members_that_would_train_too_little_make_one_model(files, capsys, monkeypatch):
    monkeypatch.setattr(plan_folds, "MEMBER_STEPS", 10**9)
    err = train(capsys, files, "single")
    assert "  ensemble (folds): 1 (one model: 4 models would take only about " in err, err
    assert "steps each in 0.025 min, 1000000000 needed)" in err
    assert not (files / "single" / "members").exists()
