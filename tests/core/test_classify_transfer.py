"""A classifier that starts from a bundle takes the bundle's network, width, depth and norm
(``classification.transfer``), so a pretraining or segmentation U-Net of any depth starts
``unet-encoder`` with all of its encoder; unrelated networks are still refused. And the
classification tables: one row per class (layer features), per object, and the CSV."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest

from napari_medml.engine.fit import run_to_end
from napari_medml import api
from napari_medml.bundles.transfer import transfer_weights
from napari_medml.classification.data import image_samples
from napari_medml.classification.model import classification_config, load_classifier
from napari_medml.classification.tables import class_table, object_table, write_table
from napari_medml.classification.task import fit_classifier, train_classifier
from napari_medml.classification.transfer import describe_taken, start_architecture
from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.errors import InputError
from napari_medml.nn.classification import build_classifier_network
from napari_medml.samples import shape_classes


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shapes():
    sc = shape_classes(seed=0, n=24, size=32)
    return sc, image_samples(sc.images, labels=sc.labels, input_size=(32, 32))


def _seg_bundle(folder, network: str = "unet", depth: int = 2, dims: int = 2):
    from napari_medml.bundles.format import save_model
    from napari_medml.nn.segmentation import build_network
    from napari_medml.segmentation.model import Model

    config = TrainConfig(model=ModelConfig(network=network, channels=4, depth=depth))
    net = build_network(config.model, dims, 1, 2, patch_size=(32,) * dims)
    return save_model(Model(net, config, (0, 1), 1, dims, (32,) * dims, None,
                            {"method": "none", "channels": [{}]}), folder)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, shapes):
    """A tiny Pretrain bundle: 2D U-Net, width 4, depth 3, instance norm (the defaults)."""
    sc, _ = shapes
    config = TrainConfig(task="pretraining", data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2),
                         model=ModelConfig(channels=4, depth=3), augment=AugmentConfig.none(),
                         optim=OptimConfig(epochs=1, steps_per_epoch=2), device="cpu", seed=0)
    return api.train(list(sc.images[:4]), None, config).save(tmp_path_factory.mktemp("pre") / "pretrained")


def _classify_config(init_from, **model) -> TrainConfig:
    """The Classify widget's defaults (smallcnn, width 16, depth 4, batch norm), tiny run."""
    config = classification_config(2, epochs=2, steps_per_epoch=3, learning_rate=3e-3)
    return replace(config, augment=AugmentConfig.none(), data=replace(config.data, batch_size=4),
                   model=replace(config.model, init_from=str(init_from), **model), device="cpu")


def test_start_architecture_takes_the_bundles_network_width_depth_and_norm(tmp_path) -> None:
    seg = _seg_bundle(tmp_path / "seg", depth=2)
    config, taken = start_architecture(_classify_config(seg), 2)
    assert taken == {"network": "unet-encoder", "channels": 4, "depth": 2, "norm": "instance"}
    m = config.model
    assert (m.network, m.channels, m.depth, m.norm, m.init_from) == ("unet-encoder", 4, 2, "instance", str(seg))
    assert describe_taken(taken) == "network unet-encoder, width 4, depth 2, instance norm: the start bundle's"
    kept, taken = start_architecture(_classify_config(seg, channels=8), 2, keep=("channels",))
    assert kept.model.channels == 8 and "channels" not in taken and kept.model.depth == 2
    plain = classification_config(2)
    assert start_architecture(plain, 2) == (plain, {})  # no start bundle: nothing changes


def test_unrelated_or_other_dimension_bundles_are_refused_with_the_fix(tmp_path) -> None:
    dyn = _seg_bundle(tmp_path / "dyn", network="dynunet", depth=3)
    with pytest.raises(InputError, match=r"holds a 'dynunet' network, which no classifier shares: start from a "
                                         r"classification bundle or a segmentation or pretraining 'unet'"):
        start_architecture(_classify_config(dyn), 2)
    flat = _seg_bundle(tmp_path / "3d", dims=3)
    with pytest.raises(InputError, match="holds a 3D network but the samples are 2D: start from a 2D bundle"):
        start_architecture(_classify_config(flat), 2)


