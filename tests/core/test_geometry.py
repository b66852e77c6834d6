"""Two images that meet are compared in world space (geometry.align_to)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medml.errors import InputError
from napari_medml.io.geometry import align_to, axis_codes
from napari_medml.io import Volume

SHAPE = (12, 32, 40)  # (Z, Y, X)
RAS = np.diag([1.0, 1.0, 2.0, 1.0])


def nifti_volume(data: np.ndarray, affine: np.ndarray, name: str = "v") -> Volume:
    """A Volume as io reads NIfTI: data (Z, Y, X), spacing/origin in napari order, affine."""
    spacing = tuple(np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[::-1])
    return Volume(data, spacing, tuple(affine[:3, 3][::-1]), affine, True, name)


@pytest.fixture
def truth() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[3:9, 8:20, 4:14] = 1  # near the low-x side
    lab[5:7, 22:30, 30:36] = 2
    return lab


def flipped_x(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    las = RAS.copy()
    las[0, 0], las[0, 3] = -1.0, SHAPE[2] - 1.0  # voxel i -> world x = 39 - i
    return np.ascontiguousarray(lab[:, :, ::-1]), las


def test_same_grid_passes_unchanged(truth):
    a = nifti_volume(truth, RAS)
    out = align_to(nifti_volume(truth.copy(), RAS), a, moving_name="p", reference_name="t")
    assert out.note is None and np.array_equal(out.volume.data, truth)


def test_las_copy_is_reoriented_onto_the_ras_grid_with_a_note(truth):
    data, las = flipped_x(truth)
    moving = nifti_volume(data, las)
    assert axis_codes(las) == "LAS"
    out = align_to(moving, nifti_volume(truth, RAS), moving_name="prediction 'p'", reference_name="labels 't'")
    assert np.array_equal(out.volume.data, truth)
    assert "LAS" in out.note and "RAS" in out.note and not out.assumed
    np.testing.assert_allclose(out.volume.affine, RAS)
    assert moving.data is data  # the input is never changed


def test_permuted_axes_are_reoriented(truth):
    # stored (X, Y, Z) -> (Z, Y, X) in the file: the affine's columns permuted to match
    perm_affine = RAS[:, [2, 1, 0, 3]]
    data = np.ascontiguousarray(truth.transpose(2, 1, 0))
    out = align_to(nifti_volume(data, perm_affine), nifti_volume(truth, RAS), moving_name="a", reference_name="b")
    assert np.array_equal(out.volume.data, truth)


def test_leading_channel_axis_travels_along(truth):
    data, las = flipped_x(truth)
    stack = np.stack([data, data * 2])
    moving = Volume(stack, (1.0, 2.0, 1.0, 1.0), (0.0, 0.0, 0.0, 39.0), las, False, "c")
    out = align_to(moving, nifti_volume(truth, RAS), moving_name="c", reference_name="t", spatial_dims=3)
    assert out.volume.data.shape == (2, *SHAPE)
    assert np.array_equal(out.volume.data[1], truth * 2)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        # trial 47: in the file's (x, y, z) order, as nibabel gives it, not napari's (Z, Y, X) beside "RAS"
        (lambda a: a @ np.diag([1.0, 1.0, 1.5, 1.0]), ["spacing (1, 1, 3)", "spacing (1, 1, 2)",
                                                        "): the voxel sizes differ: resample"]),
        (lambda a: a + np.pad(np.array([[0, 0, 0, 5.0]]), ((0, 3), (0, 0))),
         ["(shape (40, 32, 12) along RAS, spacing (1, 1, 2), origin (x, y, z) (5, 0, 0))",
          "): the origins differ by (5, 0, 0) along world x, y, z: resample one onto the other's grid"]),
        (lambda a: a + np.pad(np.array([[0, 0, 0, 0.01]]), ((0, 3), (0, 0))),  # header rounding: not a resampling
         ["the origins differ by (0.01, 0, 0) along world x, y, z: if they hold the same voxels, give prediction "
          "'p.nii.gz' the affine of labels 't.nii.gz' (nibabel: Nifti1Image(its data, the other's affine))"]),
        # cases 39: the same codes (RAS) 30 degrees apart were described alike, the fix already true of them
        (lambda a: np.array([[np.cos(np.pi / 6), -np.sin(np.pi / 6), 0, 0],
                             [np.sin(np.pi / 6), np.cos(np.pi / 6), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) @ a,
         ["): their axes point 30 degrees apart (an oblique scan and a resliced copy?): resample one onto the "
          "other's grid (same shape, spacing, origin and direction) first"]),
    ],
    ids=["spacing", "origin", "rounding", "rotation"],
)
def test_another_grid_is_refused_naming_both(truth, change, words):
    moving = nifti_volume(truth, change(RAS.copy()), "p")
    with pytest.raises(InputError) as info:
        align_to(moving, nifti_volume(truth, RAS, "t"), moving_name="prediction 'p.nii.gz'",
                 reference_name="labels 't.nii.gz'")  # fmt: skip
    message = str(info.value)
    for word in ["p.nii.gz", "t.nii.gz", "along RAS", *words]:
        assert word in message


def test_a_flip_that_does_not_land_on_the_grid_is_refused(truth):
    data, las = flipped_x(truth)
    las[0, 3] += 3.0  # flipped, but shifted by 3 voxels
    with pytest.raises(InputError, match=r"in the same axis order, the origins differ by \(3, 0, 0\) along world x, y, z: "
                       "resample"):
        align_to(nifti_volume(data, las), nifti_volume(truth, RAS), moving_name="a", reference_name="b")


def test_a_file_without_geometry_takes_the_other_grid_with_a_warning(truth):
    bare = Volume(truth, (1.0,) * 3, (0.0,) * 3, None, True, "npy")
    out = align_to(bare, nifti_volume(truth, RAS), moving_name="prediction 'p.npy'", reference_name="labels 't'")
    assert out.assumed and "p.npy" in out.line and out.line.startswith("warning:")
    with pytest.raises(InputError, match="shapes differ"):
        align_to(Volume(truth[:, :, :20], (1.0,) * 3, (0.0,) * 3), nifti_volume(truth, RAS),
                 moving_name="a", reference_name="b")  # fmt: skip


def test_tiff_grids_compare_spacing(truth):
    a = Volume(truth, (2.0, 0.5, 0.5), (0.0,) * 3, None, True, "a")
    b = Volume(truth, (2.0, 0.5, 0.5), (0.0,) * 3, None, True, "b")
    assert align_to(a, b, moving_name="a", reference_name="b").note is None
    c = Volume(truth, (2.0, 0.25, 0.25), (0.0,) * 3, None, True, "c")
    with pytest.raises(InputError, match="spacing"):
        align_to(c, b, moving_name="c", reference_name="b")


def test_to_canonical_puts_a_flipped_and_permuted_file_on_the_ras_grid_and_to_stored_undoes_it(truth):
    """What the napari reader and writer do with a NIfTI stored in another orientation."""
    from napari_medml.io.orientation import to_canonical, to_stored

    # stored (Y, X, Z) with x running right-to-left: "ALS" voxel axes (napari data (Z, X, Y))
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    affine[0, 1], affine[1, 0], affine[2, 2] = -1.0, 1.0, 2.0
    affine[0, 3] = SHAPE[2] - 1.0
    data = np.ascontiguousarray(truth[:, :, ::-1].transpose(0, 2, 1))
    stored = Volume(data, (2.0, 1.0, 1.0), (0.0, 0.0, SHAPE[2] - 1.0), affine, True, "odd",
                    {"sform_code": 1}, "ZYX")
    ras = to_canonical(stored)
    np.testing.assert_array_equal(ras.data, truth)
    np.testing.assert_allclose(ras.affine, RAS)
    assert ras.spacing == (2.0, 1.0, 1.0) and ras.origin == (0.0, 0.0, 0.0)
    assert ras.meta == {"sform_code": 1, "stored_orientation": "ALS"}
    back = to_stored(ras)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.affine, affine)
    assert back.spacing == stored.spacing and back.origin == stored.origin and back.meta == {"sform_code": 1}
    assert stored.data is data  # the input is never changed
    same = nifti_volume(truth, RAS)
    assert to_canonical(same) is same and to_stored(same) is same


def test_to_canonical_leaves_2d_slices_and_files_without_an_affine_alone(truth):
    from napari_medml.io.orientation import to_canonical

    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    over_time = Volume(truth, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), las, False, "t", {}, "TYX")
    plain = Volume(truth, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), None, True, "npy")
    for vol in (over_time, plain, Volume(truth[0], (1.0, 1.0), (0.0, 0.0), las, True, "slice")):
        assert to_canonical(vol) is vol


def test_a_prediction_is_made_in_the_models_orientation_and_put_back(truth):
    """predict_oriented: the network sees the array it learned from; outputs come back."""
    from napari_medml.errors import InputError as Refused
    from napari_medml.segmentation.prediction import Prediction, check_orientation, predict_oriented

    class Mirror:  # a "model" that labels the left-most tenth of its input, in its own voxel order
        spatial_dims, spacing = 3, (2.0, 1.0, 1.0)
        provenance = {"orientation": "LAS"}
        seen = None

        def predict(self, image, *, spacing, axes=None, config=None, progress=None, stop=None):
            Mirror.seen = (image, spacing)
            out = np.zeros(image.shape, np.uint8)
            out[..., :4] = 1
            return Prediction(labels=out, probabilities=out[None].astype(np.float16), class_ids=(0, 1))

    notes: list[str] = []
    pred = predict_oriented(Mirror(), truth, spacing=(2.0, 1.0, 1.0), affine=RAS, notes=notes.append,
                            name="layer 'ct'")
    np.testing.assert_array_equal(Mirror.seen[0], truth[..., ::-1])  # LAS voxel order
    assert pred.labels[..., -4:].all() and not pred.labels[..., :-4].any()  # back on the RAS grid
    assert pred.probabilities.shape == (1, *SHAPE) and pred.probabilities[0, ..., -1].all()
    assert len(notes) == 1 and "orientation RAS" in notes[0] and "LAS" in notes[0]
    with pytest.raises(Refused, match="^layer 'ct' is stored in orientation RAS but the model was trained in "
                                      "LAS: use the CLI$"):
        check_orientation(Mirror(), RAS, "layer 'ct'", "use the CLI")
    check_orientation(Mirror(), flipped_x(truth)[1], "ct", "")  # the same orientation passes
    check_orientation(Mirror(), None, "ct", "")  # no affine: nothing to check
    # an image and its labels for fine-tuning: both in the model's (LAS) voxel order
    from napari_medml.segmentation.prediction import in_model_orientation

    (image, labels), spacing = in_model_orientation(Mirror(), [truth, truth], (2.0, 1.0, 1.0), RAS)
    np.testing.assert_array_equal(image, truth[..., ::-1])
    np.testing.assert_array_equal(labels, truth[..., ::-1])
    assert spacing == (2.0, 1.0, 1.0)


def tiff_volume(data: np.ndarray, spacing: tuple[float, ...], origin: tuple[float, ...], name: str = "tif") -> Volume:
    """A Volume as io reads a TIFF: spacing and origin along napari's axes, no affine."""
    return Volume(data, tuple(spacing), tuple(origin), None, True, name)


