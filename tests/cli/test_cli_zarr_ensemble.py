"""``napari-medml predict ... --out pred.zarr`` through the installed console script: an
ensemble bundle block by block (as its in-memory prediction), resuming only a run of the
same image, and float32 probabilities as ``--help`` says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("zarr")

from napari_medml.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from napari_medml.io import Volume, read_volume, write_volume  # noqa: E402
from napari_medml.nn.segmentation import build_network  # noqa: E402
from napari_medml.segmentation.ensemble import EnsembleModel  # noqa: E402
from napari_medml.segmentation.model import Model  # noqa: E402

REFUSED = "do(es) not hold an interrupted run of this prediction"


def run(*argv: object, tmp: Path) -> subprocess.CompletedProcess:
    path = Path(sys.executable).with_name("napari-medml")
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(path) if path.exists() else "napari-medml", *map(str, argv)], capture_output=True,
                          text=True, env=env, timeout=600)  # fmt: skip


def _model(seed: int, mean: float) -> Model:
    torch.manual_seed(seed)
    cfg = TrainConfig(data=DataConfig(spatial_dims=3), model=ModelConfig(channels=4, depth=2))
    net = build_network(cfg.model, 3, 1, 3, patch_size=(16, 16, 16), spacing=(1.0, 1.0, 1.0))
    return Model(net, cfg, (0, 2, 5), 1, 3, (16, 16, 16), (1.0, 1.0, 1.0),
                 {"method": "zscore", "channels": [{"mean": mean, "std": 1.5}]})  # fmt: skip


def _image(flip: bool = False) -> np.ndarray:
    z, y, x = np.mgrid[:24, :40, :40]
    image = (np.sin(z / 4.0) + np.cos(y / 5.0) * np.sin(x / 3.0)).astype(np.float32)
    return np.ascontiguousarray(image[:, ::-1, ::-1]) if flip else image


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("zarr-ensemble")
    # members differ in weights and in normalization: each block must use each member's own
    EnsembleModel([_model(0, 0.1), _model(1, -0.3)]).save(folder / "ens")
    _model(0, 0.1).save(folder / "one")
    write_volume(folder / "a.nii.gz", Volume(_image(), (2.0, 1.0, 1.0), (3.0, 0.0, 0.0), axes="ZYX"))
    write_volume(folder / "b.nii.gz", Volume(_image(flip=True), (2.0, 1.0, 1.0), (3.0, 0.0, 0.0), axes="ZYX"))
    tmp = folder / "tmp"
    tmp.mkdir()
    return {"folder": folder, "tmp": tmp}


def test_an_ensemble_predicts_into_zarr_as_into_nifti(files):
    f, tmp = files["folder"], files["tmp"]
    common = ["predict", "--model", f / "ens", "--image", f / "a.nii.gz", "--device", "cpu"]
    nifti = run(*common, "--out", f / "e.nii.gz", "--probabilities", f / "ep.nii.gz", "--uncertainty",
                f / "eu.nii.gz", tmp=tmp)
    assert nifti.returncode == 0, nifti.stderr
    blocks = run(*common, "--out", f / "e.zarr", "--probabilities", f / "ep.zarr", "--uncertainty", f / "eu.zarr",
                 "--block-memory", "16", tmp=tmp)  # fmt: skip
    assert blocks.returncode == 0 and "Traceback" not in blocks.stderr, blocks.stderr
    labels = read_volume(f / "e.zarr")
    assert labels.is_labels and labels.spacing == (2.0, 1.0, 1.0)
    np.testing.assert_array_equal(np.asarray(labels.data), read_volume(f / "e.nii.gz").data)
    assert set(np.unique(np.asarray(labels.data))) <= {0, 2, 5}
    probs = np.asarray(read_volume(f / "ep.zarr").data)
    want = read_volume(f / "ep.nii.gz")
    assert want.axes == "CZYX"
    want = want.data
    assert probs.dtype == np.float16 and probs.shape == want.shape == (3, 24, 40, 40)
    np.testing.assert_array_equal(probs.astype(np.float32), want)  # the same float16 mean, float32 in NIfTI
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-3)
    uncertainty = np.asarray(read_volume(f / "eu.zarr").data)
    np.testing.assert_allclose(uncertainty, read_volume(f / "eu.nii.gz").data, atol=1e-5)
    assert uncertainty.min() >= 0 and uncertainty.max() > 0  # the members disagree somewhere


def test_a_store_of_another_image_is_refused_and_the_same_image_resumes(files):
    f, tmp = files["folder"], files["tmp"]
    common = ["predict", "--model", f / "one", "--device", "cpu"]
    first = run(*common, "--image", f / "a.nii.gz", "--out", f / "pred.zarr", tmp=tmp)
    assert first.returncode == 0, first.stderr
    a_labels = np.asarray(read_volume(f / "pred.zarr").data)
    other = run(*common, "--image", f / "b.nii.gz", "--out", f / "pred.zarr", tmp=tmp)
    assert other.returncode != 0 and REFUSED in other.stderr and "Traceback" not in other.stderr, other.stderr
    assert "remove it or choose another output name" in other.stderr.strip().splitlines()[-1]
    np.testing.assert_array_equal(np.asarray(read_volume(f / "pred.zarr").data), a_labels)  # left untouched
    again = run(*common, "--image", f / "a.nii.gz", "--out", f / "pred.zarr", tmp=tmp)
    assert again.returncode == 0 and "resumed: 1 of 1 block(s) were already done, 0 computed now" in again.stderr
    # B into its own store: B's labels, not A's
    fresh = run(*common, "--image", f / "b.nii.gz", "--out", f / "b.zarr", tmp=tmp)
    assert fresh.returncode == 0, fresh.stderr
    b_labels = np.asarray(read_volume(f / "b.zarr").data)
    assert (b_labels != a_labels).any()
    # A edited in place (B's values under A's name): another image
    write_volume(f / "a2.nii.gz", Volume(_image(), (2.0, 1.0, 1.0), (3.0, 0.0, 0.0), axes="ZYX"))
    assert run(*common, "--image", f / "a2.nii.gz", "--out", f / "a2.zarr", tmp=tmp).returncode == 0
    os.replace(f / "b.nii.gz", f / "a2.nii.gz")
    edited = run(*common, "--image", f / "a2.nii.gz", "--out", f / "a2.zarr", tmp=tmp)
    assert edited.returncode != 0 and REFUSED in edited.stderr, edited.stderr
    # an OME-Zarr input: the same store resumes, another store of the same shape is refused
    write_volume(f / "a.ome.zarr", Volume(_image(), (2.0, 1.0, 1.0), (3.0, 0.0, 0.0), axes="ZYX"))
    write_volume(f / "c.ome.zarr", Volume(_image(flip=True), (2.0, 1.0, 1.0), (3.0, 0.0, 0.0), axes="ZYX"))
    assert run(*common, "--image", f / "a.ome.zarr", "--out", f / "z.zarr", tmp=tmp).returncode == 0
    assert "resumed: 1 of 1" in run(*common, "--image", f / "a.ome.zarr", "--out", f / "z.zarr", tmp=tmp).stderr
    refused = run(*common, "--image", f / "c.ome.zarr", "--out", f / "z.zarr", tmp=tmp)
    assert refused.returncode != 0 and REFUSED in refused.stderr, refused.stderr


def test_help_and_the_probabilities_agree_on_their_dtype(files):
    f, tmp = files["folder"], files["tmp"]
    helped = run("predict", "--help", tmp=tmp)
    text = " ".join(helped.stdout.split())
    assert ("--probabilities OUT also write class probabilities (float32 files holding float16 values" in text
            and "float16 in a .zarr store" in text), text
    common = ["predict", "--model", f / "one", "--image", f / "a.nii.gz", "--device", "cpu"]
    done = run(*common, "--out", f / "h.zarr", "--probabilities", f / "hp.zarr", tmp=tmp)
    assert done.returncode == 0 and "hp.zarr (float16)" in done.stderr, done.stderr
    assert run(*common, "--out", f / "h.npy", "--probabilities", f / "hp.npy", tmp=tmp).returncode == 0
    import zarr

    stored = zarr.open_group(str(f / "hp.zarr"), mode="r")["0"]
    assert stored.dtype == np.float16 and np.load(f / "hp.npy").dtype == np.float32
    np.testing.assert_array_equal(np.asarray(stored).astype(np.float32), np.load(f / "hp.npy"))
