"""The npe2 reader and writers inside a real napari viewer."""

from __future__ import annotations

from pathlib import Path

import napari
import nibabel as nib
import numpy as np
import pytest

from napari_medml.io import read_volume

PLUGIN = "napari-medml"


def oblique_affine() -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = (-40.0, 12.5, 7.0)
    return affine


@pytest.fixture
def ct_path(tmp_path: Path) -> Path:
    data = np.random.default_rng(0).normal(size=(6, 7, 5)).astype(np.float32)  # (X, Y, Z)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, oblique_affine()), path)
    return path


def test_reader_opens_nifti_as_image_in_place(make_napari_viewer, ct_path: Path) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open(str(ct_path), plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    vol = read_volume(ct_path)
    assert isinstance(layer, napari.layers.Image) and layer.name == "ct"
    assert layer.data.shape == (5, 7, 6)
    np.testing.assert_allclose(layer.scale, vol.spacing)
    np.testing.assert_allclose(layer.translate, vol.origin)
    np.testing.assert_array_equal(np.array(layer.metadata["affine"]), vol.affine)


def test_reader_opens_integer_seg_file_as_labels(make_napari_viewer, tmp_path: Path) -> None:
    ids = np.zeros((6, 7, 5), np.int16)
    ids[1:3, 2:5, 1:4] = 2
    nib.save(nib.Nifti1Image(ids, oblique_affine()), tmp_path / "ct_seg.nii.gz")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "ct_seg.nii.gz"), plugin=PLUGIN)
    assert isinstance(layer, napari.layers.Labels)
    np.testing.assert_array_equal(layer.data, ids.T)


def test_a_float_mask_named_like_labels_with_fractions_opens_as_an_image_and_says_why(make_napari_viewer, tmp_path,
                                                                                      notes) -> None:
    """Note 48: a float mask named ``*_seg.tif`` with a fraction opened as an image, so no labels box
    offered it, and nothing said why; a whole-number float mask opens as labels."""
    import tifffile

    mask = np.zeros((12, 16), np.float32)
    mask[3:9, 4:12] = 1.0
    tifffile.imwrite(tmp_path / "whole_seg.tif", mask)
    mask[3, 4] = 0.5  # an interpolated edge
    tifffile.imwrite(tmp_path / "soft_seg.tif", mask)
    viewer = make_napari_viewer()
    (whole,) = viewer.open(str(tmp_path / "whole_seg.tif"), plugin=PLUGIN)
    assert isinstance(whole, napari.layers.Labels) and not notes
    (soft,) = viewer.open(str(tmp_path / "soft_seg.tif"), plugin=PLUGIN)
    assert isinstance(soft, napari.layers.Image)
    assert [n.message for n in notes] == [
        "'soft_seg.tif' is named like labels but holds fractions (1 of its 192 values, e.g. 0.5), so it opened as "
        "an image: right-click its layer > Convert to Labels (napari drops the fractions, so 0.99 becomes 0), or "
        "save it with whole-number ids 0, 1, 2, ..."]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "soft_seg.tif"), mask)  # the file is unchanged
    viewer.layers.selection = {soft}  # the fix the line gives works (the context menu runs this command)
    from menu_helpers import get_app_model

    get_app_model().commands.execute_command("napari.layer.convert_to_labels")
    assert isinstance(viewer.layers[-1], napari.layers.Labels) and viewer.layers[-1].data.max() == 1


def test_a_labels_layer_saved_as_tif_opens_as_labels_again(make_napari_viewer, tmp_path: Path) -> None:
    """Whatever the file's name: the plugin's TIFF says it holds labels."""
    ids = np.zeros((4, 9, 11), np.uint8)
    ids[1:3, 2:6, 3:8] = 3
    viewer = make_napari_viewer()
    saved = viewer.add_labels(ids, name="pred", scale=(2.0, 0.5, 0.5))
    viewer.layers.selection = {saved}
    viewer.layers.save(str(tmp_path / "pred.tif"), selected=True, plugin=PLUGIN)
    (layer,) = viewer.open(str(tmp_path / "pred.tif"), plugin=PLUGIN)
    assert isinstance(layer, napari.layers.Labels)
    np.testing.assert_array_equal(layer.data, ids)
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))


