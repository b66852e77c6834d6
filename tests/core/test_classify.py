"""Classification end to end on synthetic data: image, object and tile level, bundles,
transfer learning with frozen stages, and clear errors. CPU, small networks, fixed seeds."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_medml.engine.fit import run_to_end
from napari_medml.classification.model import Classifier, classification_config, load_classifier
from napari_medml.classification.task import fit_classifier, train_classifier
from napari_medml.classification.data import image_samples
from napari_medml.classification.levels import object_samples, tile_samples
from napari_medml.classification.split import stratified_split
from napari_medml.bundles.transfer import transfer_weights
from napari_medml.nn.classification import CLASSIFIER_NETWORKS, build_classifier_network, stages
from napari_medml.config import AugmentConfig, AugmentSpec, ModelConfig, OptimConfig, TrainConfig
from napari_medml.errors import BundleError, ConfigError, InputError
from napari_medml.samples import shape_classes
from napari_medml.engine.reports import StopToken, TrainReport

pytestmark = pytest.mark.usefixtures("one_torch_thread")


FLIPS = replace(AugmentConfig.none(), flip=AugmentSpec(0.5), rotate90=AugmentSpec(0.25))


def small_config(epochs: int = 6, steps: int = 10, **model: object) -> TrainConfig:
    cfg = classification_config(2, epochs=epochs, steps_per_epoch=steps, learning_rate=3e-3)
    return replace(cfg, augment=FLIPS, data=replace(cfg.data, val_fraction=0.25),
                   model=replace(cfg.model, channels=8, depth=3, **model))


@pytest.fixture(scope="module")
def shapes():
    sc = shape_classes(seed=0, n=64, size=64)
    return sc, image_samples(sc.images, labels=sc.labels, input_size=(32, 32))


@pytest.fixture(scope="module")
def image_run(shapes):
    _, samples = shapes
    reports: list[TrainReport] = []
    gen = fit_classifier(samples, small_config(epochs=10))
    return run_to_end(gen, reports), reports


def test_image_level_accuracy_on_held_out_split(image_run) -> None:
    clf, reports = image_run
    assert isinstance(clf, Classifier) and clf.class_ids == (1, 2) and clf.level == "image"
    ends = [r for r in reports if r.epoch_end]
    assert len(ends) == 10 and all(r.val_loss is not None for r in ends)
    assert set(ends[-1].val_metrics) >= {"accuracy", "balanced_accuracy", "auc", "macro_f1"}
    assert "16 validation" in reports[0].message
    m = clf.metrics
    assert m["split"] == "validation" and m["n"] == 16
    assert m["accuracy"] >= 0.9 and m["auc"] >= 0.95
    assert np.asarray(m["confusion_matrix"]).sum() == 16
    assert m["roc"][1]["fpr"][0] == 0.0 and m["threshold"] is not None


def test_stratified_split_keeps_classes_and_seed() -> None:
    y = np.array([1] * 10 + [2] * 5 + [3] * 1 + [0] * 4)
    train, val = stratified_split(y, 0.2, seed=0)
    assert sorted(np.r_[train, val].tolist()) == list(range(16))
    assert (y[val] == 1).sum() == 2 and (y[val] == 2).sum() == 1 and (y[val] == 3).sum() == 0
    np.testing.assert_array_equal(val, stratified_split(y, 0.2, seed=0)[1])


def _object_scene(seed: int = 1, rows: int = 6, cols: int = 7, cell: int = 40):
    """~40 smooth and irregular objects in a grid, with their instance ids and true classes."""
    sc = shape_classes(seed=seed, n=rows * cols, size=cell)
    image = np.zeros((rows * cell, cols * cell), np.float32)
    instances = np.zeros(image.shape, np.int32)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        cell_slice = (slice(r * cell, (r + 1) * cell), slice(c * cell, (c + 1) * cell))
        image[cell_slice] = sc.images[i]
        instances[cell_slice][sc.labels[i] > 0] = i + 1
    return image, instances, dict(zip(range(1, rows * cols + 1), sc.classes.tolist()))


def test_object_level_accuracy_on_unpainted_objects() -> None:
    image, instances, truth = _object_scene()
    rng = np.random.default_rng(0)
    ids = np.unique(instances)[1:]
    paint = np.zeros_like(instances)
    for oid in rng.choice(ids, int(0.6 * len(ids)), replace=False):
        ys, xs = np.nonzero(instances == oid)
        paint[ys[len(ys) // 2], xs[len(xs) // 2]] = truth[oid]  # one click inside the object
    samples = object_samples(image, instances, class_labels=paint, input_size=(32, 32))
    clf = train_classifier(samples, small_config())
    held = samples.y == 0
    assert held.sum() >= 15
    expected = np.array([truth[i] for i in samples.index[held]])
    assert np.mean(clf.predict(samples)[held] == expected) >= 0.9
    result = clf.classify(image, instances=instances)
    assert result.labels.shape == image.shape
    assert set(np.unique(result.labels)) <= {0, 1, 2}
    assert list(result.table)[:4] == ["object", "class", "prob_1", "prob_2"]
    np.testing.assert_allclose(result.proba.sum(1), 1.0, rtol=1e-5)


def _texture_scene(seed: int = 2, shape=(256, 256), block: int = 64):
    """Blocks of smooth noise (class 1) or noisy oblique stripes (class 2)."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(1, 3, (shape[0] // block, shape[1] // block))
    smooth = ndi.gaussian_filter(rng.normal(size=shape), 2.0)
    smooth /= smooth.std()
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    stripes = 1.4 * np.sin(2 * np.pi * (yy * np.cos(0.6) + xx * np.sin(0.6)) / 6.0) + 0.5 * rng.normal(size=shape)
    truth = np.kron(classes, np.ones((block, block), int))
    return (np.where(truth == 1, smooth, stripes) + 3.0).astype(np.float32), truth


