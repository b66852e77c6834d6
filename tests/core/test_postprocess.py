"""Post-processing of label maps on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medml.config import InferConfig
from napari_medml.segmentation.postprocess import fill_holes, keep_largest, postprocess, remove_small, split_instances


def _two_blobs() -> np.ndarray:
    lab = np.zeros((20, 20), np.uint8)
    lab[2:10, 2:10] = 1  # 64 voxels
    lab[14:16, 14:16] = 1  # 4 voxels
    lab[12:18, 2:6] = 5  # 24 voxels, another class
    return lab


def test_remove_small_drops_only_small_objects_and_keeps_input():
    lab = _two_blobs()
    before = lab.copy()
    out = remove_small(lab, 10)
    assert out[15, 15] == 0 and out[5, 5] == 1 and out[14, 3] == 5
    np.testing.assert_array_equal(lab, before)
    assert out.dtype == lab.dtype


def test_fill_holes_fills_enclosed_background():
    lab = np.zeros((12, 12), np.uint8)
    lab[2:10, 2:10] = 3
    lab[5:7, 5:7] = 0
    out = fill_holes(lab)
    assert (out[2:10, 2:10] == 3).all()


def test_keep_largest_per_class():
    out = keep_largest(_two_blobs())
    assert out[15, 15] == 0 and out[5, 5] == 1 and out[14, 3] == 5


def test_connected_instances():
    inst = split_instances(_two_blobs(), "connected")
    assert inst.dtype == np.uint32
    assert sorted(np.unique(inst)) == [0, 1, 2, 3]


def test_watershed_splits_touching_discs():
    yy, xx = np.mgrid[:40, :60]
    lab = (((yy - 20) ** 2 + (xx - 18) ** 2 < 120) | ((yy - 20) ** 2 + (xx - 36) ** 2 < 120)).astype(np.uint8)
    assert split_instances(lab, "connected").max() == 1
    inst = split_instances(lab, "watershed")
    assert inst.max() == 2
    assert inst[20, 14] != inst[20, 40]


def test_postprocess_follows_config():
    lab = _two_blobs()
    out, inst = postprocess(lab, InferConfig(min_size=10, instances="connected"))
    assert out[15, 15] == 0
    assert inst is not None and inst.max() == 2
    same, none = postprocess(lab, InferConfig())
    np.testing.assert_array_equal(same, lab)
    assert none is None


def test_unknown_instance_method():
    with pytest.raises(ValueError, match="watershed"):
        split_instances(_two_blobs(), "bogus")


def _lesion_in_organ() -> np.ndarray:
    labels = np.zeros((9, 9), np.uint8)
    labels[1:8, 1:8] = 1
    labels[3:6, 3:6] = 2  # a lesion inside the organ, with one background voxel in it
    labels[4, 4] = 0
    return labels


def test_monai_fill_holes_would_overwrite_a_nested_class_ours_keeps_it():
    from monai.transforms import FillHoles

    labels = _lesion_in_organ()
    theirs = np.asarray(FillHoles()(labels[None].copy()))[0]
    assert (theirs[3:6, 3:6] == 1).all()  # MONAI: the lesion became organ
    ours = fill_holes(labels)
    assert (ours[3:6, 3:6] == 2).all() and ours[4, 4] == 2  # ours: the hole joins the lesion that encloses it
    assert (ours[labels == 1] == 1).all()


def test_monai_remove_small_objects_misses_a_small_piece_of_a_large_class_ours_removes_it():
    from monai.transforms import RemoveSmallObjects

    labels = np.zeros((12, 12), np.uint8)
    labels[0:6, 0:6] = 1   # 36 voxels
    labels[10:12, 10:12] = 1  # a stray 4-voxel piece of the same class
    labels[0:6, 8] = 2  # a second class: now scikit-image takes each id as one object
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.asarray(RemoveSmallObjects(min_size=10)(labels[None].copy()))[0]
    assert (theirs[10:12, 10:12] == 1).all()  # the class as a whole is large, so nothing goes
    ours = remove_small(labels, 10)
    assert (ours[10:12, 10:12] == 0).all() and (ours[0:6, 0:6] == 1).all()
    assert (ours[0:6, 8] == 0).all()  # 6 voxels < 10: small, gone as well


def test_keep_largest_is_per_class_with_face_connectivity():
    labels = np.zeros((8, 8), np.uint8)
    labels[0:3, 0:3] = 1
    labels[3, 3] = 1  # touches the block only at a corner: its own component
    labels[5:8, 5:8] = 2
    out = keep_largest(labels)
    assert out[3, 3] == 0 and (out[0:3, 0:3] == 1).all() and (out[5:8, 5:8] == 2).all()
    assert out.dtype == labels.dtype
