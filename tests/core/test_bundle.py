"""Bundles: round trip, damaged bundles, atomic writes, exports."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_medml.bundles.export import export_onnx, export_torchscript
from napari_medml.api import load_model
from napari_medml.bundles.format import save_model  # noqa: E402
from napari_medml.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from napari_medml.errors import BundleError, MedMLError  # noqa: E402
from napari_medml.segmentation.model import Model  # noqa: E402
from napari_medml.nn.segmentation import build_network  # noqa: E402


def _model(in_channels: int = 1, network: str = "unet") -> Model:
    torch.manual_seed(0)
    cfg = TrainConfig(data=DataConfig(spatial_dims=2), model=ModelConfig(network=network, channels=4, depth=3),
                      class_names={5: "organ"}, seed=3)
    net = build_network(cfg.model, 2, in_channels, 3, patch_size=(16, 16), spacing=(1.0, 1.0))
    norm = {"method": "zscore", "channels": [{"mean": 0.5, "std": 2.0}] * in_channels}
    return Model(net, cfg, (0, 5, 7), in_channels, 2, (16, 16), (1.0, 1.0), norm,
                 history=[{"epoch": 1, "train_loss": 0.5}], provenance={"note": "test"})


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).normal(size=(40, 36)).astype(np.float32)


@pytest.mark.parametrize("network", ["unet", "dynunet", "segresnet"])
def test_save_load_gives_identical_predictions(tmp_path, image, network):
    model = _model(network=network)
    path = model.save(tmp_path / "bundle")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.safetensors"]
    loaded = load_model(path)
    assert loaded.class_ids == (0, 5, 7) and loaded.patch_size == (16, 16)
    assert loaded.normalization == model.normalization and loaded.config == model.config
    a, b = model.predict(image).labels, loaded.predict(image).labels
    np.testing.assert_array_equal(a, b)
    # no temporary folders left next to the bundle
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_config_json_describes_everything(tmp_path):
    desc = json.loads((save_model(_model(), tmp_path / "b") / "config.json").read_text())
    for key in ("schema_version", "task", "network", "spatial_dims", "in_channels", "out_channels", "class_ids",
                "class_names", "preprocessing", "normalization", "patch_size", "spacing", "history", "versions",
                "seed", "provenance", "train_config"):
        assert key in desc, key
    assert desc["class_ids"] == [0, 5, 7] and desc["class_names"]["5"] == "organ"
    assert set(desc["versions"]) == {"torch", "monai", "napari_medml", "numpy"}
    assert desc["network"]["name"] == "unet" and desc["seed"] == 3


def test_overwrite_replaces_a_bundle_but_not_other_folders(tmp_path):
    path = save_model(_model(), tmp_path / "b")
    save_model(_model(), path)  # replacing a bundle is fine
    assert load_model(path).class_ids == (0, 5, 7)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_text("x")
    with pytest.raises(BundleError, match="holds other files"):
        save_model(_model(), other)


@pytest.mark.parametrize("user_file", ["checkpoints/mine.txt", "members/fold-1/notes/mine.txt", "config.json"])
def test_a_folder_with_bundle_names_but_the_users_files_is_refused(tmp_path, user_file):
    """Trial 20: a folder holding the user's files inside checkpoints/ or members/, or the user's
    own config.json, was taken for a bundle and replaced: the files were deleted."""
    folder = tmp_path / "mine"
    (folder / user_file).parent.mkdir(parents=True, exist_ok=True)
    (folder / user_file).write_text("precious")
    with pytest.raises(BundleError, match="choose a new or empty folder") as caught:
        save_model(_model(), folder)
    assert (user_file.split("/")[0] + " folder" in str(caught.value)) or "not a napari-medml model's" in str(
        caught.value)
    assert (folder / user_file).read_text() == "precious"
    # an interrupted command-line run's checkpoints (and a writer's leftovers) are the bundle's own
    ours = tmp_path / "ours"
    save_model(_model(), ours / "checkpoints" / "last")
    (ours / "checkpoints" / ".last.tmp-1-0123abcd").mkdir()
    (ours / "checkpoints" / "run.lock").write_text("1")
    assert load_model(save_model(_model(), ours)).class_ids == (0, 5, 7)


FIX = "the bundle is damaged: copy the folder again from where it came (or a backup), or train the model again"


def test_damaged_bundles_raise_bundle_error_naming_the_path(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_model(tmp_path / "missing")
    path = save_model(_model(), tmp_path / "b")
    (path / "weights.safetensors").rename(tmp_path / "w.safetensors")
    with pytest.raises(BundleError, match="no weights.safetensors") as info:
        load_model(path)
    assert str(info.value).endswith(FIX)  # every damaged-bundle line says what to do
    (tmp_path / "w.safetensors").rename(path / "weights.safetensors")
    good = (path / "config.json").read_text()
    (path / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"config\.json is not valid JSON") as info:
        load_model(path)
    assert str(info.value).endswith(FIX)
    desc = json.loads(good)
    del desc["class_ids"]
    (path / "config.json").write_text(json.dumps(desc))
    with pytest.raises(BundleError, match="lacks class_ids") as info:
        load_model(path)
    assert str(info.value).endswith(FIX)
    desc = json.loads(good)
    desc["class_ids"] = [0, 5]  # weights have 3 output channels
    (path / "config.json").write_text(json.dumps(desc))
    with pytest.raises(BundleError, match="wrong shape") as info:
        load_model(path)
    assert str(path) in str(info.value) and str(info.value).endswith(
        "the two files are not of one model; copy the folder again from where it came (or a backup), or train the "
        "model again")
    (path / "config.json").write_text(good)
    (path / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="cannot be read") as info:
        load_model(path)
    assert str(info.value).endswith(FIX)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError) as info:
        load_model(tmp_path / "empty")
    assert str(info.value) == (f"model bundle {tmp_path / 'empty'} has no config.json: it is not a bundle or it is "
                               "damaged; choose the folder that 'train --out' or Save model wrote (it holds "
                               "config.json and weights.safetensors)")
    with pytest.raises(BundleError) as info:  # the folder above a bundle: name the bundles in it
        load_model(tmp_path)
    assert str(info.value).endswith("damaged; it holds the bundle(s) b: choose one of them")


def test_bundle_files_get_the_permissions_of_any_new_file(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = save_model(_model(), tmp_path / "b")
    finally:
        os.umask(old)
    # safetensors writes 0600: a bundle copied to a shared folder had weights no one else could read
    assert {p.name: p.stat().st_mode & 0o777 for p in path.iterdir()} == {"config.json": 0o644,
                                                                           "weights.safetensors": 0o644}


@pytest.mark.parametrize("key, value, said", [
    ("class_ids", [0, 5, 5], "class_ids [0, 5, 5] repeat an id"),
    ("normalization", {"kind": "weird"}, "normalization method None is none of zscore"),
    ("normalization", {"method": "zscore", "channels": [{"mean": 0.5}]}, "normalization channel 0 needs finite"),
    ("normalization", {"method": "zscore", "channels": []}, "normalization has 0 channel(s) of statistics for 1"),
    ("patch_size", [-1, 16], "patch_size [-1, 16] is not 2 sizes of at least 1"),
    ("patch_size", [16], "patch_size [16] is not 2 sizes"),
    ("spacing", [0, 1], "spacing [0.0, 1.0] is not 2 sizes above 0"),
])
def test_a_hand_edited_config_that_would_predict_wrongly_is_refused(tmp_path, key, value, said):
    path = save_model(_model(), tmp_path / "b")
    desc = json.loads((path / "config.json").read_text())
    desc[key] = value
    (path / "config.json").write_text(json.dumps(desc))
    with pytest.raises(BundleError) as info:
        load_model(path)
    assert said in str(info.value) and "the bundle is damaged" in str(info.value)


@pytest.mark.parametrize("version, said", [(None, "has no schema_version: the bundle is damaged"),
                                           ("1", "has schema_version '1', not a whole number: the bundle is damaged"),
                                           (99, "has schema_version 99; this napari-medml reads up to 1: update")])
def test_a_schema_version_that_is_not_a_number_is_damage_not_a_newer_version(tmp_path, version, said):
    path = save_model(_model(), tmp_path / "b")
    desc = json.loads((path / "config.json").read_text())
    desc.pop("schema_version")
    if version is not None:
        desc["schema_version"] = version
    (path / "config.json").write_text(json.dumps(desc))
    with pytest.raises(BundleError, match=re.escape(said)):
        load_model(path)


def test_a_save_interrupted_between_its_two_renames_loses_no_bundle(tmp_path):
    import os
    import subprocess
    import sys

    from napari_medml.io.atomic import remove_stale_temps

    path = save_model(_model(), tmp_path / "b")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a writer that no longer runs
    aside = tmp_path / f".b.old-{dead}-0123abcd"
    os.replace(path, aside)  # killed after moving the old bundle aside, before moving the new one in
    with pytest.raises(BundleError) as info:
        load_model(path)
    assert str(info.value) == (f"model bundle {path} does not exist: a save that was interrupted while replacing "
                               f"it left the earlier bundle at '{aside}'; rename that folder to '{path}'")
    remove_stale_temps(path)  # what the next save does first: the only copy is put back, not removed
    assert not aside.exists() and load_model(path).class_ids == (0, 5, 7)


def test_a_save_that_fails_moving_the_new_bundle_in_puts_the_earlier_one_back(tmp_path, monkeypatch):
    import os

    from napari_medml.bundles import format as bundle_format

    path = save_model(_model(), tmp_path / "b")
    replace, calls = os.replace, []

    def failing_second(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the earlier bundle is aside; the new one cannot be moved in
            raise OSError("disk gone")
        return replace(src, dst)

    monkeypatch.setattr(bundle_format.os, "replace", failing_second)
    with pytest.raises(OSError, match="disk gone"):
        save_model(_model(), path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no copy aside, no temp
    assert load_model(path).class_ids == (0, 5, 7)


def test_missing_tensor_keys_are_reported(tmp_path):
    from safetensors.torch import load_file, save_file

    path = save_model(_model(), tmp_path / "b")
    state = load_file(str(path / "weights.safetensors"))
    state.pop(sorted(state)[0])
    save_file(state, str(path / "weights.safetensors"))
    with pytest.raises(BundleError, match="missing 1 tensor"):
        load_model(path)


def test_image_with_other_channels_or_dims_is_refused(tmp_path, image):
    two = load_model(save_model(_model(in_channels=2), tmp_path / "two"))
    with pytest.raises(BundleError, match="trained on 2 channel.*has 1"):
        two.predict(image)
    with pytest.raises(BundleError, match="trained on 2 channel.*has 4"):
        two.predict(np.zeros((4, 8, 8, 8)), channel_axis=0)
    with pytest.raises(BundleError, match="2D image"):
        two.predict(np.zeros((2, 8)), channel_axis=0)
    one = _model()
    with pytest.raises(MedMLError, match=r"trained on 1 channel.*has 3"):
        one.predict(np.stack([image] * 3, -1)[None], channel_axis=-1)
    # a stack in front of a 2D model's plane is predicted slice by slice
    stack = np.stack([image, image[::-1], image])
    pred = one.predict(stack)
    assert pred.labels.shape == stack.shape
    np.testing.assert_array_equal(pred.labels[1], one.predict(image[::-1]).labels)
    with pytest.raises(MedMLError, match="3 channel.*set channel_axis=0"):
        _model(in_channels=3).predict(np.stack([image] * 3))
    assert two.predict(np.stack([image, image], -1), channel_axis=-1).labels.shape == image.shape


def test_export_torchscript(tmp_path):
    model = _model()
    path = export_torchscript(model, tmp_path / "m.pt")
    scripted = torch.jit.load(str(path))
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model.network.eval()(x))


def test_export_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    path = export_onnx(_model(), tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(str(path)))


@pytest.mark.parametrize("task, command", [("pretraining", "pretrain"), ("segmentation", "train")])
def test_a_killed_runs_folder_names_the_command_that_resumes_it(tmp_path, task, command):
    """Review 21: a killed pretraining run's folder named 'napari-medml train ... --resume', which refuses it."""
    best = tmp_path / "run" / "checkpoints" / "best"
    best.mkdir(parents=True)
    (best / "config.json").write_text(json.dumps({"task": task}))
    with pytest.raises(BundleError) as info:
        load_model(tmp_path / "run")
    assert f"continue it with the same 'napari-medml {command} ... --out {tmp_path / 'run'}' and --resume" in str(
        info.value)