def test_tile_level_accuracy_on_unpainted_tiles() -> None:
    image, truth = _texture_scene()
    grid = tile_samples(image, tile_size=32)
    tile_truth = np.array([truth[y, x] for y, x in grid.index])
    rng = np.random.default_rng(0)
    paint = np.zeros(image.shape, np.uint8)
    for i in rng.choice(len(grid), int(0.4 * len(grid)), replace=False):
        y, x = grid.index[i]
        paint[y + 10 : y + 20, x + 15] = tile_truth[i]  # a short stroke inside the tile
    samples = tile_samples(image, tile_size=32, class_labels=paint)
    clf = train_classifier(samples, small_config())
    held = samples.y == 0
    assert np.mean(clf.predict(samples)[held] == tile_truth[held]) >= 0.9
    result = clf.classify(image)
    assert result.labels.shape == image.shape and result.probabilities.shape == (2, *image.shape)
    assert np.mean(result.labels == truth) >= 0.9


def test_save_load_gives_identical_probabilities(image_run, shapes, tmp_path) -> None:
    clf, _ = image_run
    _, samples = shapes
    path = clf.save(tmp_path / "clf")
    desc = json.loads((path / "config.json").read_text())
    assert desc["task"] == "classification" and desc["level"] == "image"
    assert desc["class_ids"] == [1, 2] and desc["input_size"] == [32, 32]
    assert desc["metrics"]["confusion_matrix"] and desc["provenance"]["initial_weights"].startswith("random")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.safetensors"]
    loaded = load_classifier(path)
    np.testing.assert_array_equal(loaded.predict_proba(samples), clf.predict_proba(samples))
    assert loaded.metrics == desc["metrics"] and loaded.sample_params == {"spatial_dims": 2, "input_size": [32, 32]}
    clf.save(path)  # overwriting a bundle is fine