def test_share_counts_learned_tensors_only(tmp_path) -> None:
    """A batch-norm encoder takes every weight of an instance-norm U-Net (the running statistics
    are not learned); another width or an unrelated network is still refused."""
    seg = _seg_bundle(tmp_path / "seg", depth=3)
    batch = build_classifier_network(ModelConfig(network="unet-encoder", channels=4, depth=3, norm="batch"), 2, 1, 2)
    info = transfer_weights(batch, seg)
    learned = {k for k, _ in batch.named_parameters()}
    assert info["loaded"] == 15 and len(learned) == 23  # every conv and PReLU; not BN's weight/bias, not the head
    wide = build_classifier_network(ModelConfig(network="unet-encoder", channels=8, depth=3), 2, 1, 2)
    with pytest.raises(InputError, match=r"only 3 of this network's 17 learned tensors fit .* the Classify widget "
                                         r"takes them; on the command line leave out --network"):
        transfer_weights(wide, seg, advice="start with the bundle's network, width and depth: the Classify widget "
                                           "takes them; on the command line leave out --network")
    with pytest.raises(InputError, match="no weights"):
        transfer_weights(build_classifier_network(ModelConfig(network="smallcnn"), 2, 1, 2), seg)


@pytest.mark.parametrize("start", ["pretraining", "segmentation"])
def test_classification_starts_from_a_unet_bundle_and_trains(start, pretrained, shapes, tmp_path) -> None:
    """The Classify widget's config (smallcnn, width 16, depth 4, batch norm) from a Pretrain
    bundle (depth 3) or a Train segmentation bundle (depth 2): the whole encoder is taken."""
    _, samples = shapes
    bundle = pretrained if start == "pretraining" else _seg_bundle(tmp_path / "seg", depth=2)
    reports, gen = [], fit_classifier(samples, _classify_config(bundle, freeze_stages=1))
    clf = run_to_end(gen, reports)
    m = clf.config.model
    depth = 3 if start == "pretraining" else 2
    assert (m.network, m.channels, m.depth, m.norm) == ("unet-encoder", 4, depth, "instance")
    initial = clf.provenance["initial_weights"]
    encoder = [k for k in clf.network.state_dict() if not k.startswith("head")]
    assert initial["task"] == start and initial["loaded"] == len(encoder) == initial["total"] - 2
    assert clf.provenance["taken_from_start"]["depth"] == depth
    assert f"network unet-encoder, width 4, depth {depth}, instance norm: the start bundle's" in reports[0].message
    assert f"the output layer starts new (the bundle's network is for {start})" in reports[0].message
    ends = [r for r in reports if r.epoch_end]
    assert len(ends) == 2 and np.isfinite(ends[-1].train_loss)
    first = encoder[0]  # the first level's first convolution: frozen, so still the bundle's
    from napari_medml.bundles.format import read_weights

    np.testing.assert_array_equal(clf.network.state_dict()[first].cpu().numpy(), read_weights(bundle)[first].numpy())
    back = load_classifier(clf.save(tmp_path / "clf"))
    assert (back.config.model.network, back.config.model.depth) == ("unet-encoder", depth)
    np.testing.assert_allclose(back.predict_proba(samples), clf.predict_proba(samples), atol=1e-5)


