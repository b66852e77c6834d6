"""Per-object measurement table (napari Labels ``features``) and its CSV."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from napari_medml.errors import InputError
from napari_medml.instances.measure import measure_instances, object_classes, write_table_csv


def small_case() -> np.ndarray:
    labels = np.zeros((6, 8), np.uint16)
    labels[0:2, 0:3] = 3  # 6 px, centre index (0.5, 1.0)
    labels[3:6, 4:8] = 10  # 12 px, centre index (4.0, 5.5)
    return labels


def test_table_in_physical_and_world_units() -> None:
    labels = small_case()
    intensity = np.arange(48, dtype=np.float32).reshape(6, 8)
    table = measure_instances(labels, spacing=(2.0, 0.5), origin=(10.0, -1.0),
                              images={"dapi": intensity, "gfp": 2 * intensity})
    np.testing.assert_array_equal(table["index"], [3, 10])  # napari maps label value -> row by 'index'
    np.testing.assert_allclose(table["area"], [6 * 1.0, 12 * 1.0])  # pixels x (2.0 x 0.5)
    np.testing.assert_allclose(table["centroid_y"], [10.0 + 0.5 * 2.0, 10.0 + 4.0 * 2.0])
    np.testing.assert_allclose(table["centroid_x"], [-1.0 + 1.0 * 0.5, -1.0 + 5.5 * 0.5])
    np.testing.assert_array_equal(table["bbox_start_y"], [0, 3])
    np.testing.assert_array_equal(table["bbox_stop_x"], [3, 8])
    # object 3 covers values 0,1,2,8,9,10; object 10 rows 3-5, columns 4-7
    np.testing.assert_allclose(table["mean_dapi"], [5.0, np.mean(intensity[3:6, 4:8])])
    np.testing.assert_allclose(table["max_gfp"], [20.0, 2 * 47.0])
    assert len({len(c) for c in table.values()}) == 1


def test_volume_and_majority_class_in_3d() -> None:
    labels = np.zeros((4, 5, 5), np.int32)
    labels[1:3, 1:4, 1:4] = 1  # 18 voxels
    classes = np.zeros_like(labels)
    classes[1:3, 1:4, 1:3] = 2  # 12 of them class 2
    classes[1:3, 1:4, 3] = 5  # 6 of them class 5
    table = measure_instances(labels, spacing=(3.0, 1.0, 1.0), classes=classes)
    assert list(table)[:3] == ["index", "class", "volume"]
    assert table["class"].tolist() == [2]
    assert table["volume"].tolist() == [54.0]
    assert table["centroid_z"].tolist() == [4.5]
    ids, cls = object_classes(labels, classes)
    assert (ids.tolist(), cls.tolist()) == ([1], [2])


def test_empty_labels_give_empty_columns() -> None:
    table = measure_instances(np.zeros((5, 5), np.int32), images={"a": np.ones((5, 5))})
    assert all(len(c) == 0 for c in table.values()) and "mean_a" in table


def test_bad_inputs_name_the_fault() -> None:
    labels = small_case()
    with pytest.raises(InputError, match="image 'dapi'"):
        measure_instances(labels, images={"dapi": np.zeros((6, 7))})
    with pytest.raises(InputError, match="origin"):
        measure_instances(labels, origin=(0.0,))


def test_csv_written_atomically(tmp_path) -> None:
    table = measure_instances(small_case(), spacing=(2.0, 0.5))
    path = write_table_csv(tmp_path / "objects.csv", table)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == [3, 10]
    assert float(rows[1]["area"]) == 12.0
    assert os.listdir(tmp_path) == ["objects.csv"]  # no temporary file left
    before = path.read_text()
    with pytest.raises(InputError, match="differ in length"):
        write_table_csv(path, {"index": [1, 2], "area": [1.0]})
    assert path.read_text() == before  # a failed write leaves the old file alone
    with pytest.raises(InputError, match="does not exist"):
        write_table_csv(tmp_path / "missing" / "t.csv", table)