@pytest.mark.parametrize("listing_at_swap", [1, 2])
def test_a_checkpoint_swapped_while_the_folder_is_checked_is_no_error(tmp_path, monkeypatch, listing_at_swap):
    """CI 31: a second run on a running run's --out failed with "file '.../checkpoints/.best.old-...' does not
    exist" (the walk met the running run's atomic swap of its best checkpoint) instead of being told the folder
    is in use. A folder that goes while the bundle folder is checked is skipped; the user's files still count."""
    import os

    from napari_medml.bundles import format as bundle_format

    path = save_model(_model(), tmp_path / "b")
    for name in ("last", ".best.old-123-abc", "best"):
        (path / "checkpoints" / name).mkdir(parents=True)
        (path / "checkpoints" / name / "train_state.json").write_text("{}")
    listing = os.scandir

    class Listed:  # os.scandir's entries, listed at once: an iterator and a context manager, as os.scandir's
        def __init__(self, entries):
            self.entries = iter(list(entries))

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.entries)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    calls = []

    def swapping_scandir(folder="."):  # the running run renames its old best away after a listing of the folder
        with listing(folder) as entries:
            listed = Listed(entries)
        old = path / "checkpoints" / ".best.old-123-abc"
        if os.fspath(folder) == os.fspath(path / "checkpoints"):
            calls.append(folder)
            if len(calls) == listing_at_swap and old.exists():
                (old / "train_state.json").unlink()
                old.rmdir()
        return listed

    monkeypatch.setattr(os, "scandir", swapping_scandir)
    assert bundle_format.check_bundle_path(path) == path
    (path / "checkpoints" / "best" / "mine.txt").write_text("precious")
    with pytest.raises(BundleError, match=r"holds other files in its checkpoints folder \('checkpoints/best/mine"):
        bundle_format.check_bundle_path(path)