def test_reader_declines_other_files() -> None:
    from napari_medml._reader import get_reader

    assert get_reader("photo.png") is None
    assert get_reader(["a.nii.gz", "b.txt"]) is None
    assert callable(get_reader(["a.nii.gz", "b.tif"]))


def test_save_layers_through_napari_is_lossless(make_napari_viewer, ct_path, tmp_path) -> None:
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(ct_path), plugin=PLUGIN)
    labels = viewer.add_labels(
        (np.asarray(image.data) > 0).astype(np.uint8),
        name="ct [mask]", scale=image.scale, translate=image.translate, metadata=image.metadata,
    )  # fmt: skip

    viewer.layers.selection = {image}
    viewer.layers.save(str(tmp_path / "saved.nii.gz"), selected=True, plugin=PLUGIN)
    viewer.layers.selection = {labels}
    viewer.layers.save(str(tmp_path / "mask.tif"), selected=True, plugin=PLUGIN)

    original, saved = read_volume(ct_path), read_volume(tmp_path / "saved.nii.gz")
    assert saved.data.dtype == original.data.dtype
    np.testing.assert_array_equal(saved.data, original.data)
    assert saved.spacing == original.spacing and saved.origin == original.origin
    np.testing.assert_array_equal(saved.affine, original.affine)  # oblique, exact

    mask = read_volume(tmp_path / "mask.tif")
    assert mask.data.dtype == np.uint8
    np.testing.assert_array_equal(mask.data, labels.data)
    np.testing.assert_allclose(mask.spacing, original.spacing, rtol=1e-6)


def test_a_layer_the_writer_refuses_tells_the_user_why(make_napari_viewer, tmp_path) -> None:
    """napari drops a writer's ValueError and says only that no writer was found; the
    plugin's reason and fix reach the user (napari shows the error's message)."""
    from napari_medml._writer import LayerNotWritten

    viewer = make_napari_viewer()
    rgb = viewer.add_image(np.zeros((8, 10, 3), np.uint8), name="photo", rgb=True)
    viewer.layers.selection = {rgb}
    for plugin in (PLUGIN, None):  # the plugin named, or found by the file's extension
        with pytest.raises(LayerNotWritten) as err:
            viewer.layers.save(str(tmp_path / "photo.nii.gz"), selected=True, plugin=plugin)
        assert str(err.value).startswith("'photo' was not saved: cannot write RGB image 'photo' to NIfTI")
        assert "save it as TIFF" in str(err.value)
    seg = viewer.add_labels(np.zeros((8, 10), np.uint8), name="seg")
    viewer.layers.selection = {seg}
    with pytest.raises(LayerNotWritten, match="'seg' was not saved: .*does not exist"):
        viewer.layers.save(str(tmp_path / "no" / "such" / "seg.tif"), selected=True, plugin=PLUGIN)
    assert not (tmp_path / "photo.nii.gz").exists() and not (tmp_path / "no").exists()


def test_npe2_writer_round_trip(tmp_path: Path) -> None:
    npe2 = pytest.importorskip("npe2")
    ids = np.zeros((4, 5, 6), np.int32)
    ids[1, 2, 3] = 9
    meta = {"name": "cells", "scale": (2.0, 0.5, 0.25), "translate": (1.0, 0.0, -1.0), "metadata": {}}
    written = npe2.write(str(tmp_path / "cells.nii.gz"), [(ids, meta, "labels")], plugin_name=PLUGIN)
    assert written == [str(tmp_path / "cells.nii.gz")]
    layers = npe2.read([written[0]], plugin_name=PLUGIN, stack=False)
    data, kwargs, layer_type = layers[0]
    assert layer_type == "labels" and data.dtype == np.int32
    np.testing.assert_array_equal(data, ids)
    assert kwargs["scale"] == meta["scale"] and kwargs["translate"] == meta["translate"]


