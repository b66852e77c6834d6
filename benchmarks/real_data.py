"""Real images with ground truth that ship inside common Python packages (no downloads).

Benchmarks measure quality on these as well as on our phantoms. The packages are
installed without their dependencies, only for their data files, and are never
imported (``stardist`` would pull in TensorFlow):

    .venv/bin/python -m pip install --no-deps -r benchmarks/requirements-real-data.txt

- :func:`nuclei_2d`: StarDist's 2D test image, fluorescence nuclei from the Data Science
  Bowl 2018 training set (512 x 512, 125 nuclei with instance labels).
- :func:`nuclei_3d`: StarDist's 3D test volume of fluorescence nuclei
  (31 x 61 x 57, 51 nuclei with instance labels).
- :func:`brain_mri`: the MNI ICBM152 2009a symmetric T1 template shipped with nilearn
  (197 x 233 x 189 at 1 mm) with grey and white matter from its probability maps
  (class 1 grey matter, 2 white matter, 0 elsewhere; a voxel takes the tissue whose
  probability is highest and at least 0.5).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["RealImage", "available", "brain_mri", "nuclei_2d", "nuclei_3d"]

INSTALL = "python -m pip install --no-deps -r benchmarks/requirements-real-data.txt"


class RealImage(NamedTuple):
    """An image, its labels (same shape) and the voxel spacing in napari order."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package '{name}' is not installed; for the real images run: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


def nuclei_2d() -> RealImage:
    """2D fluorescence nuclei with instance labels (uint16, (512, 512))."""
    import tifffile

    folder = _package_dir("stardist") / "data" / "images"
    return RealImage("nuclei_2d", tifffile.imread(folder / "img2d.tif"),
                     tifffile.imread(folder / "mask2d.tif"), (1.0, 1.0))


def nuclei_3d() -> RealImage:
    """3D fluorescence nuclei with instance labels (uint16, (31, 61, 57))."""
    import tifffile

    folder = _package_dir("stardist") / "data" / "images"
    return RealImage("nuclei_3d", tifffile.imread(folder / "img3d.tif"),
                     tifffile.imread(folder / "mask3d.tif"), (1.0, 1.0, 1.0))


def brain_mri() -> RealImage:
    """T1 brain MRI (float32, (Z, Y, X) = (189, 233, 197), 1 mm) with grey/white matter labels."""
    import nibabel as nib

    folder = _package_dir("nilearn") / "datasets" / "data"

    def load(kind: str) -> np.ndarray:
        img = nib.load(folder / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz")
        return np.asarray(img.dataobj, dtype=np.float32).transpose(2, 1, 0)  # (x, y, z) -> (z, y, x)

    t1, gm, wm = load("t1"), load("gm") / 255.0, load("wm") / 255.0
    labels = np.zeros(t1.shape, np.uint8)
    labels[(gm >= 0.5) & (gm >= wm)] = 1
    labels[(wm >= 0.5) & (wm > gm)] = 2
    return RealImage("brain_mri", t1, labels, (1.0, 1.0, 1.0))


def available() -> list[str]:
    """Names of the real images that can be loaded here."""
    names = []
    for name, package in (("nuclei_2d", "stardist"), ("nuclei_3d", "stardist"), ("brain_mri", "nilearn")):
        if importlib.util.find_spec(package) is not None:
            names.append(name)
    return names
