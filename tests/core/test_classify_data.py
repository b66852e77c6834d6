"""classify_data: samples in three modes, classes from paint or CSV, and the way back."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from napari_medml.classification.data import (
    ClassSamples,
    image_level_labels,
    image_samples,
    majority_class,
    read_class_csv,
)
from napari_medml.classification.levels import (
    class_labels,
    make_samples,
    object_level_labels,
    object_samples,
    prediction_table,
    tile_level_labels,
    tile_probability_map,
    tile_samples,
)
from napari_medml.errors import InputError
from napari_medml.samples import shape_classes


def test_majority_class_ignores_zero_and_breaks_ties_low() -> None:
    keys = np.array([1, 1, 1, 2, 2, 3, 3, 0])
    paint = np.array([5, 5, 7, 0, 0, 4, 2, 9])
    np.testing.assert_array_equal(majority_class(keys, paint, 5), [0, 5, 0, 2, 0])


def test_image_samples_from_paint_and_back() -> None:
    sc = shape_classes(seed=0, n=10, size=32)
    paint = np.zeros_like(sc.labels)
    paint[:6, 3, 3] = sc.classes[:6]  # one painted pixel per sample is enough
    s = image_samples(sc.images, labels=paint)
    assert s.x.shape == (10, 1, 32, 32) and s.x.dtype == np.float32
    np.testing.assert_array_equal(s.y, np.r_[sc.classes[:6], [0] * 4])
    assert s.level == "image" and s.source_shape == (10, 32, 32)
    out = image_level_labels(sc.classes, sc.images.shape)
    assert out.shape == sc.images.shape and (out[4] == sc.classes[4]).all()
    np.testing.assert_array_equal(class_labels(s, sc.classes), out)


def test_image_samples_channels_3d_and_resize() -> None:
    img = np.random.default_rng(0).random((4, 2, 6, 20, 20)).astype(np.float32)  # (N, C, Z, Y, X)
    s = image_samples(img, classes=[1, 2, 0, 1], channel_axis=1, input_size=(4, 8, 8))
    assert s.x.shape == (4, 2, 4, 8, 8) and s.spatial_dims == 3 and s.image_channels == 2
    assert s.params["input_size"] == [4, 8, 8]


def test_image_level_without_sample_axis_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="no sample axis"):
        image_samples(np.zeros((64, 64), np.float32))
    with pytest.raises(InputError, match="no sample axis"):
        image_samples(np.zeros((16, 64, 64), np.float32), spatial_dims=3)


def test_image_level_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(InputError, match=r"\(3, 8, 8\).*\(4, 8, 8\)"):
        image_samples(np.zeros((4, 8, 8)), labels=np.zeros((3, 8, 8), np.uint8))


def test_read_class_csv(tmp_path) -> None:
    path = tmp_path / "classes.csv"
    path.write_text("sample,class\n0,1\n1,\n2,2\n3,0\n")
    np.testing.assert_array_equal(read_class_csv(path, 4), [1, 0, 2, 0])
    path.write_text("1\n\nsmooth\nirregular\n")
    np.testing.assert_array_equal(read_class_csv(path, 4, class_names={1: "smooth", 2: "irregular"}), [1, 0, 1, 2])
    with pytest.raises(InputError, match="has 4 class rows but the stack has 5"):
        read_class_csv(path, 5, class_names={1: "smooth", 2: "irregular"})
    path.write_text("1\n2\nbanana\n")
    with pytest.raises(InputError, match="line 3"):
        read_class_csv(path, 3)
    with pytest.raises(InputError, match="cannot read"):
        read_class_csv(tmp_path / "missing.csv", 3)


def _objects() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.zeros((60, 80), np.float32)
    inst = np.zeros((60, 80), np.int32)
    inst[5:15, 5:25] = 3
    inst[30:55, 40:50] = 7
    inst[40:45, 70:80] = 9  # touches the border
    image[inst > 0] = 1.0
    paint = np.zeros_like(inst)
    paint[8, 10] = 2
    paint[31:33, 41:43] = 1
    paint[34, 45] = 2  # minority inside object 7
    return image, inst, paint


def test_object_samples_crop_mask_and_classes() -> None:
    image, inst, paint = _objects()
    s = object_samples(image, inst, class_labels=paint, input_size=(32, 32))
    np.testing.assert_array_equal(s.index, [3, 7, 9])
    np.testing.assert_array_equal(s.y, [2, 1, 0])
    np.testing.assert_array_equal(s.sizes, [200, 250, 50])
    assert s.x.shape == (3, 2, 32, 32)
    mask = s.x[:, 1]
    assert set(np.unique(mask)) <= {0.0, 1.0}
    # the object is centred and fills the box up to the margin
    assert mask[1, 16, 16] == 1 and mask[1, 0, 0] == 0
    assert 0 < mask[2].mean() < 1
    inner = np.stack([binary_erosion(m, iterations=2) for m in mask == 1])
    np.testing.assert_allclose(s.x[:, 0][inner], 1.0, atol=0.05)
    np.testing.assert_allclose(s.x[:, 0][mask == 0], 0.0, atol=0.5)
    out = object_level_labels(inst, s.index, [2, 1, 1])
    assert out[10, 10] == 2 and out[40, 45] == 1 and out[42, 75] == 1 and out[0, 0] == 0
    table = prediction_table(s, [2, 1, 1], np.array([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4]]), (1, 2))
    assert list(table) == ["object", "class", "prob_1", "prob_2", "voxels"]
    assert table["object"].tolist() == [3, 7, 9] and table["voxels"].tolist() == [200, 250, 50]


def test_an_object_painted_with_two_classes_takes_the_larger_and_says_so() -> None:
    """Trial 38: an object painted with two classes was resolved by majority without a word."""
    image, inst, paint = _objects()  # object 7: 4 voxels of class 1, 1 of class 2
    s = object_samples(image, inst, class_labels=paint)
    np.testing.assert_array_equal(s.y, [2, 1, 0])
    assert s.note == "1 object is painted with more than one class (id 7): each takes the class painted on most of its voxels"
    paint[34, 45] = 0
    assert object_samples(image, inst, class_labels=paint).note == ""
    paint[inst == 9] = 1
    paint[40, 70] = 2
    paint[10, 10] = 1
    assert object_samples(image, inst, class_labels=paint).note.startswith(
        "2 objects are painted with more than one class (ids 3, 9): ")
    # with a stored common box that cuts objects, both are said (review 38: the cut note replaced it)
    both = object_samples(image, inst, class_labels=paint, box="common", box_side=4).note
    assert both.startswith("2 objects are painted with more than one class (ids 3, 9): each takes the class painted "
                           "on most of its voxels; 3 of 3 objects are larger than the model's common box (4 voxels)")


def test_object_errors() -> None:
    image, inst, paint = _objects()
    with pytest.raises(InputError, match="paint none of the 3 objects"):
        object_samples(image, inst, class_labels=np.zeros_like(inst))
    with pytest.raises(InputError, match="instance labels have shape"):
        object_samples(image, inst[:50])
    with pytest.raises(InputError, match="no objects"):
        object_samples(image, np.zeros_like(inst))
    with pytest.raises(InputError, match="instance labels"):
        make_samples("object", image, {})


def test_samples_of_an_image_with_nan_complex_values_or_channels_last_are_refused_with_the_fix() -> None:
    """Trial 47: a NaN pixel gave its object a class (NaN probabilities), training on it failed in
    scikit-learn's validation; a complex image lost its imaginary part; a (Y, X, 3) image got no fix."""
    image, inst, paint = _objects()
    bad = image.astype(np.float32)
    bad[tuple(np.argwhere(inst == inst.max())[0])] = np.nan
    for make in (lambda: object_samples(bad, inst, class_labels=paint, name="image 'cells'"),
                 lambda: tile_samples(bad, tile_size=(16, 16), name="image 'cells'"),
                 lambda: image_samples(bad[None], name="image 'cells'")):
        with pytest.raises(InputError) as caught:
            make()
        assert re.fullmatch(r"image 'cells' holds NaN or infinite values in 1 of its \d+ (object|tile|image)s: fill "
                            r"them first \(napari: Preprocess > fill NaN/inf, then classify the filled layer; Python: "
                            r"napari_medml.preprocessing.ops.fill_nonfinite\)", str(caught.value)), str(caught.value)
    # review 47: NaN outside every object is never read, and was refused
    far = image.astype(np.float32)
    far[56:, :3] = np.nan  # a corner no object's box reaches
    assert np.isfinite(object_samples(far, inst, class_labels=paint).x).all()
    with pytest.raises(InputError, match=r"dtype complex64: it must be real and numeric \(np.abs of a complex one\)"):
        object_samples(image.astype(np.complex64), inst)
    with pytest.raises(InputError) as caught:
        object_samples(np.stack([image] * 3, -1), inst)
    assert str(caught.value).endswith("expected 2 axes here: if its last axis (3) holds channels, pass "
                                      "channel_axis=-1 (another axis: its index)")
    assert object_samples(np.stack([image] * 3, -1), inst, channel_axis=-1).x.shape[1] >= 3