def test_file_open_and_save_choose_the_plugin_for_nifti(make_napari_viewer, ct_path, tmp_path) -> None:
    """File › Open and File › Save Selected Layers, where napari picks reader and writer."""
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    # napari's own (imageio) reader also claims *.nii.gz: with no choice made yet, napari
    # asks the user (File › Open shows this error as its reader dialog, MedML listed)
    with pytest.raises(MultipleReaderError) as asked:
        viewer.open(str(ct_path), plugin=None)
    assert PLUGIN in asked.value.available_plugins
    # the choice remembered in that dialog (or in Preferences › Plugins)
    settings = get_settings().plugins
    before = dict(settings.extension2reader)
    settings.extension2reader = {**before, "*.nii.gz": PLUGIN}
    try:
        (image,) = viewer.open(str(ct_path), plugin=None)
    finally:
        settings.extension2reader = before
    assert image.source.reader_plugin == PLUGIN
    viewer.layers.selection = {image}
    (saved,) = viewer.layers.save(str(tmp_path / "again.nii.gz"), selected=True)  # no plugin named
    original, again = read_volume(ct_path), read_volume(saved)
    np.testing.assert_array_equal(again.data, original.data)
    np.testing.assert_array_equal(again.affine, original.affine)


def test_save_selected_layers_writes_one_file_per_layer_in_a_folder(make_napari_viewer, ct_path, tmp_path) -> None:
    """File › Save Selected Layer(s) with an image and its labels selected (napari picked
    napari-svg and failed): a folder named after the file, one NIfTI per layer, each exactly
    as one layer saves; a name taken is refused and nothing is left behind."""
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(ct_path), plugin=PLUGIN)
    labels = viewer.add_labels((np.asarray(image.data) > 0).astype(np.uint8), name="ct [mask]",
                               scale=image.scale, translate=image.translate, metadata=image.metadata)
    viewer.layers.selection = {image, labels}
    for plugin in (PLUGIN, None):  # the plugin named, or found for the file's extension
        out = tmp_path / ("case" if plugin else "case2")
        written = viewer.layers.save(str(out) + ".nii.gz", selected=True, plugin=plugin)
        assert sorted(written) == sorted([str(out / "ct.nii.gz"), str(out / "ct [mask].nii.gz")])
        saved, mask = read_volume(out / "ct.nii.gz"), read_volume(out / "ct [mask].nii.gz")
        np.testing.assert_array_equal(saved.data, read_volume(ct_path).data)
        np.testing.assert_array_equal(saved.affine, read_volume(ct_path).affine)
        assert mask.is_labels and mask.data.dtype == np.uint8
    from napari_medml._writer import LayerNotWritten

    with pytest.raises(LayerNotWritten, match=r"2 layers were not saved: '.*case' exists already: choose a new name"):
        viewer.layers.save(str(tmp_path / "case.tif"), selected=True, plugin=PLUGIN)
    rgb = viewer.add_image(np.zeros((8, 10, 3), np.uint8), name="photo", rgb=True)
    viewer.layers.selection = {labels, rgb}
    with pytest.raises(LayerNotWritten, match="'photo' was not saved: cannot write RGB image 'photo' to NIfTI"):
        viewer.layers.save(str(tmp_path / "mixed.nii.gz"), selected=True, plugin=PLUGIN)
    assert not (tmp_path / "mixed").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no work folder left


def test_a_layer_saved_to_npy_warns_that_its_voxel_size_and_origin_are_not_kept(make_napari_viewer, tmp_path,
                                                                               notes, monkeypatch):
    """Review 33: File > Save to .npy dropped the layer's scale and translate without a word (and a
    Python warning would not do: napari records a save's warnings and drops them once it saved)."""
    from napari.plugins import _npe2
    from qtpy.QtWidgets import QFileDialog

    viewer = make_napari_viewer()
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[1:3, 2:6, 2:6] = 1
    seg = viewer.add_labels(labels, name="seg", scale=(2.5, 0.5, 0.5), translate=(10.0, -5.0, 3.0))
    viewer.layers.selection = {seg}
    choice = next(f for f in _npe2.file_extensions_string_for_layers([seg])[0].split(";;") if "medml" in f.lower())
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "seg.npy"), choice))
    viewer.window._qt_viewer._save_layers_dialog(selected=True)  # File > Save Selected Layers, MedML chosen
    np.testing.assert_array_equal(np.load(tmp_path / "seg.npy"), labels)
    said = [n.message for n in notes if "was saved to" in n.message]
    assert said == [f"'seg' was saved to '{tmp_path / 'seg.npy'}' without its voxel size and origin: a .npy stores "
                    "the voxels only; save as .tif, .nii.gz or .zarr to keep them"], [n.message for n in notes]
    viewer.layers.selection = {viewer.add_labels(labels, name="plain")}
    viewer.layers.save(str(tmp_path / "plain.npy"), selected=True, plugin=PLUGIN)
    assert len([n for n in notes if "was saved to" in n.message]) == 1  # on the unit grid nothing is lost


