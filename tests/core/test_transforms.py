"""Augmentation: labels stay aligned and integer, previews are reproducible."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_medml.config import AugmentConfig, AugmentSpec
from napari_medml.errors import InputError
from napari_medml.augment import AUGMENT_DESCRIPTIONS, augmentation_transforms, preview

FIELDS = [f.name for f in dataclasses.fields(AugmentConfig)]
SPATIAL = ["flip", "rotate90", "affine", "elastic"]


def only(name: str, prob: float = 1.0, strength: float = 1.0) -> AugmentConfig:
    """A config with one transform on and all others off."""
    return dataclasses.replace(AugmentConfig.none(), **{name: AugmentSpec(prob, strength)})


def everything() -> AugmentConfig:
    return AugmentConfig(**{f: AugmentSpec(1.0, 1.0) for f in FIELDS})


def blobs(spatial_dims: int) -> np.ndarray:
    """Two label ids (3 and 7, non-contiguous) on background, off-centre."""
    shape = (40, 48) if spatial_dims == 2 else (16, 24, 28)
    lab = np.zeros(shape, dtype=np.uint16)
    if spatial_dims == 2:
        lab[6:22, 8:30] = 3
        lab[26:36, 30:44] = 7
    else:
        lab[3:10, 4:14, 5:16] = 3
        lab[8:14, 14:22, 16:25] = 7
    return lab


def test_import_is_cheap():
    code = (
        "import sys, napari_medml.augment;"
        "print(' '.join(m for m in ('torch', 'monai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_descriptions_cover_every_field():
    assert set(AUGMENT_DESCRIPTIONS) == set(FIELDS)
    assert all(isinstance(v, str) and v for v in AUGMENT_DESCRIPTIONS.values())


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", SPATIAL)
def test_spatial_transforms_keep_labels_aligned(name, spatial_dims):
    lab = blobs(spatial_dims)
    img = lab.astype(np.float32) * 10.0
    compose = augmentation_transforms(only(name), spatial_dims, seed=1)
    changed = False
    for _ in range(3):
        out = compose({"image": img[None], "label": lab[None]})
        oi, ol = out["image"][0].numpy(), out["label"][0].numpy()
        assert out["image"].dtype == torch.float32 and out["label"].dtype == torch.int64
        assert set(np.unique(ol)) <= {0, 3, 7}
        # Nearest class of the interpolated image agrees with the labels.
        ids = np.array([0, 3, 7])
        nearest = ids[np.argmin(np.abs(oi[..., None] - 10.0 * ids), axis=-1)]
        agree = np.mean(nearest == ol)
        if name in ("flip", "rotate90"):
            assert agree == 1.0
        else:
            assert agree > 0.97, agree
        changed |= not np.array_equal(ol, lab)
    assert changed, f"{name} never changed the labels"


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_all_transforms_together(spatial_dims):
    lab = blobs(spatial_dims)
    img = lab.astype(np.float32)
    compose = augmentation_transforms(everything(), spatial_dims, seed=0, spatial_shape=lab.shape)
    out = compose({"image": torch.from_numpy(img[None]), "label": torch.from_numpy(lab[None])})
    assert type(out["image"]) is torch.Tensor and type(out["label"]) is torch.Tensor
    assert out["image"].shape == (1, *lab.shape)
    assert out["label"].shape == (1, *lab.shape)
    assert set(np.unique(out["label"].numpy())) <= {0, 3, 7}


def test_intensity_transforms_leave_labels_alone():
    lab = blobs(2)
    for name in ["noise", "smooth", "contrast", "intensity", "bias_field"]:
        compose = augmentation_transforms(only(name), 2, seed=0)
        out = compose({"image": lab[None] * 1.0, "label": lab[None]})
        np.testing.assert_array_equal(out["label"][0].numpy(), lab)
        assert not np.allclose(out["image"][0].numpy(), lab), name


def test_prob_zero_is_identity():
    compose = augmentation_transforms(AugmentConfig.none(), 3, seed=0)
    names = [type(t).__name__ for t in compose.transforms]
    assert all(n == "EnsureTyped" for n in names), names
    lab = blobs(3)
    img = np.random.default_rng(0).normal(size=(2, *lab.shape)).astype(np.float32)
    out = compose({"image": img, "label": lab[None]})
    np.testing.assert_array_equal(out["image"].numpy(), img)
    np.testing.assert_array_equal(out["label"][0].numpy(), lab)
    images, labels = preview(img, lab, AugmentConfig.none(), n=2, channel_axis=0)
    np.testing.assert_allclose(images[1], img, atol=1e-5)
    np.testing.assert_array_equal(labels[0], lab)


def test_rotate90_keeps_non_square_shape():
    lab = blobs(2)  # 40 x 48
    images, labels = preview(lab * 1.0, lab, only("rotate90"), n=6, seed=3)
    assert images.shape == (6, 40, 48)
    assert any(not np.array_equal(l, lab) for l in labels)


def test_preview_is_seeded():
    lab = blobs(2)
    img = lab * 1.0
    a = preview(img, lab, AugmentConfig(), n=4, seed=5)
    b = preview(img, lab, AugmentConfig(), n=4, seed=5)
    c = preview(img, lab, AugmentConfig(), n=4, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # The samples differ from one another.
    assert not np.array_equal(a[0][0], a[0][1])


@pytest.mark.parametrize(
    ("spatial_dims", "channel_axis", "shape"),
    [
        (2, None, (40, 48)),
        (3, None, (16, 24, 28)),
        (2, 0, (2, 40, 48)),
        (2, -1, (40, 48, 3)),
        (3, 1, (16, 2, 24, 28)),
    ],
)
def test_preview_shapes_dtypes_and_no_mutation(spatial_dims, channel_axis, shape):
    lab = blobs(spatial_dims).astype(np.int32)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 1000, size=shape).astype(np.int16)
    img_before, lab_before = img.copy(), lab.copy()
    images, labels = preview(img, lab, everything(), n=3, channel_axis=channel_axis)
    assert images.shape == (3, *shape) and images.dtype == np.float32
    assert labels.shape == (3, *lab.shape) and labels.dtype == np.int32
    np.testing.assert_array_equal(img, img_before)
    np.testing.assert_array_equal(lab, lab_before)


def test_preview_keeps_input_units():
    lab = blobs(2)
    img = 1000.0 + lab * 50.0
    images, _ = preview(img, lab, only("flip"), n=2)
    assert images.min() >= 999.0 and images.max() <= 1351.0


def test_preview_slicewise_2d_on_volume():
    lab = blobs(3)
    images, labels = preview(lab * 1.0, lab, only("flip"), n=2, spatial_dims=2)
    assert images.shape == (2, *lab.shape) and labels.shape == (2, *lab.shape)
    # Z is never flipped in 2D: each slice keeps its own pixel count.
    for z in range(lab.shape[0]):
        assert (labels[0, z] > 0).sum() == (lab[z] > 0).sum()


def test_preview_errors():
    lab = blobs(2)
    with pytest.raises(InputError, match=r"\(40, 48\).*\(40, 40\)|\(40, 40\).*\(40, 48\)"):
        preview(np.zeros((40, 40)), lab, AugmentConfig())
    with pytest.raises(InputError, match="integer"):
        preview(lab * 1.0, lab * 1.0, AugmentConfig())
    with pytest.raises(InputError, match="spatial_dims"):
        preview(lab * 1.0, lab, AugmentConfig(), spatial_dims=3)
    with pytest.raises(InputError, match="channel_axis"):
        preview(lab * 1.0, lab, AugmentConfig(), channel_axis=4)


def test_anisotropic_spacing_limits_out_of_plane_rotation():
    def ranges(spacing):
        compose = augmentation_transforms(only("affine"), 3, spacing=spacing)
        affine = next(t for t in compose.transforms if type(t).__name__ == "RandAffined")
        return affine.rand_affine.rand_affine_grid.rotate_range

    iso, aniso = ranges((1.0, 1.0, 1.0)), ranges((5.0, 0.8, 0.8))
    assert iso[0] == aniso[0] == pytest.approx(np.radians(15))
    assert iso[1] == pytest.approx(np.radians(15)) and aniso[1] < iso[1] / 2