PSL = np.array([[0.0, 0.0, -2.0, 30.0], [-1.0, 0.0, 0.0, -20.0], [0.0, 1.0, 0.0, 5.0], [0.0, 0.0, 0.0, 1.0]])
LPS = np.diag([-1.0, -1.0, 2.0, 1.0]) + np.pad(np.array([[30.0], [-20.0], [5.0]]), ((0, 1), (3, 0)))


@pytest.mark.parametrize("affine", [LPS, PSL], ids=["LPS", "PSL"])
def test_a_tiff_saved_from_napari_lies_on_the_ras_grid_and_is_reoriented_both_ways(affine):
    """napari shows a NIfTI file in RAS order and saves a layer of it to TIFF in that order with
    its RAS origin: compared with the file, the TIFF is reoriented (it scored Dice 0 in silence)."""
    from napari_medml.io.orientation import to_canonical

    rng = np.random.default_rng(0)
    stored = nifti_volume(rng.integers(0, 3, (10, 14, 12)).astype(np.uint8), affine, "nii")
    shown = to_canonical(stored)  # what napari shows, and the writer saves
    assert shown.data.shape != stored.data.shape or not np.array_equal(shown.data, stored.data)
    tif = tiff_volume(shown.data, shown.spacing, shown.origin)
    out = align_to(tif, stored, moving_name="prediction 'copy.tif'", reference_name="labels 'lab.nii.gz'")
    assert np.array_equal(out.volume.data, stored.data) and not out.assumed
    assert "copy.tif" in out.note and "RAS" in out.note and axis_codes(affine) in out.note
    back = align_to(stored, tif, moving_name="prediction 'lab.nii.gz'", reference_name="labels 'copy.tif'")
    assert np.array_equal(back.volume.data, shown.data) and back.volume.spacing == tif.spacing
    assert tif.data is shown.data  # the inputs are never changed