def test_an_oblique_nifti_opens_with_a_warning_and_saves_its_affine_back(make_napari_viewer, tmp_path, notes):
    """Review 33: a volume turned 20 degrees opened axis-aligned without a word."""
    turn = np.deg2rad(20.0)
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]
    affine[:3, :3] *= 2.0
    data = np.random.default_rng(0).normal(size=(10, 12, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "oblique.nii.gz"))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "oblique.nii.gz"), plugin=PLUGIN)
    said = [n.message for n in notes if "oblique" in n.message]
    assert len(said) == 1 and "is oblique (its voxel axes are turned up to 20 degrees from the world's)" in said[0]
    viewer.layers.selection = {layer}
    viewer.layers.save(str(tmp_path / "again.nii.gz"), selected=True, plugin=PLUGIN)
    np.testing.assert_allclose(nib.load(str(tmp_path / "again.nii.gz")).affine, affine, atol=1e-5)
    nib.save(nib.Nifti1Image(data, np.diag([-2.0, 2.0, 2.0, 1.0])), str(tmp_path / "straight.nii.gz"))
    viewer.open(str(tmp_path / "straight.nii.gz"), plugin=PLUGIN)
    assert len([n for n in notes if "oblique" in n.message]) == 1  # LAS is flipped, not turned: nothing to say