def test_object_samples_3d_default_size() -> None:
    inst = np.zeros((20, 30, 30), np.int32)
    inst[5:10, 5:15, 5:12] = 1
    inst[12:18, 18:28, 18:28] = 2
    s = object_samples(inst.astype(np.float32), inst)
    assert s.x.shape == (2, 2, 32, 32, 32) and (s.y == 0).all()


def test_tile_samples_grid_classes_and_maps() -> None:
    image = np.arange(50 * 70, dtype=np.float32).reshape(50, 70)
    paint = np.zeros((50, 70), np.uint8)
    paint[2, 2] = 1
    paint[45:48, 65:68] = 2  # the last, partial tile
    s = tile_samples(image, tile_size=(20, 30), class_labels=paint)
    assert s.x.shape == (9, 1, 20, 30)  # 3 x 3 tiles, the last row and column padded
    np.testing.assert_array_equal(s.index[:4], [[0, 0], [0, 30], [0, 60], [20, 0]])
    np.testing.assert_array_equal(s.x[1, 0], image[0:20, 30:60])
    assert s.y.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 2]
    labels = tile_level_labels(s, np.arange(1, 10))
    assert labels.shape == (50, 70) and labels[0, 0] == 1 and labels[25, 35] == 5 and labels[49, 69] == 9
    proba = np.stack([np.linspace(0, 1, 9), 1 - np.linspace(0, 1, 9)], 1)
    block = tile_probability_map(s, proba, smooth=False)
    assert block.shape == (2, 50, 70) and block[0, 49, 69] == pytest.approx(1.0)
    smooth = tile_probability_map(s, proba)
    assert smooth.shape == (2, 50, 70) and 0 <= smooth.min() and smooth.max() <= 1
    assert smooth[0, 10, 15] == pytest.approx(0.0, abs=0.02)  # near a tile centre: its own value
    table = prediction_table(s, np.ones(9, int), proba, (1, 2))
    assert list(table)[:3] == ["tile", "start_y", "start_x"]


