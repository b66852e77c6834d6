"""NIfTI files stored in other orientations than RAS, through napari's own paths: File >
Open (the reader), File > Save (the writer) and the Train and Predict widgets from the
Plugins menu.

The reader puts every NIfTI volume in RAS+ voxel order, so an image stored LAS and its
labels stored RAS lie on one another in the viewer; saving as NIfTI writes the file's own
order back; the widgets put a layer in the orientation a model was trained in.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import napari
import nibabel as nib
import numpy as np
import pytest
import torch

from napari_medml._widgets._session import session_for
from napari_medml._widgets.predict import BUNDLE_CHOICE
from napari_medml.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
from napari_medml.samples import phantom_3d
from napari_medml.segmentation.task import train

PLUGIN = "napari-medml"
CROP = (slice(16, 32), slice(16, 80), slice(16, 80))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def phantom():
    p = phantom_3d(0)
    return p.image[CROP].astype(np.float32), p.labels[CROP].astype(np.uint8), p.spacing


def las_affine(spacing: tuple[float, ...], shape_zyx: tuple[int, ...]) -> np.ndarray:
    """An affine whose voxel x axis runs right-to-left (LAS), napari spacing (Z, Y, X)."""
    dz, dy, dx = spacing
    affine = np.diag([-dx, dy, dz, 1.0])
    affine[:3, 3] = (dx * (shape_zyx[2] - 1) - 20.0, -7.0, 3.0)
    return affine


def ras_affine(spacing: tuple[float, ...], shape_zyx: tuple[int, ...]) -> np.ndarray:
    """The RAS affine of the same world grid as :func:`las_affine`."""
    dz, dy, dx = spacing
    affine = np.diag([dx, dy, dz, 1.0])
    affine[:3, 3] = (-20.0, -7.0, 3.0)
    return affine


def save_nifti(path: Path, zyx: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.ascontiguousarray(zyx.T), affine), path)
    return path


def open_and_predict(viewer, open_widget, qtbot, path: Path, bundle: Path):
    """File > Open the NIfTI, then Predict it with the bundle folder; returns the widget."""
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    widget = open_widget(viewer, "predict")
    widget["images"].value = [layer]
    widget["model"].value = BUNDLE_CHOICE
    widget["bundle"].value = bundle
    widget["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    return widget


def test_an_las_image_and_its_ras_labels_lie_on_one_another_and_save_back(make_napari_viewer, tmp_path,
                                                                          phantom) -> None:
    image, labels, spacing = phantom
    stored = save_nifti(tmp_path / "ct.nii.gz", image[..., ::-1], las_affine(spacing, image.shape))
    save_nifti(tmp_path / "ct_seg.nii.gz", labels, ras_affine(spacing, image.shape))
    viewer = make_napari_viewer()
    (ct,) = viewer.open(str(stored), plugin=PLUGIN)
    (seg,) = viewer.open(str(tmp_path / "ct_seg.nii.gz"), plugin=PLUGIN)
    assert isinstance(seg, napari.layers.Labels)
    # the same voxel of anatomy at the same place: data, scale and translate agree
    np.testing.assert_array_equal(ct.data, image)
    np.testing.assert_array_equal(seg.data, labels)
    np.testing.assert_allclose(ct.scale, seg.scale)
    np.testing.assert_allclose(ct.translate, seg.translate)
    # saved as NIfTI again: the file's own (LAS) array and affine
    viewer.layers.selection = {ct}
    viewer.layers.save(str(tmp_path / "saved.nii.gz"), selected=True, plugin=PLUGIN)
    saved, original = nib.load(tmp_path / "saved.nii.gz"), nib.load(stored)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), np.asarray(original.dataobj))
    np.testing.assert_allclose(saved.affine, original.affine, atol=1e-5)
    # a labels layer painted in napari (no metadata) and saved lies on the image in world space
    painted = viewer.add_labels(labels.copy(), name="painted", scale=ct.scale, translate=ct.translate)
    viewer.layers.selection = {painted}
    viewer.layers.save(str(tmp_path / "painted.nii.gz"), selected=True, plugin=PLUGIN)
    world = nib.as_closest_canonical(nib.load(tmp_path / "painted.nii.gz"))
    np.testing.assert_allclose(world.affine, ras_affine(spacing, image.shape), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(world.dataobj).T, labels)


def console_script() -> str:
    path = Path(sys.executable).with_name("napari-medml")
    return str(path) if path.exists() else shutil.which("napari-medml") or "napari-medml"


@pytest.mark.parametrize("codes", ["LPS", "PSL"])
def test_labels_saved_from_napari_as_tiff_score_against_their_nifti_file(make_napari_viewer, tmp_path, phantom,
                                                                           codes) -> None:
    """File > Open a labels file stored LPS (or permuted, PSL), File > Save the layer as .tif
    (napari's RAS order and origin), then `napari-medml evaluate` the copy against the file and
    the file against the copy: Dice 1 and a note (it scored Dice 0 in silence)."""
    image, labels, spacing = phantom
    ornt = nib.orientations
    to_codes = ornt.ornt_transform(ornt.axcodes2ornt(tuple("RAS")), ornt.axcodes2ornt(tuple(codes)))
    stored = ornt.apply_orientation(labels.T, to_codes)  # the RAS grid's voxels, stored in `codes` order
    ras = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    ras[:3, 3] = (12.0, -30.0, 4.0)
    affine = ras @ ornt.inv_ornt_aff(to_codes, labels.T.shape)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), affine), tmp_path / "lab.nii.gz")
    assert "".join(nib.aff2axcodes(affine)) == codes
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "lab.nii.gz"), plugin=PLUGIN)
    viewer.layers.selection = {layer}
    viewer.layers.save(str(tmp_path / "copy.tif"), selected=True, plugin=PLUGIN)
    for pred, truth in (("copy.tif", "lab.nii.gz"), ("lab.nii.gz", "copy.tif")):
        run = subprocess.run([console_script(), "evaluate", "--prediction", str(tmp_path / pred), "--labels",
                              str(tmp_path / truth)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        scores = json.loads(run.stdout)["classes"]
        assert {k: v["dice"] for k, v in scores.items()} == {k: 1.0 for k in scores} and scores
        assert "reoriented onto the grid of" in run.stderr and "copy.tif" in run.stderr
    assert nib.load(tmp_path / "lab.nii.gz").get_fdata().astype(np.uint8).tobytes() == \
        np.ascontiguousarray(stored).tobytes()  # the user's file is never changed


@pytest.fixture(scope="module")
def las_bundle(phantom, tmp_path_factory):
    """A small model trained on the LAS file's stored array (as `napari-medml train` on it
    would be), so its bundle says it learned the anatomy in LAS."""
    image, labels, spacing = phantom
    config = TrainConfig(
        data=DataConfig(patch_size=(16, 32, 32), batch_size=2, val_fraction=0.0),
        augment=AugmentConfig.none(), model=ModelConfig(channels=8, depth=3),
        optim=OptimConfig(epochs=1, steps_per_epoch=30, learning_rate=3e-3), device="cpu",
    )
    torch.set_num_threads(1)
    model = train(image[..., ::-1].copy(), labels[..., ::-1].copy(), config, spacing=spacing)
    model.provenance["orientation"] = "LAS"
    return model, model.save(tmp_path_factory.mktemp("bundle") / "las model")


def test_predict_and_finetune_put_the_layer_in_the_models_orientation(make_napari_viewer, open_widget, qtbot,
                                                                       tmp_path, phantom, las_bundle) -> None:
    image, labels, spacing = phantom
    model, bundle = las_bundle
    stored = image[..., ::-1]
    path = save_nifti(tmp_path / "ct.nii.gz", stored, las_affine(spacing, image.shape))
    viewer = make_napari_viewer()
    widget = open_and_predict(viewer, open_widget, qtbot, path, bundle)  # RAS voxel order in the viewer
    pred = viewer.layers["ct [prediction]"]
    # what the model predicts on the array it learned from, put on the layer's grid
    expected = model.predict(stored.copy(), spacing=spacing, config=widget.infer_config()).labels[..., ::-1]
    np.testing.assert_array_equal(pred.data, expected)
    # the model is not mirror-symmetric: the layer as it lies in the viewer gives other labels
    unoriented = model.predict(image, spacing=spacing, config=widget.infer_config()).labels
    assert np.mean(pred.data != unoriented) > 0.01
    # saved as NIfTI, the prediction has its image file's voxel order and affine (LAS)
    viewer.layers.selection = {pred}
    viewer.layers.save(str(tmp_path / "pred.nii.gz"), selected=True, plugin=PLUGIN)
    saved = nib.load(tmp_path / "pred.nii.gz")
    np.testing.assert_allclose(saved.affine, las_affine(spacing, image.shape), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(saved.dataobj).T, expected[..., ::-1])
    # fine-tuning learns the corrections in LAS as well, and the tuned model says so
    widget["corrected"].value = pred
    pred.paint((4, 10, 10), 1)  # one brush dab: a correction (a layer nobody painted in is refused)
    widget["ft_steps"].value = 2
    widget["finetune"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    tuned = session_for(viewer).models["las model"]
    assert tuned is not model and tuned.provenance["orientation"] == "LAS"
    assert viewer.layers["ct [prediction]"].data.shape == image.shape


def test_train_widget_records_the_layers_orientation(make_napari_viewer, open_widget, qtbot, tmp_path,
                                                      phantom) -> None:
    """The layer is RAS in the viewer: the bundle says so, and `napari-medml predict` on the
    LAS file then reorients it for the network."""
    image, labels, spacing = phantom
    save_nifti(tmp_path / "ct.nii.gz", image[..., ::-1], las_affine(spacing, image.shape))
    save_nifti(tmp_path / "ct_seg.nii.gz", labels[..., ::-1], las_affine(spacing, image.shape))
    viewer = make_napari_viewer()
    (ct,) = viewer.open(str(tmp_path / "ct.nii.gz"), plugin=PLUGIN)
    (seg,) = viewer.open(str(tmp_path / "ct_seg.nii.gz"), plugin=PLUGIN)
    widget = open_widget(viewer, "train")
    widget["images"].value, widget["labels"].value = [ct], seg
    widget["channels"].value, widget["depth"].value = 4, 2
    widget["patch"].value = "16, 32, 32"
    widget["epochs"].value, widget["steps"].value = 1, 2
    widget["bundle"].value = tmp_path / "bundle"
    widget["start"].changed.emit(True)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=120000)
    assert session_for(viewer).models["ct model"].provenance["orientation"] == "RAS"
    desc = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert desc["provenance"]["orientation"] == "RAS"
    shutil.rmtree(tmp_path / "bundle")


def test_an_instance_model_from_another_orientation_is_refused_with_a_fix_that_works(
        make_napari_viewer, open_widget, qtbot, notes, tmp_path, phantom) -> None:
    """Instance maps stay on the layer's grid (post-processing re-runs on them), so the layer is
    not reoriented: one line names the command that does, and that command predicts."""
    import napari_medml
    from napari_medml.cli import main

    image, labels, spacing = phantom
    config = TrainConfig(task="instances", data=DataConfig(patch_size=(16, 32, 32), batch_size=2, val_fraction=0.0),
                         augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=3), device="cpu")
    model = napari_medml.train(image[..., ::-1].copy(), labels[..., ::-1].copy(), config, spacing=spacing)
    model.provenance["orientation"] = "LAS"
    bundle = model.save(tmp_path / "objects model")
    path = save_nifti(tmp_path / "ct.nii.gz", image[..., ::-1], las_affine(spacing, image.shape))
    viewer = make_napari_viewer()
    open_and_predict(viewer, open_widget, qtbot, path, bundle)
    messages = [str(n.message) for n in notes]
    assert any("layer 'ct' is stored in orientation RAS but the model was trained in LAS: predict it with "
               "`napari-medml predict`" in m for m in messages), messages
    assert "ct [instances]" not in viewer.layers and [layer.name for layer in viewer.layers] == ["ct"]
    assert main(["predict", "--model", str(bundle), "--image", str(path), "--out", str(tmp_path / "objects.nii.gz"),
                 "--device", "cpu"]) == 0
    assert nib.load(tmp_path / "objects.nii.gz").shape == image.T.shape


def test_a_prediction_saved_from_napari_keeps_its_images_file_details(make_napari_viewer, open_widget, qtbot,
                                                                      tmp_path, phantom) -> None:
    """A one-slice NIfTI (X, Y, 1), 3 mm thick, sform and qform code 1, in mm: Predict with a
    2D model, then File > Save the prediction: the file has the image file's shape, voxel
    size, unit and codes, as `napari-medml predict` writes it (it came back (X, Y), without
    the slice's thickness, its unit 'unknown' and its codes 2/0)."""
    image, labels, _ = phantom
    config = TrainConfig(data=DataConfig(spatial_dims=2, patch_size=(32, 32), batch_size=2, val_fraction=0.0),
                         augment=AugmentConfig.none(), model=ModelConfig(channels=4, depth=2),
                         optim=OptimConfig(epochs=1, steps_per_epoch=2), device="cpu")
    bundle = train(image[8], labels[8], config).save(tmp_path / "slice model")
    img = nib.Nifti1Image(np.ascontiguousarray(image[8].T[..., None]), np.diag([0.5, 0.5, 3.0, 1.0]))
    img.set_sform(img.affine, code=1)
    img.set_qform(img.affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    nib.save(img, tmp_path / "slice.nii.gz")
    viewer = make_napari_viewer()
    from napari.utils.notifications import notification_manager

    said: list[str] = []
    notification_manager.notification_ready.connect(lambda n: said.append(str(n.message)))
    open_and_predict(viewer, open_widget, qtbot, tmp_path / "slice.nii.gz", bundle)
    pred = viewer.layers["slice [prediction]"]
    from napari_medml.layer_data import _add_image_takes_axis_labels

    if _add_image_takes_axis_labels():  # napari >= 0.5.1: the scale bar reads mm on the image and its result
        assert tuple(map(str, viewer.layers["slice"].units)) == tuple(map(str, pred.units)) == ("millimeter",) * 2
        assert not [m for m in said if "units" in m]  # the result was added in mm: napari drew it at once
    viewer.layers.selection = {pred}
    viewer.layers.save(str(tmp_path / "pred.nii.gz"), selected=True, plugin=PLUGIN)
    saved = nib.load(tmp_path / "pred.nii.gz")
    assert saved.shape == img.shape == (64, 64, 1)
    assert saved.header.get_zooms() == pytest.approx((0.5, 0.5, 3.0))
    assert saved.header.get_xyzt_units()[0] == "mm"
    assert (int(saved.header["sform_code"]), int(saved.header["qform_code"])) == (1, 1)
    np.testing.assert_allclose(saved.affine, img.affine)


def test_predict_widget_refuses_a_2d_model_on_one_sagittal_slice(make_napari_viewer, open_widget, qtbot, notes,
                                                                 tmp_path, constant_model):
    """Trial 49: a NIfTI one voxel thick along X (1 x Y x Z on disk) was predicted as 64 one-pixel strips,
    while `napari-medml predict` refused it."""
    from napari.utils.notifications import NotificationSeverity

    bundle = constant_model(2, (0, 1)).save(tmp_path / "m2d")
    sagittal = np.random.default_rng(0).standard_normal((1, 64, 48)).astype(np.float32)
    nib.save(nib.Nifti1Image(sagittal, np.eye(4)), tmp_path / "sag.nii.gz")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "sag.nii.gz"), plugin=PLUGIN)
    before = np.asarray(layer.data).copy()
    predict = open_widget(viewer, "predict")
    predict["images"].value = [layer]
    predict["model"].value = BUNDLE_CHOICE
    predict["bundle"].value = bundle
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=60000)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert len(errors) == 1 and "layer 'sag' (axes ZYX, shape (48, 64, 1)) is one slice along X" in errors[0], errors
    assert "1-voxel-wide strips; use a 3D network" in errors[0]
    assert "sag [prediction]" not in viewer.layers
    np.testing.assert_array_equal(np.asarray(layer.data), before)
    thin = viewer.add_image(np.zeros((12, 1, 20), np.float32), name="thin")  # review 49: an unnamed leading axis
    predict["images"].value = [thin]
    predict["predict"].changed.emit(True)
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=60000)
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert len(errors) == 2 and "layer 'thin' (axes ZYX, shape (12, 1, 20)) is one slice along Y" in errors[1], errors
    assert "thin [prediction]" not in viewer.layers
