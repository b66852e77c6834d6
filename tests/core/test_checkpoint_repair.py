"""A run killed between the two renames that replace a checkpoint folder (``last`` -> its
hidden old name, the new copy -> ``last``) leaves no ``last``: looking for a checkpoint
puts back the newest complete copy first, so ``--resume`` goes on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from napari_medml.bundles.checkpoints import find_checkpoint, has_checkpoint, read_checkpoint, write_checkpoint
from napari_medml.bundles.format import write_bundle_files


class Model:
    def __init__(self) -> None:
        self.network = torch.nn.Linear(4, 1)

    def description(self) -> dict:
        return {"schema_version": 1, "train_config": {}, "class_ids": [1], "in_channels": 1, "spatial_dims": 2,
                "patch_size": [1], "normalization": {}}

    def save(self, path):
        return write_bundle_files(self.description(), self.network, path)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def checkpoint(folder, step: int):
    network = Model()
    optimizer = torch.optim.SGD(network.network.parameters(), lr=0.1)
    return write_checkpoint(network, folder, optimizer, None, None, {"step": step, "epoch": 1})


@pytest.mark.parametrize("new_copy_done", [True, False], ids=["new-copy-complete", "only-the-old-copy"])
def test_a_checkpoint_moved_aside_by_a_killed_writer_is_found(tmp_path, new_copy_done):
    pid = dead_pid()
    os.replace(checkpoint(tmp_path / "last", 5), tmp_path / f".last.old-{pid}-0000aaaa")
    if new_copy_done:  # the writer moves the old copy aside only once the new one is written
        os.replace(checkpoint(tmp_path / "new", 10), tmp_path / f".last.tmp-{pid}-0000bbbb")
    assert has_checkpoint(tmp_path)
    found = find_checkpoint(tmp_path)
    assert found == tmp_path / "last"
    assert read_checkpoint(found)[0]["step"] == (10 if new_copy_done else 5)


def test_checkpoints_set_aside_by_a_killed_save_are_found(tmp_path, monkeypatch):
    """A stopped run's save sets ``<bundle>/checkpoints`` aside while it writes the bundle; killed
    meanwhile (SIGKILL after SIGTERM's grace time), it left them where --resume did not look."""
    import napari_medml.bundles.checkpoints as checkpoints

    bundle = tmp_path / "model"
    checkpoint(checkpoints.checkpoint_folder(bundle) / "last", 5)
    seen = []

    def killed(model, path):  # what the save leaves on disk while it writes
        seen.extend(p.name for p in tmp_path.iterdir() if p.name != "model")
        raise RuntimeError("killed")

    monkeypatch.setattr(checkpoints, "_save", killed)
    with pytest.raises(RuntimeError):
        checkpoints.save_run(Model(), bundle, stopped=True)
    [aside] = seen
    assert aside.startswith(f".model.checkpoints-{os.getpid()}-")
    # the same, left by a process that no longer runs
    os.replace(bundle / "checkpoints", tmp_path / aside.replace(str(os.getpid()), str(dead_pid())))
    assert has_checkpoint(bundle / "checkpoints")
    assert read_checkpoint(find_checkpoint(bundle / "checkpoints"))[0]["step"] == 5


@pytest.mark.parametrize(("damaged", "how"), [("train_state.safetensors", "cut"), ("train_state.json", "cut"),
                                              ("weights.safetensors", "cut"), ("config.json", "cut"),
                                              ("config.json", "delete"), ("train_state.json", "delete")])
def test_a_damaged_checkpoint_is_named_and_the_way_on_is_said(tmp_path, damaged, how):
    """Trial 46: a truncated train_state.safetensors gave safetensors' own "SafetensorError: ...
    invalid header length", naming no file; a damaged checkpoint's weights advised copying a bundle."""
    from napari_medml import api
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from napari_medml.engine.fit import run_to_end
    from napari_medml.errors import BundleError
    from napari_medml.samples import phantom_3d

    p = phantom_3d(0, shape=(16, 48, 48))
    cfg = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=1),
                      augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                      optim=OptimConfig(epochs=2, steps_per_epoch=2), device="cpu", checkpoint_dir=str(tmp_path))
    run_to_end(api.fit(p.image[8], p.labels[8], cfg))
    file = tmp_path / "last" / damaged
    if how == "cut":
        file.write_bytes(file.read_bytes()[:20])
    else:
        file.unlink()
    with pytest.raises(BundleError) as caught:
        run_to_end(api.fit(p.image[8], p.labels[8], cfg, resume_from=str(tmp_path)))
    line = str(caught.value)
    first = {"delete": f"{file} is missing" if damaged == "train_state.json" else
             f"model bundle {tmp_path / 'last'} has no config.json:"}.get(how, str(file))
    assert line.startswith(first) and "\n" not in line, line
    said = line.replace(str(tmp_path), "")  # (the test folder is named "damaged" too)
    assert said.count("damaged") == 1 and "choose" not in said and "save or copy" not in said, line
    assert line.endswith(f": the run's checkpoint is damaged, so it cannot go on: start it again without resuming, "
                         f"or use its best epoch so far, the bundle '{tmp_path / 'best'}'"), line
    assert "copy the folder again" not in line
    best = api.load_model(tmp_path / "best")  # the way out it names works
    assert best.predict(p.image[8]).labels.shape == p.image[8].shape