def test_a_tile_painted_with_two_classes_takes_the_larger_and_says_so() -> None:
    """Note 49: a tile over several painted classes took one class without a note (objects said it)."""
    image = np.zeros((40, 60), np.float32)
    paint = np.zeros((40, 60), np.uint8)
    paint[2, 2:5], paint[10, 10] = 1, 2  # tile 0: 3 voxels of class 1, 1 of class 2
    s = tile_samples(image, tile_size=20, class_labels=paint)
    assert s.y.tolist() == [1, 0, 0, 0, 0, 0]
    assert s.note == ("1 tile is painted with more than one class (tile 0): each takes the class painted on most of "
                      "its voxels")
    paint[25, 45], paint[30, 50] = 1, 2  # tile 5 too: a tie goes to the smaller id
    s = tile_samples(image, tile_size=20, class_labels=paint)
    assert s.y.tolist() == [1, 0, 0, 0, 0, 1]
    assert s.note.startswith("2 tiles are painted with more than one class (tiles 0, 5): ")
    paint[10, 10] = paint[30, 50] = 0
    assert tile_samples(image, tile_size=20, class_labels=paint).note == ""
    assert tile_samples(image, tile_size=20).note == ""


def test_tile_samples_3d_with_channels_and_resize() -> None:
    image = np.zeros((2, 16, 32, 32), np.float32)
    s = tile_samples(image, tile_size=8, channel_axis=0, input_size=(4, 4, 4))
    assert s.x.shape == (2 * 4 * 4, 2, 4, 4, 4)
    assert isinstance(s, ClassSamples) and s.params["tile_size"] == [8, 8, 8]