def test_a_tiff_in_the_stored_order_passes_and_one_without_an_origin_is_taken_so_with_a_warning(truth):
    data, las = flipped_x(truth)
    stored = nifti_volume(data, las, "nii")
    kept = tiff_volume(data, stored.spacing, stored.origin)  # as predict writes a TIFF: stored order and origin
    out = align_to(kept, stored, moving_name="prediction 'p.tif'", reference_name="labels 'l.nii.gz'")
    assert out.note is None and out.volume is kept
    unplaced = tiff_volume(data, stored.spacing, (0.0,) * 3)
    elsewhere = nifti_volume(data, las + np.pad(np.array([[0, 0, 0, 5.0]]), ((0, 3), (0, 0))), "nii")
    out = align_to(unplaced, elsewhere, moving_name="prediction 'p.tif'", reference_name="labels 'l.nii.gz'")
    assert out.assumed and out.volume is unplaced and "no origin or orientation" in out.line
    assert "LAS" in out.line and "save it as .nii.gz" in out.line
    # origin 0 is the RAS grid's (napari saves a translate of 0 as no origin): reoriented, with a warning
    out = align_to(unplaced, stored, moving_name="prediction 'p.tif'", reference_name="labels 'l.nii.gz'")
    assert out.assumed and "told by its origin 0" in out.line and np.array_equal(out.volume.data, data[:, :, ::-1])
    ras = nifti_volume(truth, RAS, "ras")  # napari shows a RAS file as stored: nothing to warn of
    assert align_to(tiff_volume(truth, ras.spacing, (0.0,) * 3), ras, moving_name="a", reference_name="b").note is None


