"""Bad values are caught before work starts, in the core (configs, ids, class files)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medml.segmentation import data
from napari_medml.classification.data import map_ids, read_class_csv
from napari_medml.config import DataConfig, InferConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.errors import ConfigError, InputError


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: DataConfig(patch_size=(0, 0, 0)), "patch_size"),
        (lambda: DataConfig(patch_size=(-16, -16, -16)), "patch_size"),
        (lambda: DataConfig(background_id=-1), "background_id"),
        (lambda: DataConfig(batch_size=0), "batch_size"),
        (lambda: DataConfig(val_fraction=1.0), "val_fraction"),
        (lambda: DataConfig(memory_budget_mb=0), "memory_budget_mb"),
        (lambda: ModelConfig(freeze_stages=-1), "freeze_stages"),
        (lambda: ModelConfig(depth=0), "depth"),
        (lambda: OptimConfig(learning_rate=float("nan")), "learning_rate"),
        (lambda: OptimConfig(epochs=0), "epochs"),
        (lambda: OptimConfig(label_smoothing=1.0), "label_smoothing"),
        (lambda: OptimConfig(max_minutes=0), "max_minutes"),
        (lambda: OptimConfig(early_stopping_patience=0), "early_stopping_patience"),
        (lambda: OptimConfig(class_weights=(1.0, -1.0)), "class_weights"),
        # review 29: accepted and ignored (build_loss smooths the cross-entropy only; an instance network's
        # three classes are its own, and the error counted them against the weights given); refused when a
        # new run starts, not when a bundle saved before is read (review 29c)
        (lambda: TrainConfig(optim=OptimConfig(loss="dice", label_smoothing=0.1)).check_new_run(),
         "label_smoothing is for the cross-entropy losses; the dice loss would ignore it: set it to 0, or choose ce "
         "or dice_ce"),
        (lambda: TrainConfig(task="classification", optim=OptimConfig(loss="focal", label_smoothing=0.1)
                             ).check_new_run(), "the focal loss would ignore it: set it to 0, or choose ce$"),
        (lambda: TrainConfig(task="instances", optim=OptimConfig(class_weights=(1.0, 3.0))).check_new_run(),
         "class_weights are for the classes of a segmentation or a classifier"),
        (lambda: TrainConfig(seed=-1), "seed"),
        (lambda: TrainConfig(seed=2**32), "seed"),
        (lambda: InferConfig(overlap=1.5), "overlap"),
        (lambda: InferConfig(min_size=-1), "min_size"),
    ],
)
def test_config_values_are_range_checked_naming_the_field(make, field):
    with pytest.raises(ConfigError, match=field):
        make()


def test_a_saved_config_with_settings_a_new_run_refuses_still_loads():
    """Review 29c: bundles saved with dice + label smoothing no longer loaded once the check sat in
    ``__post_init__``; it runs when a new run starts."""
    from napari_medml.config import to_dict

    saved = TrainConfig(optim=OptimConfig(loss="dice", label_smoothing=0.1))
    assert TrainConfig.from_json(saved.to_json()) == saved and to_dict(saved)["optim"]["label_smoothing"] == 0.1
    with pytest.raises(ConfigError, match="label_smoothing"):
        saved.check_new_run()


def test_300_classes_fail_with_a_limit_before_any_table_is_filled():
    lab = (np.arange(600) % 300).reshape(20, 30)
    with pytest.raises(InputError, match="300 classes.*at most 254"):
        data.find_class_ids([lab], "dense", 0)
    with pytest.raises(InputError, match="at most 254"):
        data.encode_labels(lab, tuple(range(300)), "dense", 0)


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_huge_label_ids_map_without_a_table_of_the_largest_id(mode):
    lab = np.zeros((6, 7), np.int64)
    lab[0, :3] = 2**40
    lab[1, :3] = 5
    lab[2, :] = 2**33  # sparse: the painted background id
    background = 2**33 if mode == "sparse" else 0
    ids = data.find_class_ids([lab], mode, background)
    enc = data.encode_labels(lab, ids, mode, background)
    assert enc.dtype == np.uint8
    if mode == "dense":
        assert ids == (0, 5, 2**33, 2**40)
        assert enc[0, 0] == 4 and enc[1, 0] == 2 and enc[2, 0] == 3 and enc[5, 5] == 1
    else:
        assert ids == (0, 5, 2**40)
        assert enc[0, 0] == 3 and enc[1, 0] == 2 and enc[2, 0] == 1 and enc[5, 5] == 0


def test_map_ids_big_and_small():
    inst = np.array([[0, 2**40, 7], [7, 0, 2**40]])
    out = map_ids(inst, [7, 2**40], [3, 9], np.uint16)
    np.testing.assert_array_equal(out, [[0, 9, 3], [3, 0, 9]])
    np.testing.assert_array_equal(map_ids(np.array([0, 1, 2]), [2], [5.5], np.float32), [0, 0, 5.5])


def test_object_samples_take_object_ids_of_any_size():
    from napari_medml.classification.levels import object_level_labels, object_samples

    image = np.zeros((16, 16), np.float32)
    inst = np.zeros((16, 16), np.int64)
    inst[2:6, 2:6] = 2**40
    inst[9:13, 9:13] = 3
    samples = object_samples(image, inst, input_size=8)
    assert samples.index.tolist() == [3, 2**40]
    back = object_level_labels(inst, samples.index, [1, 2])
    assert back[3, 3] == 2 and back[10, 10] == 1 and back[0, 0] == 0


@pytest.mark.parametrize("encoding", ["cp1252", "utf-8", "utf-8-sig", "utf-16"])
def test_class_csv_from_excel_in_any_common_encoding(tmp_path, encoding):
    path = tmp_path / "classes.csv"
    path.write_bytes("Échantillon,Catégorie\n1,2\n2,1\n".encode(encoding))
    np.testing.assert_array_equal(read_class_csv(path, 2), [2, 1])


def test_class_csv_that_is_not_text_names_the_file(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_bytes(b"a,b\n\x81\x8d\x8f,1\n")
    with pytest.raises(InputError, match="classes.csv.*UTF-8"):
        read_class_csv(path, 1)


def test_a_region_thinner_than_the_patch_is_padded_with_unlabeled_voxels():
    region = data.Region(np.ones((1, 5, 12, 12), np.float32), np.full((5, 12, 12), 2, np.uint8))
    padded = data.pad_to(region, (8, 8, 8))
    assert padded.image.shape == (1, 8, 12, 12) and padded.label.shape == (8, 12, 12)
    assert (padded.label[5:] == 0).all() and (padded.image[0, 5:] == 0).all()
    assert data.pad_to(region, (4, 8, 8)) is region


def test_a_volume_given_to_a_2d_network_names_the_list_of_slices_that_works():
    import napari_medml as mm

    rng = np.random.default_rng(0)
    volume = rng.random((3, 32, 32)).astype(np.float32)
    labels = (volume > 0.5).astype(np.uint8)
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), val_fraction=0.0),
                         model=ModelConfig(channels=4, depth=2), optim=OptimConfig(epochs=1, steps_per_epoch=1))
    with pytest.raises(InputError, match=r"a stack of 2D slices\? give them as a list, list\(volume\)"):
        mm.train(volume, labels, config)
    model = mm.train(list(volume), list(labels), config)  # the fix the line names
    assert model.spatial_dims == 2


def test_a_wrong_number_of_class_weights_names_the_option_and_the_widget_field():
    """Trial 38: the Classify widget's line named ``class_weights``, its field is *class weights*."""
    from napari_medml.classification.task import _loss
    from napari_medml.nn.losses import _class_weights

    with pytest.raises(ConfigError, match=r"^class weights \(--class-weights\) have 2 values but the labels give 3 "):
        _class_weights((1.0, 2.0), 3, "cpu")
    with pytest.raises(ConfigError, match=r"^class weights \(--class-weights\) have 3 values but there are 2 classes"):
        _loss(OptimConfig(class_weights=(1.0, 2.0, 3.0)), 2, "cpu")