def test_damaged_or_foreign_bundles_are_bundle_errors(image_run, tmp_path) -> None:
    clf, _ = image_run
    path = clf.save(tmp_path / "clf")
    (path / "weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(BundleError, match="damaged"):
        load_classifier(path)
    (path / "config.json").write_text("{broken")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_classifier(path)
    with pytest.raises(BundleError, match="does not exist"):
        load_classifier(tmp_path / "nothing")
    seg = clf.save(tmp_path / "seg")
    desc = json.loads((seg / "config.json").read_text())
    (seg / "config.json").write_text(json.dumps({**desc, "task": "segmentation"}))
    with pytest.raises(BundleError, match="not a classifier"):
        load_classifier(seg)


def test_transfer_learning_loads_fitting_weights_and_freezes(image_run, shapes, tmp_path) -> None:
    clf, _ = image_run
    sc, _ = shapes
    source = clf.save(tmp_path / "source")
    # three classes now: the head does not fit, everything else does
    classes = np.where(np.arange(len(sc.classes)) % 5 == 0, 3, sc.classes)
    samples = image_samples(sc.images, classes=classes, input_size=(32, 32))
    config = small_config(epochs=1, steps=3, freeze_stages=2)
    new = build_classifier_network(config.model, 2, 1, 3)
    info = transfer_weights(new, source)
    assert info["skipped"] == 2 and info["loaded"] == info["total"] - 2 and info["task"] == "classification"
    before = {k: v.clone() for k, v in clf.network.state_dict().items()}
    tuned = train_classifier(samples, config, init_from=source)
    after = tuned.network.state_dict()
    frozen = [f"blocks.{i}." for i in range(2)]
    for name, value in after.items():
        if any(name.startswith(f) for f in frozen):  # weights and norm statistics unchanged
            torch.testing.assert_close(value, before[name], msg=name)
    assert not torch.equal(after["blocks.2.0.conv.weight"], before["blocks.2.0.conv.weight"])
    prov = tuned.provenance["initial_weights"]
    assert prov["source"] == str(source) and prov["loaded"] == info["loaded"] and prov["network"] == "smallcnn"
    assert tuned.provenance["frozen_stages"] == 2 and tuned.class_ids == (1, 2, 3)


def test_transfer_from_a_foreign_network_says_nothing_fits(image_run, tmp_path) -> None:
    clf, _ = image_run
    path = clf.save(tmp_path / "small")
    other = build_classifier_network(ModelConfig(network="resnet18", norm="batch"), 2, 1, 2)
    with pytest.raises(InputError, match="no weights"):
        transfer_weights(other, path)


def test_transfer_from_a_segmentation_bundle(tmp_path) -> None:
    from napari_medml.bundles.format import save_model
    from napari_medml.segmentation.model import Model
    from napari_medml.nn.segmentation import build_network

    seg_config = TrainConfig(model=ModelConfig(network="unet", channels=4, depth=2))
    unet = build_network(seg_config.model, 2, 1, 2)
    seg = save_model(Model(unet, seg_config, (0, 1), 1, 2, (32, 32), None, {"method": "none", "channels": [{}]}),
                     tmp_path / "seg")
    same = build_network(seg_config.model, 2, 1, 2)  # e.g. an encoder shared by name and shape
    info = transfer_weights(same, seg)
    assert info["task"] == "segmentation" and info["network"] == "unet" and info["skipped"] == 0
    with pytest.raises(BundleError, match="not a classifier"):
        load_classifier(seg)
    with pytest.raises(InputError, match=r"no weights of .*\(segmentation, unet\)"):
        transfer_weights(build_classifier_network(ModelConfig(network="smallcnn"), 2, 1, 2), seg)


def test_bad_inputs_give_clear_errors(shapes) -> None:
    sc, samples = shapes
    one = image_samples(sc.images, classes=np.where(sc.classes == 1, 1, 0), input_size=(32, 32))
    with pytest.raises(InputError, match="only class 1 is given among"):
        train_classifier(one, small_config())
    with pytest.raises(InputError, match="no class is given among"):
        train_classifier(image_samples(sc.images[:4]), small_config())
    with pytest.raises(ConfigError, match="task='classification'"):
        train_classifier(samples, TrainConfig())
    # trial 47: TrainConfig's segmentation defaults named no way to a classifier's
    with pytest.raises(ConfigError, match=r"unknown classification.*classification_config\("):
        train_classifier(samples, replace(small_config(), model=ModelConfig(network="unet")))
    with pytest.raises(ConfigError, match=r"'ce' or 'focal' \(napari_medml.classification.model.classification_config"):
        train_classifier(samples, replace(small_config(), optim=replace(small_config().optim, loss="dice")))
    with pytest.raises(ConfigError, match="one weight"):
        cfg = small_config()
        train_classifier(samples, replace(cfg, optim=replace(cfg.optim, class_weights=(1.0, 2.0, 3.0))))


def test_focal_loss_class_weights_and_stop(shapes) -> None:
    _, samples = shapes
    cfg = small_config(epochs=5, steps=500)
    cfg = replace(cfg, optim=replace(cfg.optim, loss="focal", class_weights=(1.0, 2.0)))
    token = StopToken()
    gen = fit_classifier(samples, cfg, stop=token)
    first = next(gen)
    assert np.isfinite(first.train_loss) and not first.epoch_end
    token.stop()
    reports = list(_drain(gen))
    clf = reports.pop()
    assert len(reports) == 1 and reports[0].message.endswith("stopped by user") and reports[0].step == first.step + 1
    assert isinstance(clf, Classifier)  # stopped before any epoch ended: the current weights


def _drain(gen):
    while True:
        try:
            yield next(gen)
        except StopIteration as done:
            yield done.value
            return


@pytest.mark.parametrize("name", sorted(CLASSIFIER_NETWORKS))
def test_every_network_classifies_in_2d_and_has_stages(name: str) -> None:
    torch.manual_seed(0)
    net = build_classifier_network(ModelConfig(network=name, norm="batch", dropout=0.1), 2, 2, 3).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 2, 32, 32)).shape == (2, 3)
    assert len(stages(net)) >= 4