def test_a_tiff_whose_origin_matches_neither_grid_is_refused(truth):
    data, las = flipped_x(truth)
    stored = nifti_volume(data, las, "nii")
    elsewhere = tiff_volume(data, stored.spacing, (0.0, 0.0, 7.0))
    with pytest.raises(InputError, match="origins differ") as info:
        align_to(elsewhere, stored, moving_name="prediction 'p.tif'", reference_name="labels 'l.nii.gz'")
    assert "origin (0, 0, 7)" in str(info.value) and "l.nii.gz" in str(info.value)
    assert "differ by (0, 0, -32)" in str(info.value) and "save prediction 'p.tif' without an origin" in str(info.value)


def test_a_tiff_that_fits_both_grids_or_no_grid_is_taken_as_stored_with_a_warning_that_says_why():
    """Review 25: an axis swap of two equal axes (ARS) gives the stored and the RAS grid the same
    shape, spacing and origin; a .npy holds neither. Each is taken as stored, with the fix."""
    ars = np.array([[0.0, 1.0, 0.0, 4.0], [1.0, 0.0, 0.0, 6.0], [0.0, 0.0, 2.0, 8.0], [0.0, 0.0, 0.0, 1.0]])
    stored = nifti_volume(np.zeros((6, 20, 20), np.uint8), ars, "nii")
    assert axis_codes(ars) == "ARS"
    both = align_to(tiff_volume(stored.data, stored.spacing, stored.origin), stored, moving_name="prediction 'p.tif'",
                    reference_name="labels 'l.nii.gz'")
    assert both.assumed and "fits both the grid labels 'l.nii.gz' is stored on (ARS)" in both.line
    npy = Volume(np.zeros((12, 14, 10), np.uint8), (1.0,) * 3, (0.0,) * 3, None, True, "npy")
    lps = nifti_volume(np.zeros((12, 14, 10), np.uint8), LPS, "nii")
    out = align_to(npy, lps, moving_name="prediction 'p.npy'", reference_name="labels 'l.nii.gz'")
    assert out.assumed and "has no voxel size or position" in out.line and "as stored (LPS)" in out.line
    assert "save it as .nii.gz" in out.line