def test_a_classifier_of_other_classes_says_its_output_layer_starts_new(shapes, tmp_path) -> None:
    """Trial 38: a 3-class classifier as the start of a 2-class run said only "14 of 16 tensors"."""
    _, samples = shapes
    three = replace(samples, y=np.where(np.arange(len(samples.y)) % 5 == 0, 3, samples.y))
    config = replace(_classify_config(None), model=ModelConfig(network="smallcnn", channels=4, depth=2))
    start = train_classifier(three, config).save(tmp_path / "three")
    for start_samples, new in ((samples, True), (three, False)):
        reports, gen = [], fit_classifier(start_samples, replace(config, model=replace(config.model,
                                                                                       init_from=str(start))))
        while True:
            try:
                reports.append(next(gen))
            except StopIteration:
                break
        said = "the output layer starts new (the bundle's classifier has other classes)" in reports[0].message
        assert said == new, reports[0].message


def test_keep_holds_the_command_lines_width_and_then_refuses(pretrained, shapes) -> None:
    _, samples = shapes
    config = _classify_config(pretrained, network="unet-encoder", channels=8)
    with pytest.raises(InputError, match="only .* learned tensors fit .* leave out --network, --features and --depth"):
        train_classifier(samples, config, keep=("network", "channels"))


def test_class_table_one_row_per_class_with_background() -> None:
    classes = np.array([2, 1, 2, 2])
    proba = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]], np.float32)
    table = class_table(classes, proba, (1, 2), {1: "round", 2: "square"}, zero="background")
    assert table["index"].tolist() == [0, 1, 2]
    assert table["class_name"].tolist() == ["background", "round", "square"]
    assert table["count"].tolist() == [0, 1, 3]
    np.testing.assert_allclose(table["mean_prob"], [np.nan, 0.8, (0.9 + 0.7 + 0.6) / 3], rtol=1e-6)
    none = class_table(np.array([1, 1]), np.array([[0.9, 0.1], [0.6, 0.4]]), (1, 5))
    assert none["index"].tolist() == [1, 5] and none["class_name"].tolist() == ["class 1", "class 5"]
    assert np.isnan(none["mean_prob"][1]) and none["count"].tolist() == [2, 0]


def test_object_table_and_csv(tmp_path) -> None:
    samples = {"object": np.array([3, 7]), "class": np.array([2, 1]), "prob_1": np.array([0.25, 0.5], np.float32),
               "prob_2": np.array([0.75, 0.5], np.float32), "size": np.array([10, 20])}
    table = object_table(samples, {1: "a", 2: "b"})
    assert list(table) == ["index", "object", "class", "class_name", "prob_1", "prob_2", "size"]
    assert table["index"].tolist() == [3, 7] and table["class_name"].tolist() == ["b", "a"]
    path = write_table(tmp_path / "sub" / "objects.csv", samples)
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [["object", "class", "prob_1", "prob_2", "size"], ["3", "2", "0.25", "0.75", "10"],
                    ["7", "1", "0.5", "0.5", "20"]]


def test_a_resumed_run_from_a_start_bundle_says_its_weights_are_the_checkpoints(shapes, tmp_path) -> None:
    """Note 45: resuming a run that began from a start bundle said "14 of 16 tensors from <bundle>", as
    if those were loaded now; the weights are the checkpoint's."""
    from napari_medml.engine.reports import StopToken

    _, samples = shapes
    config = replace(_classify_config(None), model=ModelConfig(network="smallcnn", channels=4, depth=2))
    start = train_classifier(samples, config).save(tmp_path / "start")
    tuned = replace(config, model=replace(config.model, init_from=str(start)), checkpoint_dir=str(tmp_path / "ck"),
                    optim=replace(config.optim, epochs=3))
    stop, first = StopToken(), None
    for report in fit_classifier(samples, tuned, stop=stop):
        first = first or report
        if report.step >= 2:
            stop.stop()
    assert f"tensors from {start}" in first.message and "checkpoint" not in first.message
    resumed = next(fit_classifier(samples, tuned, resume_from=tmp_path / "ck"))
    assert f"; the weights are the checkpoint's at step {resumed.step - 1} (the run began with " in resumed.message
    assert resumed.message.count(f"tensors from {start}") == 1