def test_samples_never_mutate_inputs() -> None:
    image, inst, paint = _objects()
    before = (image.copy(), inst.copy(), paint.copy())
    object_samples(image, inst, class_labels=paint)
    tile_samples(image, tile_size=16, class_labels=paint)
    for a, b in zip(before, (image, inst, paint)):
        np.testing.assert_array_equal(a, b)


def test_a_class_csv_with_an_index_column_puts_each_class_on_its_sample(tmp_path):
    """index,class rows in any order (a sorted spreadsheet): the index column decides, 0- or
    1-based; without one (names in the first column) rows are in stack order."""
    from napari_medml.classification.data import read_class_csv

    (tmp_path / "zero.csv").write_text("index,class\n2,1\n0,2\n3,2\n1,1\n")
    np.testing.assert_array_equal(read_class_csv(tmp_path / "zero.csv", 4), [2, 1, 1, 2])
    (tmp_path / "one.csv").write_text("sample,class\n4,2\n1,1\n3,1\n2,2\n")
    np.testing.assert_array_equal(read_class_csv(tmp_path / "one.csv", 4), [1, 2, 1, 2])
    (tmp_path / "names.csv").write_text("file,class\nb.tif,2\na.tif,1\nc.tif,1\n")
    np.testing.assert_array_equal(read_class_csv(tmp_path / "names.csv", 3), [2, 1, 1])


def test_a_class_name_that_is_not_an_id_gets_the_fix(tmp_path):
    from napari_medml.classification.data import read_class_csv

    (tmp_path / "pets.csv").write_text("class\ncat\ndog\n")
    with pytest.raises(InputError, match=r"'cat' is not a class id: write integer class ids \(1, 2, \.\.\.; empty "
                                         r"or 0 = unknown\), one per sample"):
        read_class_csv(tmp_path / "pets.csv", 2)


def test_object_classes_from_a_table_of_object_ids(tmp_path) -> None:
    from napari_medml.classification.object_classes import object_class_labels

    image, inst, paint = _objects()  # objects 3, 7, 9; painted classes 2, 1, unknown
    table = tmp_path / "objects.csv"
    table.write_text("object,class\n7,1\n3,2\n9,\n")  # any row order; an empty class is unknown
    painted = object_class_labels(table, inst)
    assert painted.shape == inst.shape and painted[10, 10] == 2 and painted[40, 45] == 1
    assert not painted[inst == 9].any() and not painted[inst == 0].any()
    s = make_samples("object", image, {"input_size": (32, 32)}, class_labels=painted, instances=inst)
    np.testing.assert_array_equal(s.y, object_samples(image, inst, class_labels=paint, input_size=(32, 32)).y)
    named = tmp_path / "named.csv"
    named.write_text("id;kind\n3;round\n7;spiky\n")  # names, another delimiter, unlisted object 9
    painted = object_class_labels(named, inst, class_names={1: "spiky", 2: "round"})
    assert painted[10, 10] == 2 and painted[40, 45] == 1 and not painted[inst == 9].any()