@pytest.mark.parametrize("name", sorted(CLASSIFIER_NETWORKS))
def test_every_network_has_the_norm_asked_for(name: str) -> None:
    # resnet with instance norm failed in MONAI's initialisation; efficientnet kept batch norm
    # whatever was asked, and its config said "instance"
    counts = {}
    for norm in ("batch", "instance"):
        config = ModelConfig(network=name, norm=norm)
        if norm == "instance" and name.startswith("resnet"):  # MONAI's ResNet blocks are batch norm only
            with pytest.raises(ConfigError, match=f"^{name} has batch norm in its blocks .*: use norm 'batch'"):
                build_classifier_network(config, 2, 1, 2, input_size=(64, 64))
            return
        if norm == "instance" and name in ("densenet121", "efficientnet-b0"):  # 1x1 at the last stage
            with pytest.raises(ConfigError, match="use an input size of at least 64, or norm 'batch'"):
                build_classifier_network(config, 2, 1, 2, input_size=(32, 32))
        net = build_classifier_network(config, 2, 1, 2, input_size=(64, 64)).train()
        assert net(torch.zeros(2, 1, 64, 64)).shape == (2, 2)
        counts[norm] = (sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()),
                        sum(isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) for m in net.modules()))
    assert counts["batch"][0] > 0 and counts["batch"][1] == 0
    assert counts["instance"][0] == 0 and counts["instance"][1] == counts["batch"][0]


def test_an_efficientnet_bundle_saved_with_instance_in_its_config_but_batch_norm_loads(image_run, shapes,
                                                                                       tmp_path) -> None:
    import json

    from napari_medml.classification.model import Classifier

    (clf, _), (_, samples) = image_run, shapes
    config = replace(clf.config, model=replace(clf.config.model, network="efficientnet-b0", norm="batch"))
    net = build_classifier_network(config.model, clf.spatial_dims, clf.in_channels, len(clf.class_ids),
                                   input_size=clf.spec.input_size).eval()
    old = Classifier(net, replace(clf.spec, config=config))
    folder = old.save(tmp_path / "old")
    desc = json.loads((folder / "config.json").read_text())
    desc["train_config"]["model"]["norm"] = "instance"  # what such bundles said
    (folder / "config.json").write_text(json.dumps(desc))
    loaded = load_classifier(folder)
    assert loaded.config.model.norm == "batch"
    np.testing.assert_array_equal(loaded.predict_proba(samples), old.predict_proba(samples))


