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