def test_a_table_naming_objects_that_are_not_there_is_refused(tmp_path) -> None:
    from napari_medml.classification.object_classes import object_class_labels

    _, inst, _ = _objects()
    table = tmp_path / "objects.csv"
    table.write_text("object,class\n3,1\n12,2\n40,1\n")
    with pytest.raises(InputError) as err:
        object_class_labels(table, inst, instances_name="instances 'cells'")
    assert str(err.value) == ("class file 'objects.csv' lists object(s) 12, 40 that instances 'cells' do not have "
                              "(3 objects, ids 3..9): give the instance labels the table was made from, or "
                              "remove those rows")
    table.write_text("object,class\n3,0\n7,\n")
    with pytest.raises(InputError, match="gives no object a class"):
        object_class_labels(table, inst)
    table.write_text("2\n1\n")
    with pytest.raises(InputError, match="two columns, the object id"):
        object_class_labels(table, inst)


def test_a_class_file_whose_sample_numbers_miss_or_repeat_some_is_refused(tmp_path) -> None:
    """Trial 42: a file numbering 240 samples without sample 5 and with a sample 500 was read in
    stack order: from sample 5 on each class went to the sample before it, without a word
    (validation accuracy 0.50 against 1.00 with the right file)."""
    path = tmp_path / "classes.csv"
    rows = [(k, 1 + k % 2) for k in range(240) if k != 5] + [(500, 1)]
    path.write_text("sample,class\n" + "".join(f"{k},{c}\n" for k, c in rows))
    with pytest.raises(InputError) as exc:
        read_class_csv(path, 240)
    assert str(exc.value) == (
        "class file 'classes.csv' numbers its samples in the first column, but sample 5 missing; 500 not in the "
        "stack (the stack has 240, 0 to 239): give each sample one row, numbered 0 to 239 (empty or 0 class = "
        "unknown), or leave the number column out to give the rows in stack order")
    path.write_text("0,1\n1,2\n2,1\n4,2\n")  # no header: different whole numbers, nearly all a sample's
    with pytest.raises(InputError, match=r"but sample 3 missing; 4 not in the stack \(the stack has 4, 0 to 3\)"):
        read_class_csv(path, 4)
    path.write_text("image,class\n1,1\n2,2\n2,1\n4,2\n")  # numbered from 1
    with pytest.raises(InputError, match=r"but sample 3 missing; 2 given twice or more \(the stack has 4, 1 to 4\)"):
        read_class_csv(path, 4)
    path.write_text("sample,class\n1,1\n2,2\n3,1\n4,2\n6,1\n")  # from 1, sample 5 missing (review 42: "0 to 4")
    with pytest.raises(InputError, match=r"but sample 5 missing; 6 not in the stack \(the stack has 5, 1 to 5\)"):
        read_class_csv(path, 5)
    # a column of other numbers (a subject's id, a group, a score) is not a sample number: stack order
    for other in ("subject,class\n1001,1\n1002,2\n1007,2\n1003,1\n", "group,class\n1,1\n1,2\n2,2\n2,1\n",
                  "score,class\n0.2,1\n0.7,2\n0.4,2\n0.9,1\n", "0,1\n1,2\n1,2\n3,1\n"):
        path.write_text(other)
        np.testing.assert_array_equal(read_class_csv(path, 4), [1, 2, 2, 1])
    path.write_text("sample,class\n3,1\n0,2\n2,2\n1,1\n")  # every sample once, any order: by number
    np.testing.assert_array_equal(read_class_csv(path, 4), [2, 1, 2, 1])