def test_a_tiff_origin_rounded_by_the_nifti_header_or_half_a_voxel_apart_still_fits():
    """Review 25: a NIfTI header rounds its origin to float32 (12345.678 -> 12345.6777); another
    tool's TIFF may put the origin at a voxel's corner. Both passed before and pass again."""
    far = np.diag([0.1, 0.1, 0.3, 1.0])
    far[:3, 3] = np.float32([12345.678, -9876.543, 4321.987])
    stored = nifti_volume(np.zeros((12, 24, 20), np.uint8), far, "nii")
    exact = tiff_volume(stored.data, stored.spacing, (4321.987, -9876.543, 12345.678))
    assert align_to(exact, stored, moving_name="a", reference_name="b").note is None
    corner = tiff_volume(stored.data, stored.spacing, tuple(o - s / 2 for o, s in zip(exact.origin, stored.spacing)))
    assert align_to(corner, stored, moving_name="a", reference_name="b").note is None


def test_a_slice_over_time_is_compared_on_its_two_spatial_axes():
    """Review 25: a NIfTI slice over time (X, Y, 1, T) reads as TYX; its TIFF copy was compared
    on three spatial axes (the frame interval against the slice thickness) and refused."""
    from napari_medml.io.geometry import spatial_axes

    affine = np.diag([-0.8, -0.9, 2.5, 1.0])
    affine[:3, 3] = (10.3, -20.7, 33.1)
    nii = Volume(np.zeros((3, 24, 20), np.uint8), (4.0, 0.9, 0.8), (0.0, -20.7, 10.3), affine, True, "nii",
                 axes="TYX")
    tif = tiff_volume(nii.data.copy(), nii.spacing, nii.origin)
    tif = Volume(tif.data, tif.spacing, tif.origin, None, True, "tif", axes="TYX")
    assert spatial_axes(nii, None) == (1, 3) and spatial_axes(tiff_volume(nii.data, (1.0,) * 3, (0.0,) * 3), None) == (
        0, 3)  # unnamed or Z: spatial
    assert align_to(tif, nii, moving_name="prediction 'p.tif'", reference_name="labels 'l.nii.gz'").note is None


def test_a_grid_described_for_a_message_names_no_negative_zero():
    """Trial 41: a TIFF's grid read 'origin (-0, -0)' in an error (a flipped axis's -0.0)."""
    from napari_medml.io.geometry import describe_grid

    vol = Volume(np.zeros((4, 5), np.uint8), (2.0, 0.5), (-0.0, 3.0), None, False, "t", {}, "YX")
    assert describe_grid(vol).endswith("origin (0, 3)")
