"""Where two images meet, compare their voxel grids in world space.

Image and labels, several channel files, a prediction and its ground truth: the arrays
are only compared voxel for voxel when their grids agree. :func:`align_to` puts one
:class:`~napari_medml.io.Volume` on another's grid:

- the same grid (shape, spacing, origin, direction) passes unchanged;
- the same world grid stored in another orientation (an axis flipped or permuted, with
  the affine saying so, e.g. LAS vs RAS) is reoriented with nibabel's orientation tools
  (``io_orientation``, ``ornt_transform``, ``apply_orientation``): a permutation and
  flips, never interpolation, so label ids stay exact;
- anything else (another spacing, origin or shape; an oblique rotation) is refused with
  both files' spacing and orientation in the message.

Grids: a NIfTI volume's 4x4 affine (NIfTI's x, y, z voxel order, the reverse of napari's
(Z, Y, X)); a TIFF or NumPy volume has no affine and its grid is ``spacing`` + ``origin``
along napari's axes. A file with no geometry at all (spacing 1 everywhere, origin 0 and
no affine, e.g. ``.npy``) takes the other file's grid when the shapes match. A TIFF beside a
NIfTI file may hold the NIfTI's stored order (predict's outputs) or the RAS+ order napari shows
it in (a layer saved from napari): its origin tells which, and the RAS one is reoriented.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from napari_medml.errors import InputError
from napari_medml.io.grid_differences import grid_differences, header_rounding
from napari_medml.io.units import in_unit_of
from napari_medml.io.volume import Volume, affine_from_spacing, length_factor


__all__ = ["Alignment", "align_to", "axis_codes", "describe_grid", "grid_affine", "has_geometry",
           "oriented_in_3d", "ras_grid", "reorient", "shown_in_ras", "spatial_axes", "spatial_spacing"]


class Alignment:
    """The result of :func:`align_to`: the volume on the reference grid and a note.

    Attributes
    ----------
    volume : Volume
        The moving volume, on the reference's grid (the same object when nothing changed).
    note : str or None
        One line saying what was done (reoriented) or assumed, or None when the grids
        already agreed.
    assumed : bool
        True when one file had no geometry and was taken to lie on the other's grid (a
        warning rather than a note).
    """

    __slots__ = ("assumed", "note", "volume")

    def __init__(self, volume: Volume, note: str | None, assumed: bool = False) -> None:
        self.volume = volume
        self.note = note
        self.assumed = assumed

    @property
    def line(self) -> str | None:
        """The note with its kind in front (``"note: ..."`` or ``"warning: ..."``), or None."""
        return None if self.note is None else f"{'warning' if self.assumed else 'note'}: {self.note}"


def spatial_axes(vol: Volume, spatial_dims: int | None) -> tuple[int, int]:
    """(first, stop) of the spatial axes in ``vol.data`` (RGB's colour axis is last); by default
    the last ones up to 3, stopping at a time or channel axis (a slice over time, TYX: 2)."""
    stop = vol.data.ndim - int(bool(vol.meta.get("rgb")))
    named = len(vol.axes[:stop]) - len(vol.axes[:stop].rstrip("ZYXQ"))
    n = spatial_dims if spatial_dims is not None else min(stop, 3, named or stop)
    if n < 1 or n > stop:
        raise InputError(f"'{vol.name}' with shape {vol.data.shape} has no {n} spatial axes")
    return stop - n, stop


def spatial_spacing(vol: Volume, spatial_dims: int | None = None) -> tuple[float, ...]:
    """Voxel size of a volume's spatial axes (the last ``spatial_dims``, before RGB's colour
    axis), napari order."""
    first, stop = spatial_axes(vol, spatial_dims)
    return tuple(float(s) for s in vol.spacing[first:stop])


def grid_affine(vol: Volume, spatial_dims: int | None = None) -> np.ndarray:
    """The voxel-to-world affine of a volume's spatial axes, NIfTI order.

    Parameters
    ----------
    vol : Volume
    spatial_dims : int, optional
        How many trailing axes (before RGB's colour axis) are spatial; default
        ``min(ndim, 3)``.

    Returns
    -------
    np.ndarray
        ``(n + 1, n + 1)`` float64, mapping (i, j[, k]) = (X, Y[, Z]) voxel indices to
        world (x, y[, z]) in the file's units.
    """
    first, stop = spatial_axes(vol, spatial_dims)
    n = stop - first
    spacing, origin = tuple(vol.spacing[first:stop]), tuple(vol.origin[first:stop])
    full = np.asarray(vol.affine, dtype=np.float64) if vol.affine is not None else affine_from_spacing(spacing, origin)
    keep = [*range(n), 3]
    return full[np.ix_(keep, keep)]


def axis_codes(affine: np.ndarray) -> str:
    """Orientation letters of an affine's voxel axes, e.g. ``"RAS"`` or ``"LAS"`` (nibabel)."""
    from nibabel.orientations import aff2axcodes

    return "".join(c if c is not None else "?" for c in aff2axcodes(affine))


def describe_grid(vol: Volume, spatial_dims: int | None = None, file_order: bool = True) -> str:
    """``shape (Z, Y, X) ..., spacing ..., origin ...`` for messages; with an affine (NIfTI) in the file's
    order, as nibabel gives it: ``shape (I, J, K) along RAS, ..., origin (x, y, z) ...`` (trial 47)."""
    first, stop = spatial_axes(vol, spatial_dims)
    aff, n = grid_affine(vol, spatial_dims), stop - first
    spacing = np.sqrt((aff[:n, :n] ** 2).sum(axis=0))  # NIfTI order
    origin = aff[:n, n] + 0.0  # + 0.0: a flipped axis's -0 reads 0
    shape = tuple(vol.data.shape[first:stop])
    if vol.affine is None or not file_order:  # napari order (review 47: beside a file of no affine, both so)
        head, spacing, origin, world = f"shape {shape}", spacing[::-1], origin[::-1], ""
    else:
        head, world = f"shape {shape[::-1]} along {axis_codes(aff)}", " (x, y, z)" if n == 3 else " (x, y)"
    return (f"{head}, spacing ({', '.join(f'{s:g}' for s in spacing)}), origin{world} "
            f"({', '.join(f'{o:g}' for o in origin)})")


def has_geometry(vol: Volume, spatial_dims: int | None = None) -> bool:
    """Whether ``vol`` says where its voxels lie: an affine, a unit (a TIFF of 1 um voxels), or a voxel
    size or origin other than 1 and 0 on its spatial axes (a ``.npy`` or a bare TIFF says nothing)."""
    return not _no_geometry(vol, *spatial_axes(vol, spatial_dims))


def _no_geometry(vol: Volume, first: int, stop: int) -> bool:
    return (vol.affine is None and not vol.meta.get("unit") and all(float(s) == 1.0 for s in vol.spacing[first:stop])
            and all(float(o) == 0.0 for o in vol.origin[first:stop]))  # fmt: skip


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Affines equal to a thousandth of the smaller voxel (float32 headers round)."""
    n = a.shape[1] - 1
    voxel = min(float(np.linalg.norm(a[:n, i])) for i in range(n))
    return bool(np.allclose(a, b, rtol=0.0, atol=1e-3 * max(voxel, 1e-9)))


def reorient(data: np.ndarray, transform: np.ndarray, first: int, stop: int) -> np.ndarray:
    """Apply a nibabel orientation transform to the spatial axes ``first:stop`` (napari
    order) of ``data``; returns a new contiguous array (flips and axis swaps only)."""
    from nibabel.orientations import apply_orientation

    n = stop - first
    nifti_axes = list(range(stop - 1, first - 1, -1))  # X, Y[, Z] first, as nibabel expects
    moved = np.moveaxis(data, nifti_axes, list(range(n)))
    if isinstance(data, np.ndarray):
        out = apply_orientation(moved, transform)
        return np.ascontiguousarray(np.moveaxis(out, list(range(n)), nifti_axes))
    # a lazy (dask) volume stays lazy: nibabel's apply_orientation reads its input whole, so its
    # two steps are done here (flip the axes marked -1, then put axis k where transform[k, 0] says)
    for axis, flip in enumerate(np.asarray(transform)[:, 1]):
        if flip == -1:
            moved = moved[(slice(None),) * axis + (slice(None, None, -1),)]
    order = list(np.argsort(np.asarray(transform)[:, 0])) + list(range(n, moved.ndim))
    return np.moveaxis(moved.transpose(order), list(range(n)), nifti_axes)


def align_to(moving: Volume, reference: Volume, *, moving_name: str, reference_name: str,
             spatial_dims: int | None = None, reference_spatial_dims: int | None = None) -> Alignment:
    """Put ``moving`` on the voxel grid of ``reference``, or refuse.

    Parameters
    ----------
    moving : Volume
        The volume to compare (labels, a prediction, another channel); its spatial axes
        are its last ``spatial_dims`` (before RGB's colour axis); leading axes
        (channels, time) travel along unchanged.
    reference : Volume
        The volume whose grid counts (the image, the ground truth).
    moving_name, reference_name : str
        How messages name them, e.g. ``"labels 'seg.nii.gz'"``.
    spatial_dims, reference_spatial_dims : int, optional
        Number of spatial axes of each (default ``min(ndim, 3)``; the reference's
        defaults to the moving one's).

    Returns
    -------
    Alignment
        ``volume`` on the reference grid (spacing, origin, affine of the reference along
        the spatial axes) and ``note`` (one line when it was reoriented, else None).

    Raises
    ------
    InputError
        The grids differ other than by orientation (shape, spacing, origin, rotation), also
        once ``moving``'s is put in ``reference``'s unit (``meta["unit"]``, :mod:`.units`).
    """
    names, dims = (moving_name, reference_name), (spatial_dims, reference_spatial_dims)
    try:  # as the numbers say: files that name other units for the same numbers (Slicer's mm) still agree
        out = _align(moving, reference, names, dims)
        have, want = moving.meta.get("unit"), reference.meta.get("unit")
        if have and want and length_factor(have, want) != 1.0:  # said, not silent: one of them is wrong
            said = (f"{moving_name} names its voxel size in {have}, {reference_name} the same numbers in {want}: "
                    f"taken as the same grid, with lengths in {want} (if one file's unit is wrong, fix its header)")
            return Alignment(out.volume, "; ".join(filter(None, (said, out.note))), True)
        return out
    except InputError as exc:
        converted, unit = in_unit_of(moving, reference, *spatial_axes(moving, spatial_dims))
        if unit is None:
            raise
        try:  # the same grid in mm and in um
            out = _align(converted, reference, names, dims)
        except InputError:
            raise exc from None
    return Alignment(out.volume, "; ".join(filter(None, (f"{moving_name}: {unit}", out.note))), out.assumed)


def _align(moving: Volume, reference: Volume, names: tuple[str, str], dims: tuple[int | None, int | None]
           ) -> Alignment:
    from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

    (moving_name, reference_name), (spatial_dims, reference_spatial_dims) = names, dims
    m_first, m_stop = spatial_axes(moving, spatial_dims)
    n = m_stop - m_first
    r_first, r_stop = spatial_axes(reference, reference_spatial_dims or n)
    if r_stop - r_first != n:
        raise InputError(f"{moving_name} has {n} spatial axes but {reference_name} has {r_stop - r_first}")
    r_shape = tuple(reference.data.shape[r_first:r_stop])
    m_shape = tuple(moving.data.shape[m_first:m_stop])

    def refuse(why: str) -> InputError:
        both = moving.affine is not None and reference.affine is not None
        return InputError(f"{moving_name} ({describe_grid(moving, n, both)}) is not on the voxel grid of "
                          f"{reference_name} ({describe_grid(reference, n, both)}): {why}")  # fmt: skip

    if (moving.affine is None) != (reference.affine is None):  # a TIFF or NumPy file beside a NIfTI file
        return _align_without_direction(moving, reference, (m_first, m_stop), (r_first, r_stop),
                                        (moving_name, reference_name), refuse)
    bare_m, bare_r = _no_geometry(moving, m_first, m_stop), _no_geometry(reference, r_first, r_stop)
    if bare_m or bare_r:
        if m_shape != r_shape:
            raise refuse("the shapes differ; give files that cover the same voxels")
        if bare_m == bare_r:
            return Alignment(moving, None)
        bare, other = (moving_name, reference_name) if bare_m else (reference_name, moving_name)
        return Alignment(moving, f"{bare} has no voxel size or position: taken to lie on the grid of {other}",
                         assumed=True)
    a_m, a_r = grid_affine(moving, n), grid_affine(reference, n)
    if moving.affine is None:  # two grids without a direction (TIFF/NumPy): shape and spacing
        if not _same_box(m_shape, a_m, r_shape, a_r, origin=None):
            raise refuse("resample one onto the other's grid (same shape and spacing) first")
        return Alignment(moving, None)
    if m_shape == r_shape and _same(a_m, a_r):
        return Alignment(moving, None)
    o_m, o_r = io_orientation(a_m), io_orientation(a_r)
    if np.array_equal(o_m, o_r):
        fix = (f"if they hold the same voxels, give {moving_name} the affine of {reference_name} (nibabel: "  # trial 47
               "Nifti1Image(its data, the other's affine))" if header_rounding((m_shape, r_shape), a_m, a_r) else
               "resample one onto the other's grid (same shape, spacing, origin and direction) first")
        raise refuse(f"{grid_differences((m_shape, r_shape), a_m, a_r)}: {fix}")
    transform = ornt_transform(o_m, o_r)
    nifti_shape = m_shape[::-1]
    new_affine = a_m @ inv_ornt_aff(transform, nifti_shape)
    new_shape = tuple(int(nifti_shape[int(ax)]) for ax in np.argsort(transform[:, 0]))[::-1]
    if new_shape != r_shape or not _same(new_affine, a_r):
        raise refuse(f"in the same axis order, {grid_differences((new_shape, r_shape), new_affine, a_r)}: resample one "
                     "onto the other's grid (same shape, spacing, origin and direction) first")
    data = reorient(moving.data, transform, m_first, m_stop)
    spacing = (*moving.spacing[:m_first], *reference.spacing[r_first:r_stop])
    origin = (*moving.origin[:m_first], *reference.origin[r_first:r_stop])
    volume = replace(moving, data=data, spacing=spacing, origin=origin, affine=reference.affine)
    note = (f"{moving_name} is stored in orientation {axis_codes(a_m)}, {reference_name} in "
            f"{axis_codes(a_r)}: reoriented onto the grid of {reference_name} (same world space)")
    return Alignment(volume, note)


def oriented_in_3d(vol: Volume) -> bool:
    """Whether ``vol`` has a direction in 3D: a 4x4 affine and three spatial axes ``ZYX`` last
    (not a 2D NIfTI, nor a slice over time). Only these are ever reoriented
    (:func:`~napari_medml.io.orientation.to_orientation`)."""
    if vol.affine is None or np.asarray(vol.affine).shape != (4, 4):
        return False
    try:
        first, stop = spatial_axes(vol, 3)
    except InputError:  # a 2D NIfTI
        return False
    return vol.axes[first:stop] == "ZYX"


def shown_in_ras(vol: Volume) -> bool:
    """Whether napari shows ``vol`` in RAS+ voxel order rather than as stored (the reader's
    :func:`~napari_medml.io.orientation.to_canonical`): oriented in 3D, stored otherwise."""
    return oriented_in_3d(vol) and axis_codes(np.asarray(vol.affine, dtype=np.float64)) != "RAS"


def ras_grid(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """A grid's RAS+ voxel order: the nibabel orientation transform to it, its affine and shape.

    Parameters
    ----------
    affine : np.ndarray
        ``(4, 4)`` voxel-to-world affine, NIfTI order.
    shape : tuple of int
        ``(Z, Y, X)``, napari order.

    Returns
    -------
    (np.ndarray, np.ndarray, tuple of int)
        The transform (for :func:`reorient`), the new grid's affine and its shape (napari order).
    """
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    transform = ornt_transform(io_orientation(affine), axcodes2ornt(("R", "A", "S")))
    nifti_shape = tuple(shape)[::-1]
    new_shape = tuple(int(nifti_shape[int(ax)]) for ax in np.argsort(transform[:, 0]))[::-1]
    return transform, affine @ inv_ornt_aff(transform, nifti_shape), new_shape


def _same_box(shape_a: tuple[int, ...], a: np.ndarray, shape_b: tuple[int, ...], b: np.ndarray,
              origin: float | None) -> bool:
    """Same shape and voxel size of two grids, whatever their directions, and origins within
    ``origin`` voxels (None: any origin)."""
    n = a.shape[0] - 1
    size_a, size_b = np.sqrt((a[:n, :n] ** 2).sum(axis=0)), np.sqrt((b[:n, :n] ** 2).sum(axis=0))
    if tuple(shape_a) != tuple(shape_b) or not np.allclose(size_a, size_b, rtol=1e-3, atol=0):
        return False
    # a NIfTI header holds its affine in float32: far from 0 its origin rounds by more than 1e-3 voxel
    rounding = 4 * float(np.finfo(np.float32).eps) * float(np.abs(b[:n, n]).max(initial=0.0))
    return origin is None or bool(np.all(np.abs(a[:n, n] - b[:n, n]) <= origin * size_a + rounding))


def _align_without_direction(moving: Volume, reference: Volume, m_axes: tuple[int, int], r_axes: tuple[int, int],
                             names: tuple[str, str], refuse: Any) -> Alignment:
    """:func:`align_to` when one grid has no direction (TIFF/NumPy: spacing and origin along
    napari's axes) and the other has an affine (NIfTI).

    napari shows a NIfTI volume in RAS+ order (:func:`shown_in_ras`), and a layer saved from
    napari to TIFF or NumPy keeps that order (and a TIFF its origin); predict's outputs keep
    the stored order and origin. The grid that fits shape, spacing and origin is taken (the
    RAS one reoriented: flips and axis swaps); when both fit (an axis swap of equal axes) or,
    without a position, the stored one is taken with a warning; otherwise refused.
    """
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    n = m_axes[1] - m_axes[0]
    bare_is_moving = moving.affine is None
    bare, directed = (moving, reference) if bare_is_moving else (reference, moving)
    b_axes, d_axes = (m_axes, r_axes) if bare_is_moving else (r_axes, m_axes)
    b_name, d_name = names if bare_is_moving else names[::-1]
    b_shape, d_shape = tuple(bare.data.shape[slice(*b_axes)]), tuple(directed.data.shape[slice(*d_axes)])
    a_b, a_d = grid_affine(bare, n), grid_affine(directed, n)
    placed = any(float(o) != 0.0 for o in bare.origin[slice(*b_axes)])  # origin 0 may mean none was stored
    geometry = placed or any(float(v) != 1.0 for v in bare.spacing[slice(*b_axes)])
    shown, codes = n == 3 and shown_in_ras(directed), axis_codes(a_d)
    to_ras, ras_affine, ras_shape = ras_grid(a_d, d_shape) if shown else (None, None, None)

    def fits(origin: float | None) -> tuple[bool, bool]:  # (the stored grid, the RAS grid)
        return (_same_box(b_shape, a_b, d_shape, a_d, origin),
                bool(shown) and _same_box(b_shape, a_b, ras_shape, ras_affine, origin))

    hint = (f"; napari shows {d_name} in RAS order, so a layer of it saved from napari to this file type lies "
            "flipped or turned: save it as .nii.gz" if shown else "")
    stored, ras = fits(1e-3)
    if not (stored or ras):
        stored, ras = fits(0.5) if placed else (False, False)  # another convention (a voxel's corner, not centre)
    if stored and ras:
        return Alignment(moving, f"{b_name} fits both the grid {d_name} is stored on ({codes}) and the RAS one "
                         f"napari shows it on: taken as stored{hint}", assumed=True)
    if ras:
        transform = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(a_d)) if bare_is_moving else to_ras
        data = reorient(moving.data, transform, *m_axes)
        first = m_axes[0]
        spacing = (*moving.spacing[:first], *reference.spacing[slice(*r_axes)])
        origin = (*moving.origin[:first], *reference.origin[slice(*r_axes)])
        volume = replace(moving, data=data, spacing=spacing, origin=origin, affine=reference.affine)
        told = "" if placed else " (told by its origin 0, which may also mean it stores none)"
        return Alignment(volume, f"{b_name} holds no orientation and lies on the grid napari shows {d_name} on "
                         f"(RAS order, as napari saves a layer of it), not the one {d_name} is stored in "
                         f"({codes}){told}: reoriented onto the grid of {names[1]} (same world space)",
                         assumed=not placed)
    if stored and not placed and shown:  # origin 0 may mean none: the fit is no evidence of the order (c35 p50)
        return Alignment(moving, f"{b_name} has no position (origin 0) and fits the grid {d_name} is stored on "
                         f"({codes}): taken as stored, as predict writes its outputs{hint}", assumed=True)
    if stored:
        return Alignment(moving, None)
    loose = fits(None)[0] or not geometry and b_shape == d_shape
    if not placed and loose:  # no position stored: the file's own order is the likelier
        what = "origin or orientation" if geometry else "voxel size or position"
        return Alignment(moving, f"{b_name} has no {what}: taken to lie on the grid of {d_name} as stored "
                         f"({codes}){hint}", assumed=True)
    if loose:
        apart = ", ".join(f"{v:.6g}" for v in (a_b[:n, n] - a_d[:n, n])[::-1])
        raise refuse(f"their origins differ by ({apart}); if they hold the same voxels, save {b_name} without an "
                     "origin (it is then taken on the other's grid)")  # trial 42: it said "the TIFF" of a .zarr
    if geometry or b_shape == d_shape:
        raise refuse("resample one onto the other's grid (same shape and spacing) first")
    raise refuse("the shapes differ; give files that cover the same voxels")