def _world_values(path: Path, reference: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each nonzero voxel of ``path`` and the value ``reference`` holds at the same world point
    (nibabel's affines: the world check of a saved file, independent of the plugin)."""
    out, ref = nib.load(str(path)), nib.load(str(reference))
    data, ref_data = np.asanyarray(out.dataobj), np.asanyarray(ref.dataobj)
    idx = np.argwhere(np.ones(data.shape, bool))[::7]
    back = nib.affines.apply_affine(np.linalg.inv(ref.affine) @ out.affine, idx)
    assert np.allclose(back, np.round(back), atol=1e-3), "not on the reference's voxel grid"
    inside = np.all((np.round(back) >= 0) & (np.round(back) < ref_data.shape), axis=1)
    assert inside.all()
    return data[tuple(idx.T)], ref_data[tuple(np.round(back).astype(int).T)]


def test_layers_made_on_an_oblique_lps_nifti_save_where_they_lie(make_napari_viewer, open_widget, qtbot,
                                                                  tmp_path) -> None:
    """Trial 40: labels painted on an oblique NIfTI (napari's New Labels) and Preprocess results of it
    were saved axis-aligned, 25-108 mm off, and those of an LPS file in RAS order with other codes;
    MedML's train then refused the labels as 'turned 20 degrees'. Each saves on the image's grid."""
    from menu_helpers import get_app_model  # napari 0.5.0 names it get_app

    turn = np.deg2rad(20.0)
    affine = np.diag([-0.9, -1.1, 2.0, 1.0])  # LPS, then turned about z
    affine[:2, :2] = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]) @ affine[:2, :2]
    affine[:3, 3] = (30.0, -20.0, 5.0)
    data = (np.random.default_rng(0).random((30, 26, 12)) * 100).astype(np.float32)  # (X, Y, Z)
    data[8:20, 6:18, 3:9] += 200  # a bright box: what the threshold crop keeps
    source = tmp_path / "oblique.nii.gz"
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(source))
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(source), plugin=PLUGIN)
    # napari's New Labels on the image, painted
    viewer.layers.selection.active = image
    get_app_model().commands.execute_command("napari.window.file.new_layer.new_labels").result()
    painted = viewer.layers[-1]
    assert not painted.metadata  # napari copies the image's placement, not its file details
    painted.data[2:5, 10:14, 8:12] = 3
    viewer.layers.selection = {painted}
    viewer.layers.save(str(tmp_path / "painted.nii.gz"), selected=True, plugin=PLUGIN)
    saved = nib.load(str(tmp_path / "painted.nii.gz"))
    np.testing.assert_allclose(saved.affine, affine, atol=1e-5)
    assert (int(saved.header["sform_code"]), int(saved.header["qform_code"])) == (1, 1)
    assert saved.shape == data.shape and np.count_nonzero(np.asanyarray(saved.dataobj)) == 3 * 4 * 4
    # Preprocess results: z-score (same grid), a threshold crop and a resampled copy (new grids)
    widget = open_widget(viewer, "preprocess")
    for operation, params, name in (("zscore", {}, "zscore"), ("crop", {"threshold": 150.0, "margin": 0}, "crop"),
                                    ("resample", {"target_spacing": "2, 2, 2"}, "resample")):
        widget["image"].value, widget["operation"].value = image, operation
        for key, value in params.items():
            widget[key].value = value
        widget["apply"].changed.emit(True)
        qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
        result = viewer.layers[-1]
        assert result.name.startswith("oblique [")
        viewer.layers.selection = {result}
        viewer.layers.save(str(tmp_path / f"{name}.nii.gz"), selected=True, plugin=PLUGIN)
        out = nib.load(str(tmp_path / f"{name}.nii.gz"))
        assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(affine), name  # the file's own voxel order
        assert (int(out.header["sform_code"]), int(out.header["qform_code"])) == (1, 1), name
        if name == "zscore":
            np.testing.assert_allclose(out.affine, affine, atol=1e-5)
            np.testing.assert_allclose(np.asanyarray(out.dataobj), (data - data.mean()) / data.std(), atol=1e-4)
        elif name == "crop":  # every voxel is the source's voxel at its world point
            assert out.shape == (12, 12, 6)
            got, want = _world_values(tmp_path / "crop.nii.gz", source)
            np.testing.assert_array_equal(got, want)
        else:  # the resampled field of view keeps its centre in the world
            centre = nib.affines.apply_affine(out.affine, (np.array(out.shape) - 1) / 2)
            np.testing.assert_allclose(centre, nib.affines.apply_affine(affine, (np.array(data.shape) - 1) / 2),
                                       atol=1e-3)
            np.testing.assert_allclose(np.linalg.norm(out.affine[:3, :3], axis=0), 2.0, atol=0.1)


