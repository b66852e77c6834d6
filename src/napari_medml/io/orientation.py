"""A volume's orientation: the order and direction of its voxel axes in world space.

- :func:`to_canonical` / :func:`to_stored`: a NIfTI volume in RAS+ voxel order for napari
  (which places a layer by scale and translate alone) and back to its file's order;
- :func:`orient_as` / :func:`orient_array`: an image in the orientation a model was trained
  in, with the way back for the outputs.

Flips and axis swaps only (nibabel's ``io_orientation``, ``ornt_transform``,
``apply_orientation``, ``inv_ornt_aff``), never interpolation, so label ids stay exact.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from napari_medml.io.geometry import axis_codes, grid_affine, oriented_in_3d, reorient, shown_in_ras, spatial_axes
from napari_medml.io.volume import Volume

__all__ = ["STORED_ORIENTATION", "Oriented", "cut_affine", "file_orientation", "orient_array", "orient_as",
           "orientation_of", "stored_order_note", "to_canonical", "to_orientation", "to_stored"]

STORED_ORIENTATION = "stored_orientation"  # Volume.meta key: a file's own orientation, see to_canonical


def file_orientation(path: Any, spatial_dims: int) -> str | None:
    """The orientation letters (e.g. ``"RAS"``) of a NIfTI file's voxel axes, read from its
    header alone; None for 2D, for files without an affine (TIFF, NumPy) and for a NIfTI whose
    sform and qform codes are 0 (no orientation: :func:`~napari_medml.io.nifti.read_nifti`)."""
    from pathlib import Path

    lower = str(path).lower()
    if spatial_dims != 3 or not (lower.endswith(".nii") or lower.endswith(".nii.gz")):
        return None
    from napari_medml.io.nifti import load_nifti  # by content: a .nii.gz that is not gzipped reads too

    img = load_nifti(Path(path))
    if int(img.header["sform_code"]) == 0 and int(img.header["qform_code"]) == 0:  # nibabel's affine is made up
        return None
    return axis_codes(np.asarray(img.affine, dtype=np.float64))


def orientation_of(affine: Any, spatial_dims: int) -> str | None:
    """The orientation letters (e.g. ``"RAS"``) of a 3D grid's voxel axes from its affine
    (NIfTI order); None for 2D, and without an affine (TIFF, NumPy, a layer not read from
    a NIfTI file). What a model trained on the grid records as its ``orientation``."""
    if spatial_dims != 3 or affine is None:
        return None
    return axis_codes(cut_affine(affine, 3))


def stored_order_note(vol: Volume, paths: Any) -> str | None:
    """One line for outputs written from a NIfTI volume not stored in RAS+ order to files that
    hold no affine (TIFF, NumPy, Zarr), or None when nothing is lost.

    Those files keep the voxels in the NIfTI file's stored order, so their arrays lie on the
    file's (what ``evaluate`` and other tools compare), with its spacing and origin but not the
    direction of its axes: napari, which shows NIfTI files in RAS+ order (:func:`to_canonical`),
    shows them flipped or turned against the image.

    Parameters
    ----------
    vol : Volume
        The input the outputs were written like.
    paths : iterable of str or Path
        The written files; only those of a type without an affine are named.
    """
    # by suffix: the written files include tables (.csv)
    bare = [str(p) for p in paths if str(p).lower().rstrip("/").endswith((".tif", ".tiff", ".npy", ".zarr"))]
    if not bare or not shown_in_ras(vol):  # a 2D NIfTI, say, napari shows as stored
        return None
    codes = axis_codes(np.asarray(vol.affine, dtype=np.float64))
    them = "them" if len(bare) > 1 else "it"
    return (f"{', '.join(bare)}: the voxels are in the order '{vol.name}' stores them ({codes}), but the file type "
            f"holds no orientation, so napari shows {them} flipped against the image; write .nii.gz to keep it")


def to_canonical(vol: Volume) -> Volume:
    """A 3D NIfTI volume with its voxel axes flipped/permuted into RAS+ order (nibabel's
    ``as_closest_canonical``, on a :class:`Volume`), so that any two files of the same
    anatomy lie on one another when placed by spacing and origin alone (napari's
    ``scale`` and ``translate``), whatever orientation each was stored in.

    Parameters
    ----------
    vol : Volume
        Data ``(..., Z, Y, X)`` with a 4x4 affine; volumes without an affine or with fewer
        than 3 spatial axes come back unchanged.

    Returns
    -------
    Volume
        Same world space: the data flipped/permuted (never interpolated), spacing and
        origin of the new grid, and the affine of the new grid (an oblique affine stays
        oblique, its axes in the closest RAS order). ``meta["stored_orientation"]``
        records the file's own letters when they were not RAS, for :func:`to_stored`.
    """
    if vol.affine is None:
        return vol
    moved = to_orientation(vol, "RAS")
    if moved is vol:
        return vol
    return replace(moved, meta={**vol.meta, STORED_ORIENTATION: axis_codes(np.asarray(vol.affine))})


def to_stored(vol: Volume) -> Volume:
    """Undo :func:`to_canonical`: a volume put back in the orientation its file was stored in
    (``meta["stored_orientation"]``), so saving what was read writes the same array; others
    come back unchanged."""
    codes = vol.meta.get(STORED_ORIENTATION)
    if not codes:
        return vol
    meta = {k: v for k, v in vol.meta.items() if k != STORED_ORIENTATION}
    return replace(to_orientation(vol, str(codes)), meta=meta)


def to_orientation(vol: Volume, codes: str) -> Volume:
    """A 3D volume with its voxel axes flipped/permuted into the orientation ``codes`` (e.g.
    ``"RAS"``), in the same world space: data, spacing, origin and affine of the new grid.

    Volumes without a 4x4 affine, without three spatial axes ``ZYX`` last, or already in
    that orientation come back as they are (the same object).
    """
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    if not oriented_in_3d(vol):  # a 2D NIfTI, a slice over time (X, Y, 1, T)
        return vol
    first, stop = spatial_axes(vol, 3)
    affine = np.asarray(vol.affine, dtype=np.float64)
    here = io_orientation(affine)
    target = axcodes2ornt(tuple(codes))
    if np.array_equal(here, target):
        return vol
    transform = ornt_transform(here, target)
    shape = vol.data.shape[first:stop][::-1]  # NIfTI order (X, Y, Z)
    new_affine = affine @ inv_ornt_aff(transform, shape)
    data = reorient(vol.data, transform, first, stop)
    spacing = list(vol.spacing)
    spacing[first:stop] = _moved_spacing(spacing[first:stop], transform)
    origin = list(vol.origin)
    origin[first:stop] = [float(o) for o in new_affine[:3, 3][::-1]]
    return replace(vol, data=data, spacing=tuple(spacing), origin=tuple(origin), affine=new_affine)


class Oriented:
    """A volume's data put in another orientation, and the way back (see :func:`orient_as`).

    Attributes
    ----------
    data : np.ndarray
        The volume's data with its spatial axes flipped/permuted into the orientation asked.
    spacing : tuple of float
        Voxel size along the new spatial axes (napari order).
    note : str or None
        One line when the data were reoriented.
    """

    def __init__(self, data: np.ndarray, spacing: tuple[float, ...], back: np.ndarray | None,
                 note: str | None) -> None:
        self.data, self.spacing, self.note = data, spacing, note
        self._back = back

    def back(self, array: np.ndarray) -> np.ndarray:
        """Put an array computed on ``data`` (its last spatial axes the same) back on the
        volume's own grid; leading axes (classes, time) travel along."""
        if self._back is None:
            return array
        n = len(self.spacing)
        return reorient(array, self._back, array.ndim - n, array.ndim)


