"""A resumed run keeps the best epoch of its earlier part: the weights and the metrics of
``<checkpoint_dir>/best``, also when nothing later improves or nothing is left to train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_medml.bundles.format import read_description, read_weights, write_bundle_files
from napari_medml.config import OptimConfig, TrainConfig
from napari_medml.engine.fit import resume_point, run_to_end
from napari_medml.engine.loop import run
from napari_medml.engine.reports import StopToken
from napari_medml.engine.task import Evaluation

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KEYS = [0.9, 0.5, 0.4, 0.3]  # validation peaks at epoch 1


class Model:
    def __init__(self, network, history, provenance, metrics):
        self.network, self.history, self.provenance, self.metrics = network, history, provenance, metrics

    def description(self):
        return {"schema_version": 1, "train_config": {}, "class_ids": [1], "in_channels": 1, "spatial_dims": 2,
                "patch_size": [1], "normalization": {}, "history": self.history, "provenance": self.provenance}

    def save(self, path):
        return write_bundle_files(self.description(), self.network, path)


def load(path):
    network = torch.nn.Linear(4, 1)
    network.load_state_dict(read_weights(Path(path)))
    desc = read_description(Path(path))
    return Model(network, desc["history"], desc["provenance"], {})


class Task:
    def __init__(self, base=None, epochs_done=0):
        torch.manual_seed(0)
        self.network = torch.nn.Linear(4, 1)
        if base is not None:
            self.network.load_state_dict(base.network.state_dict())
        self.epoch = epochs_done
        self.draws = torch.Generator().manual_seed(epochs_done)

    def start_message(self):
        return ""

    def train_mode(self):
        self.network.train()

    def next_batch(self):
        x = torch.randn(8, 4, generator=self.draws)
        return x, x.sum(1, keepdim=True)

    def loss(self, outputs, targets):
        return ((outputs - targets) ** 2).mean()

    def evaluate(self, device, amp):
        key = KEYS[self.epoch]
        self.epoch += 1
        return Evaluation(history={"val_dice": key}, key=(key,), metrics={"val_dice": key})

    def model(self, history, provenance, metrics):
        return Model(self.network, history, provenance, metrics)


def config(epochs: int) -> TrainConfig:
    return TrainConfig(optim=OptimConfig(epochs=epochs, steps_per_epoch=2, schedule="constant", learning_rate=0.05),
                       device="cpu", amp=False)


def stopped_after_epoch_2(folder: Path, epochs: int) -> None:
    stop = StopToken()
    for report in run(Task(), config(epochs), stop=stop, checkpoint_dir=folder):
        if report.epoch_end and report.epoch == 2:
            stop.stop()


@pytest.mark.parametrize("epochs", [4, 2], ids=["later-epochs-worse", "nothing-left-to-train"])
def test_a_resumed_run_returns_the_best_epoch_of_its_first_part(tmp_path, epochs):
    stopped_after_epoch_2(tmp_path, epochs)
    base, resume = resume_point(tmp_path, load)
    model = run_to_end(run(Task(base, epochs_done=2), config(epochs), checkpoint_dir=tmp_path, resume=resume))
    best = read_weights(tmp_path / "best")
    assert model.provenance["best_epoch"] == 1
    assert all(torch.equal(best[k], v) for k, v in model.network.state_dict().items())
    assert model.metrics == {"val_dice": 0.9, "epoch": 1}


def test_the_plateau_schedule_counts_an_epoch_better_on_a_later_part_of_the_key_as_better(tmp_path):
    """Trial 50: epochs of equal accuracy and a higher AUC were marked best, but the plateau schedule
    looked at the accuracy alone and halved the rate after them."""
    keys = iter([(0.5, 0.6), (0.5, 0.7), (0.5, 0.8), (0.5, 0.9), (0.5, 0.95), (0.5, 0.97), (0.5, 0.99)])

    class Rising(Task):
        def evaluate(self, device, amp):
            key = next(keys)
            return Evaluation(history={"val_accuracy": key[0]}, key=key, metrics={"val_accuracy": key[0]})

    cfg = TrainConfig(optim=OptimConfig(epochs=7, steps_per_epoch=1, schedule="plateau", learning_rate=0.05,
                                        early_stopping_patience=2), device="cpu", amp=False)
    model = run_to_end(run(Rising(), cfg, checkpoint_dir=tmp_path))
    assert [h["learning_rate"] for h in model.history] == [0.05] * 7  # every epoch better: never halved
    assert model.provenance["best_epoch"] == 7
