"""``train --augment-scale F``: the plan's augmentation strength can be set, as every other line
of the plan (review 43: only --no-augment overrode it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medml.cli import main
from napari_medml.config import AugmentConfig
from napari_medml.samples import touching_objects_2d


def test_the_augmentation_strength_is_an_option_the_plan_keeps(tmp_path, capsys) -> None:
    s = touching_objects_2d(0, shape=(48, 96))
    np.save(tmp_path / "image.npy", s.image.astype(np.float32))
    np.save(tmp_path / "labels.npy", (s.labels > 0).astype(np.uint8))
    files = ["--image", str(tmp_path / "image.npy"), "--labels", str(tmp_path / "labels.npy"), "--device", "cpu",
             "--seed", "0"]
    short = ["--epochs", "1", "--steps-per-epoch", "2", "--channels", "4", "--depth", "2", "--patch-size", "32", "32",
             "--batch-size", "1"]
    assert main(["train", *files, *short, "--augment-scale", "2", "--out", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    # trial 44: the line said "as set", without the value or the plan's
    assert "augmentation: 2.00 of the default probabilities (set by you; plan: 0.25)" in err, err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    augment = config["train_config"]["augment"]
    want = AugmentConfig().scaled(2.0)
    assert augment["flip"]["prob"] == pytest.approx(min(1.0, 2 * AugmentConfig().flip.prob)) == want.flip.prob
    assert augment["noise"]["prob"] == pytest.approx(2 * AugmentConfig().noise.prob)
    # left out, the plan scales the defaults to the run's length (2 steps: a quarter of them)
    assert main(["train", *files, *short, "--out", str(tmp_path / "planned")]) == 0
    planned = json.loads((tmp_path / "planned" / "config.json").read_text())["train_config"]["augment"]
    assert planned["flip"]["prob"] == pytest.approx(0.25 * AugmentConfig().flip.prob)
    assert main(["train", *files, *short, "--augment-scale", "-1", "--out", str(tmp_path / "bad")]) == 2