def orient_as(vol: Volume, codes: str | None, spatial_dims: int) -> Oriented:
    """Flip/permute a volume's spatial axes into the orientation ``codes`` (e.g. the one a
    model was trained in), so the network sees anatomy the way it learned it.

    Parameters
    ----------
    vol : Volume
        Its affine gives the current orientation; without one (TIFF, NumPy) nothing moves.
    codes : str or None
        Target orientation letters, one per spatial axis in NIfTI order (``"RAS"``).
    spatial_dims : int
        Number of spatial axes (the last ones, before RGB's colour axis).

    Returns
    -------
    Oriented
        The data and spacing in the target orientation, and ``back`` to return results.
    """
    first, stop = spatial_axes(vol, spatial_dims)
    spacing = tuple(float(s) for s in vol.spacing[first:stop])
    if vol.affine is None:
        return Oriented(vol.data, spacing, None, None)
    return orient_array(vol.data, spacing, grid_affine(vol, stop - first), codes)


def cut_affine(affine: Any, n: int) -> np.ndarray:
    """The ``(n + 1, n + 1)`` affine of the first ``n`` voxel axes of an affine (a 4x4 affine of
    a 2D grid cut to its first two axes); float64."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape[0] != n + 1:
        keep = [*range(n), affine.shape[0] - 1]
        affine = affine[np.ix_(keep, keep)]
    return affine


def orient_array(data: Any, spacing: tuple[float, ...], affine: Any, codes: str | None) -> Oriented:
    """Flip/permute the last spatial axes of ``data`` from the orientation of ``affine``
    into the orientation ``codes``; :func:`orient_as` for an array (e.g. a napari layer's).

    Parameters
    ----------
    data : np.ndarray
        ``(..., Z, Y, X)``: the last ``len(spacing)`` axes are spatial, in napari order.
    spacing : tuple of float
        Voxel size of those axes, napari order.
    affine : array-like or None
        The voxel-to-world affine of those axes in NIfTI order, ``(n + 1, n + 1)``; a 4x4
        affine of a 2D grid is cut to its first two axes. None: nothing moves.
    codes : str or None
        Target orientation letters in NIfTI order (``"RAS"``); None: nothing moves.

    Returns
    -------
    Oriented
    """
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    n = len(spacing)
    spacing = tuple(float(s) for s in spacing)
    if codes and affine is None and len(codes) == n:
        # trial 42: a NIfTI with no orientation was taken as stored without a word (Dice 0.81 -> 0.74)
        return Oriented(data, spacing, None, (
            f"image has no orientation (a file without an affine, or a NIfTI whose sform and qform codes are 0): "
            f"taken as stored, while the model was trained on images in {codes} voxel order; if its axes run "
            "otherwise, the prediction suffers: give it its orientation (save it as NIfTI with its affine)"))
    if not codes or affine is None or len(codes) != n:
        return Oriented(data, spacing, None, None)
    affine = cut_affine(affine, n)
    here = io_orientation(affine)
    target = axcodes2ornt(tuple(codes))
    if np.array_equal(here, target):
        return Oriented(data, spacing, None, None)
    transform = ornt_transform(here, target)
    out = reorient(data, transform, data.ndim - n, data.ndim)
    note = (f"image is stored in orientation {axis_codes(affine)}, the model was trained in "
            f"{codes}: reoriented for the network and back for the outputs (same world space)")
    return Oriented(out, _moved_spacing(spacing, transform), ornt_transform(target, here), note)


def _moved_spacing(spacing: Any, transform: np.ndarray) -> tuple[float, ...]:
    """Voxel sizes (napari order) after a nibabel orientation transform permuted the axes."""
    nifti = list(spacing)[::-1]
    moved = [0.0] * len(nifti)
    for axis, (to, _) in enumerate(transform):
        moved[int(to)] = float(nifti[axis])
    return tuple(moved[::-1])