def test_3d_object_classification_runs(tmp_path) -> None:
    inst = np.zeros((24, 40, 40), np.int32)
    rng = np.random.default_rng(0)
    paint = np.zeros_like(inst)
    for i in range(8):
        z, y, x = 2 + 10 * (i % 2), 2 + 9 * (i // 2), 5 + 3 * (i % 3)
        inst[z : z + 8, y : y + 7, x : x + 4 + 4 * (i % 2)] = i + 1
        paint[z + 3, y + 3, x + 2] = 1 + i % 2
    image = (inst > 0).astype(np.float32) + 0.1 * rng.normal(size=inst.shape).astype(np.float32)
    samples = object_samples(image, inst, class_labels=paint, input_size=(12, 12, 12))
    cfg = classification_config(3, epochs=1, steps_per_epoch=2)
    cfg = replace(cfg, augment=AugmentConfig.none(), model=replace(cfg.model, channels=4, depth=2))
    clf = train_classifier(samples, cfg)
    loaded = load_classifier(clf.save(tmp_path / "c3d"))
    result = loaded.classify(image, instances=inst)
    assert result.labels.shape == inst.shape and result.table["voxels"].sum() == (inst > 0).sum()


def test_engine_fit_dispatches_classification(shapes) -> None:
    # napari_medml.fit is the one entry point: task="classification" takes ClassSamples
    from napari_medml import fit

    _, samples = shapes
    config = small_config(epochs=2, steps=3)
    assert config.task == "classification"
    gen = fit(samples, None, config)
    reports = []
    clf = run_to_end(gen, reports)
    assert reports and all(isinstance(r, TrainReport) for r in reports)
    assert [r.epoch for r in reports if r.epoch_end] == [1, 2]
    assert reports[-1].val_report["confusion_matrix"]  # the full report rides along
    assert isinstance(clf, Classifier) and clf.class_ids == (1, 2)
    with pytest.raises(ConfigError, match="labels=None"):
        next(fit(samples, np.zeros(3), config))


def _size_scene(seed: int = 3, rows: int = 6, cols: int = 8, cell: int = 32):
    """Disks of radius 5 (class 1) or 10 (class 2) in a grid, each a smooth blob whose
    width follows its radius: scaled to the same size, the two classes look alike, and
    only their size tells them apart."""
    rng = np.random.default_rng(seed)
    image = np.zeros((rows * cell, cols * cell), np.float32)
    instances = np.zeros(image.shape, np.int32)
    truth = {}
    yy, xx = np.mgrid[:cell, :cell]
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        cls = int(rng.integers(1, 3))
        radius = 5 if cls == 1 else 10
        cy, cx = cell / 2 + rng.uniform(-3, 3, 2)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        sl = (slice(r * cell, (r + 1) * cell), slice(c * cell, (c + 1) * cell))
        image[sl] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (radius / 2) ** 2))
        instances[sl][disk] = i + 1
        truth[i + 1] = cls
    return image, instances, truth