def test_lazily_read_files_with_an_origin_open_with_their_values_range(make_napari_viewer, tmp_path: Path,
                                                                        monkeypatch) -> None:
    """Trial 42: a 1.4 GB NIfTI (and a large TIFF with an origin, a single-level OME-Zarr) opened
    lazily with napari's guess of contrast limits, (0, 1): a white picture of values 112 to 347."""
    import dask.array as da
    import tifffile

    from napari_medml.io.memory import LAZY_ENV

    monkeypatch.setenv(LAZY_ENV, "0.01")  # 10 KiB: these small files are read lazily, as large ones are
    plane = np.linspace(112, 347, 48 * 40).reshape(48, 40)
    data = np.stack([plane] * 20).astype(np.uint16)  # every plane holds the whole range
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = (-20.0, 15.0, 7.5)
    nib.save(nib.Nifti1Image(data.transpose(2, 1, 0), affine), tmp_path / "scan.nii")
    tifffile.imwrite(tmp_path / "stack.tif", data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": 2.0, "xorigin": 4.0, "yorigin": 6.0, "zorigin": 1.0})
    viewer = make_napari_viewer()
    for name in ("scan.nii", "stack.tif"):
        (layer,) = viewer.open(str(tmp_path / name), plugin="napari-medml")
        assert isinstance(layer.data, da.Array) and any(layer.translate), name
        assert tuple(layer.contrast_limits) == (112.0, 347.0), (name, layer.contrast_limits)
    # two frames of 20 planes: both frames are sampled (the limits came from frame 0 alone)
    movie = np.stack([data // 2, data]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "movie.tif", movie, imagej=True, metadata={"axes": "TZYX"})
    (layer,) = viewer.open(str(tmp_path / "movie.tif"), plugin="napari-medml")
    assert isinstance(layer.data, da.Array) and tuple(layer.contrast_limits) == (56.0, 347.0)


def test_a_nifti_saves_back_with_its_own_qform_and_labels_of_an_unoriented_one_without_orientation(
        make_napari_viewer, tmp_path: Path) -> None:
    """Trial 42: a file whose qform (LPS, 30 mm away) disagreed with its sform was saved with the
    sform as its qform; labels painted on a NIfTI with no orientation (codes 0) were saved 'aligned',
    which other tools place off the image."""
    from menu_helpers import get_app_model  # napari 0.5.0 names it get_app

    data = (np.random.default_rng(1).random((20, 24, 10)) * 100).astype(np.float32)  # (X, Y, Z)
    sform, qform = np.diag([-1.0, -1.1, 2.5, 1.0]), np.diag([-1.0, -1.1, 2.5, 1.0])
    sform[:3, 3], qform[:3, 3] = (10.0, -20.0, 5.0), (40.0, -20.0, 5.0)
    img = nib.Nifti1Image(data, sform)
    img.set_sform(sform, code=2)
    img.set_qform(qform, code=1)
    nib.save(img, tmp_path / "two.nii.gz")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "two.nii.gz"), plugin="napari-medml")
    viewer.layers.selection = {layer}
    viewer.layers.save(str(tmp_path / "two_back.nii.gz"), selected=True, plugin="napari-medml")
    back = nib.load(tmp_path / "two_back.nii.gz")
    np.testing.assert_allclose(back.get_qform(), qform, atol=1e-5)
    np.testing.assert_allclose(back.get_sform(), sform, atol=1e-5)
    assert (int(back.header["sform_code"]), int(back.header["qform_code"])) == (2, 1)
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    # no orientation: napari's New Labels on it, painted and saved, has none either
    bare = nib.Nifti1Image(data, None)
    bare.header.set_zooms((0.9, 1.1, 2.5))
    nib.save(bare, tmp_path / "bare.nii.gz")
    viewer.layers.clear()  # napari 0.5.0's New Labels covers every layer's extent: the image alone
    (image,) = viewer.open(str(tmp_path / "bare.nii.gz"), plugin="napari-medml")
    viewer.layers.selection.active = image
    get_app_model().commands.execute_command("napari.window.file.new_layer.new_labels").result()
    painted = viewer.layers[-1]
    painted.data[4, 5, 6] = 2
    viewer.layers.selection = {painted}
    viewer.layers.save(str(tmp_path / "bare_labels.nii.gz"), selected=True, plugin="napari-medml")
    saved = nib.load(tmp_path / "bare_labels.nii.gz")
    assert (int(saved.header["sform_code"]), int(saved.header["qform_code"])) == (0, 0)
    np.testing.assert_allclose(saved.affine, nib.load(tmp_path / "bare.nii.gz").affine)  # nibabel places both alike
    assert np.asarray(saved.dataobj)[6, 5, 4] == 2


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz"])
def test_a_layer_in_micrometres_saves_and_opens_again_in_micrometres(make_napari_viewer, tmp_path, suffix) -> None:
    """Trial 47: units set in the viewer (a layer in µm) were not written, and the file opened in pixels."""
    viewer = make_napari_viewer()
    data = np.arange(4 * 16 * 16, dtype=np.uint16).reshape(4, 16, 16)
    try:
        image = viewer.add_image(data, name="cells", scale=(0.29, 0.26, 0.26), units=("um",) * 3)
        seg = viewer.add_labels((data % 3).astype(np.uint8), name="seg", scale=(0.29, 0.26, 0.26), units=("um",) * 3)
    except TypeError:
        pytest.skip("napari 0.5.0 has no layer units")
    for layer in (image, seg):
        viewer.layers.selection = {layer}
        path = tmp_path / f"{layer.name}{suffix}"
        viewer.layers.save(str(path), selected=True, plugin=PLUGIN)
        assert read_volume(path).meta["unit"] == "um"
        back = viewer.open(str(path), plugin=PLUGIN)[0]
        assert [str(u) for u in back.units] == ["micrometer"] * 3
        np.testing.assert_allclose(back.scale, (0.29, 0.26, 0.26), rtol=1e-5)
        assert type(back) is type(layer)


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz"])
def test_a_layer_in_nanometres_opens_again_at_its_size(make_napari_viewer, tmp_path, suffix) -> None:
    """Note 46: NIfTI has no nanometre, and a layer in nm saved as .nii.gz opened with unit unknown; it is
    written in µm now, its scale and position converted, so it lies where it lay (the TIFF reader already
    gave nm as µm, so files of one microscope compare)."""
    viewer = make_napari_viewer()
    try:
        layer = viewer.add_image(np.ones((4, 8, 8), np.float32), name="em", scale=(40.0, 8.0, 8.0),
                                 translate=(80.0, 16.0, -8.0), units=("nm",) * 3)
    except TypeError:
        pytest.skip("napari 0.5.0 has no layer units")
    viewer.layers.selection = {layer}
    path = tmp_path / f"em{suffix}"
    viewer.layers.save(str(path), selected=True, plugin=PLUGIN)
    back = viewer.open(str(path), plugin=PLUGIN)[0]
    assert [str(u) for u in back.units] == ["micrometer"] * 3
    np.testing.assert_allclose(back.scale, (0.04, 0.008, 0.008), rtol=1e-5)
    np.testing.assert_allclose(back.translate, (0.08, 0.016, -0.008), rtol=1e-5, atol=1e-9)
    assert [str(u) for u in layer.units] == ["nanometer"] * 3 and tuple(layer.scale) == (40.0, 8.0, 8.0)


def test_a_channel_last_length1_axis_comes_back_where_it_was(make_napari_viewer, open_widget, qtbot,
                                                             tmp_path) -> None:
    """Trial 49: a (64, 64, 1) .npy opened and saved again came back (1, 64, 64), and its prediction
    (64, 64). Now .npy keeps it last, for the layer and for its prediction; a TIFF, which stores Y
    and X last, leaves it off rather than moving it to the front."""
    import tifffile

    from napari_medml._widgets.predict import BUNDLE_CHOICE
    from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from napari_medml.segmentation.task import train

    rng = np.random.default_rng(0)
    labels = np.zeros((48, 40, 1), np.uint8)
    labels[10:30, 8:30] = 1
    image = (labels + 0.2 * rng.standard_normal(labels.shape)).astype(np.float32)
    np.save(tmp_path / "cells.npy", image)
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(16, 16), val_fraction=0.0),
                         augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=2), device="cpu")
    bundle = train(image[..., 0], labels[..., 0], config).save(tmp_path / "m")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "cells.npy"), plugin=PLUGIN)
    assert layer.data.shape == (48, 40)
    predict = open_widget(viewer, "predict")
    predict["images"].value = [layer]
    predict["model"].value = BUNDLE_CHOICE
    predict["bundle"].value = bundle
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=60000)
    pred = viewer.layers["cells [prediction]"]
    (tmp_path / "out").mkdir()
    for saved, suffix, shape in ((layer, ".npy", (48, 40, 1)), (pred, ".npy", (48, 40, 1)),
                                 (layer, ".tif", (48, 40)), (pred, ".tif", (48, 40)),
                                 (layer, ".nii.gz", (48, 40)), (pred, ".nii.gz", (48, 40))):  # review 49: refused
        path = tmp_path / "out" / f"{saved.name}{suffix}".replace(" ", "_")
        viewer.layers.selection = {saved}
        viewer.layers.save(str(path), selected=True, plugin=PLUGIN)
        data = {".npy": np.load, ".tif": tifffile.imread, ".nii.gz": lambda p: read_volume(p).data}[suffix](path)
        assert data.shape == shape, (path.name, data.shape)
        np.testing.assert_array_equal(np.squeeze(data), np.asarray(saved.data))