def test_a_common_object_box_tells_classes_apart_by_size(tmp_path) -> None:
    # each object in its own box fills its sample whatever its size: size-only classes
    # were near chance (a user's nuclei above/below the median area: accuracy 0.60)
    image, instances, truth = _size_scene()
    paint = np.zeros_like(instances)
    ids = np.unique(instances)[1:]
    trained = np.random.default_rng(0).choice(ids, len(ids) // 2, replace=False)
    for oid in trained:
        ys, xs = np.nonzero(instances == oid)
        paint[ys[0], xs[0]] = truth[oid]
    expected = np.array([truth[i] for i in ids])
    held = ~np.isin(ids, trained)
    accuracy = {}
    for box in ("own", "common"):
        samples = object_samples(image, instances, class_labels=paint, input_size=(24, 24), box=box)
        torch.manual_seed(0)
        clf = train_classifier(samples, small_config(epochs=6, steps=10))
        loaded = load_classifier(clf.save(tmp_path / box))  # the box and its side travel with the model
        result = loaded.classify(image, instances=instances)
        predicted = np.array([result.labels[instances == oid][0] for oid in ids])
        accuracy[box] = float(np.mean(predicted[held] == expected[held]))
        if box == "common":
            # the 95th percentile of the own boxes: an extent e (20-21 for radius 10) plus 0.2 e each side
            extents = [max(s.stop - s.start for s in b) for b in ndi.find_objects(instances)]
            side = int(np.ceil(np.percentile([np.ceil(e * 1.4) for e in extents], 95)))
            assert samples.params["box"] == "common" and samples.params["box_side"] == side and 28 <= side <= 30
            assert loaded.sample_params["box_side"] == side
    assert accuracy["common"] >= 0.95, accuracy
    # what the network sees: in its own box every disk fills the same share of its sample;
    # in the common box a radius-10 disk fills about 4 times the share of a radius-5 one
    big = np.array([truth[i] == 2 for i in ids])
    for box, ratio in (("own", (0.8, 1.25)), ("common", (3.0, 5.0))):
        masks = object_samples(image, instances, input_size=(24, 24), box=box).x[:, -1].mean(axis=(1, 2))
        share = masks[big].mean() / masks[~big].mean()
        assert ratio[0] <= share <= ratio[1], (box, share)


def test_object_box_errors() -> None:
    image, instances, _ = _size_scene(rows=1, cols=2)
    with pytest.raises(InputError, match="object box 'fixed': use 'own'"):
        object_samples(image, instances, box="fixed")
    with pytest.raises(InputError, match="object box side 0"):
        object_samples(image, instances, box="common", box_side=0)
    with pytest.raises(InputError, match=r"one id \(1\) for 2 separate objects: that is a mask"):
        object_samples(image, (instances > 0).astype(np.uint8))
    big = object_samples(image, instances, box="common", box_side=8)  # smaller than a disk: cut at the box
    assert big.params["box_side"] == 8 and big.x[:, -1].mean() > 0.5  # the mask fills most of the box
    assert big.note.startswith("2 of 2 objects are larger than the model's common box (8 voxels): they are cut")
    assert object_samples(image, instances, box="common", box_side=40).note == ""


def test_the_best_epoch_goes_to_the_higher_auc_when_accuracy_ties() -> None:
    # a trial: accuracy 0.5 at every epoch (every sample in one class), AUC 0.36 -> 0.84, and
    # early stopping kept epoch 1 (the lowest loss) with AUC 0.36
    from napari_medml.classification.task import selection_key

    epochs = [({"accuracy": 0.5, "auc": 0.36}, 0.6937), ({"accuracy": 0.5, "auc": 0.68}, 0.6938),
              ({"accuracy": 0.5, "auc": 0.84}, 0.7076), ({"accuracy": 0.5, "auc": 0.84}, 0.7204)]
    keys = [selection_key(report, loss, "val_accuracy") for report, loss in epochs]
    assert max(range(4), key=keys.__getitem__) == 2  # AUC first, then the lower loss of the two at 0.84
    assert selection_key({"accuracy": 0.6, "auc": 0.1}, 0.9, "val_accuracy") > keys[2]  # accuracy first
    assert selection_key({"accuracy": 0.5, "auc": None}, 0.6, "val_accuracy") == (0.5, 0.0, -0.6)
    assert selection_key({"accuracy": 0.5, "auc": 0.84}, 0.7, "val_loss") == (-0.7, 0.0, 0.0)


def test_images_of_another_size_than_the_training_ones_are_resized_with_a_note(shapes) -> None:
    """Case 35: a classifier trained on 8x8 images resized a 16x16 stack without a word."""
    sc, _ = shapes
    small = np.stack([ndi.zoom(im, 0.25, order=1) for im in sc.images[:16]])  # 16x16, the training size
    clf = train_classifier(image_samples(small, classes=sc.classes[:16]), small_config(epochs=1, steps=2))
    assert clf.input_size == (16, 16)
    same = clf.classify(small[:4])
    assert same.note == ""
    bigger = clf.classify(sc.images[:4, :32, :32])
    assert bigger.note == ("samples of 32x32 voxels are resized to the classifier's input of 16x16 "
                           "(linear interpolation)")
    assert bigger.classes.shape == (4,)


@pytest.mark.parametrize("classes", [2, 5])
def test_the_classifier_focal_loss_is_the_true_class_term_per_sample_whatever_the_class_count(classes) -> None:
    """Trial 44: MONAI's mean also averaged over the classes, so the loss was the standard focal
    loss (Lin et al. 2017, gamma 2) divided by the number of classes."""
    from napari_medml.classification.task import _loss

    torch.manual_seed(0)
    logits, target = torch.randn(8, classes), torch.randint(0, classes, (8,))
    weights = tuple(float(w) for w in range(1, classes + 1))
    for weight in (None, weights):
        loss = _loss(OptimConfig(loss="focal", class_weights=weight), classes, torch.device("cpu"))(logits, target)
        p = torch.softmax(logits, 1)[torch.arange(8), target]
        alpha = torch.ones(8) if weight is None else torch.tensor(weight)[target]
        expected = (-alpha * (1 - p) ** 2 * torch.log(p)).mean()
        assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_a_diverged_run_says_so_and_not_that_the_image_holds_nan(shapes) -> None:
    """Review 47: validation's report said "proba holds NaN ... fill the image's NaN first" of a finite image."""
    _, samples = shapes
    cfg = small_config(epochs=3)
    cfg = replace(cfg, optim=replace(cfg.optim, optimizer="sgd", learning_rate=1e12))
    with pytest.raises(ConfigError, match=r"^the network's outputs became NaN or infinite: the training diverged; "
                                          r"lower the learning rate \(--lr, the Classify widget's learning rate\)$"):
        train_classifier(samples, cfg)


@pytest.mark.parametrize("network", ["efficientnet-b0", "densenet121"])
def test_a_network_that_cannot_take_a_small_input_says_so_in_one_line(network) -> None:
    """Trial 50: 16-pixel tiles ended in torch's "Kernel size can't be greater than actual input size"
    on the command line, and left the widget busy for ever."""
    from napari_medml.config import ModelConfig
    from napari_medml.errors import ConfigError
    from napari_medml.nn.classification import build_classifier_network

    config = ModelConfig(network=network, norm="batch")
    with pytest.raises(ConfigError, match=rf"^{network} cannot take inputs of 16x16 voxels \(its layers shrink them "
                                          r"below one voxel\): use a larger input size \(32 or more per axis\)"):
        build_classifier_network(config, 2, 1, 3, input_size=(16, 16))
    network_32 = build_classifier_network(config, 2, 1, 3, input_size=(32, 32))
    assert network_32.training  # the check leaves it in training mode
    assert build_classifier_network(ModelConfig(network="resnet18", norm="batch"), 2, 1, 3, input_size=(16, 16))


def test_an_image_in_other_units_gets_the_intensity_line(image_run, shapes) -> None:
    """Trial 50: a x16 image (a 12-bit camera's) was classified all one class without a word; the
    segmentation models' line is said for classifiers too, with a fix a classifier has."""
    clf, _ = image_run
    sc, _ = shapes
    assert "far from the training" not in clf.classify(sc.images).note
    note = clf.classify(sc.images * 16.0, name="image 'x16'").note
    assert note.startswith("image 'x16' has intensities far from the training images' (") and note.endswith(
        "give the image in the training images' units (the same scale and bit depth), or train on images of both "
        "scales"), note
