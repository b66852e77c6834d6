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
no affine, e.g. ``.npy``) takes the other file's grid when the shapes match.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from napari_medml.errors import InputError
from napari_medml.io.volume import Volume, affine_from_spacing


__all__ = ["Alignment", "align_to", "axis_codes", "describe_grid", "fit_length1_axes", "grid_affine", "has_geometry",
           "reorient", "spacing_note", "spatial_axes", "spatial_spacing"]


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
    """(first, stop) of the spatial axes in ``vol.data`` (RGB's colour axis is last)."""
    stop = vol.data.ndim - int(bool(vol.meta.get("rgb")))
    n = spatial_dims if spatial_dims is not None else min(stop, 3)
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


def describe_grid(vol: Volume, spatial_dims: int | None = None) -> str:
    """``shape (Z, Y, X) ..., spacing ..., orientation RAS, origin ...`` for messages."""
    first, stop = spatial_axes(vol, spatial_dims)
    aff = grid_affine(vol, spatial_dims)
    n = stop - first
    spacing = np.sqrt((aff[:n, :n] ** 2).sum(axis=0))[::-1]  # napari order
    text = (f"shape {tuple(vol.data.shape[first:stop])}, spacing "
            f"({', '.join(f'{s:g}' for s in spacing)})")  # fmt: skip
    if vol.affine is not None:
        text += f", orientation {axis_codes(aff)}"
    origin = aff[:n, n][::-1]
    return text + f", origin ({', '.join(f'{o:g}' for o in origin)})"


def has_geometry(vol: Volume, spatial_dims: int | None = None) -> bool:
    """Whether ``vol`` says where its voxels lie: an affine, or a voxel size or origin other
    than 1 and 0 on its spatial axes (a ``.npy`` or a bare TIFF says nothing)."""
    return not _no_geometry(vol, *spatial_axes(vol, spatial_dims))


def _no_geometry(vol: Volume, first: int, stop: int) -> bool:
    return (vol.affine is None and all(float(s) == 1.0 for s in vol.spacing[first:stop])
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
        The grids differ other than by orientation (shape, spacing, origin, rotation).
    """
    from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

    m_first, m_stop = spatial_axes(moving, spatial_dims)
    n = m_stop - m_first
    r_first, r_stop = spatial_axes(reference, reference_spatial_dims or n)
    if r_stop - r_first != n:
        raise InputError(f"{moving_name} has {n} spatial axes but {reference_name} has {r_stop - r_first}")
    r_shape = tuple(reference.data.shape[r_first:r_stop])
    m_shape = tuple(moving.data.shape[m_first:m_stop])

    def refuse(why: str) -> InputError:
        return InputError(f"{moving_name} ({describe_grid(moving, n)}) is not on the voxel grid of "
                          f"{reference_name} ({describe_grid(reference, n)}): {why}")  # fmt: skip

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
    if moving.affine is None or reference.affine is None:
        # one grid without a direction (TIFF/NumPy): compare sizes along napari's axes only
        s_m = np.sqrt((a_m[:n, :n] ** 2).sum(axis=0))
        s_r = np.sqrt((a_r[:n, :n] ** 2).sum(axis=0))
        if m_shape != r_shape or not np.allclose(s_m, s_r, rtol=1e-3, atol=0):
            raise refuse("resample one onto the other's grid (same shape and spacing) first")
        return Alignment(moving, None)
    if m_shape == r_shape and _same(a_m, a_r):
        return Alignment(moving, None)
    o_m, o_r = io_orientation(a_m), io_orientation(a_r)
    if np.array_equal(o_m, o_r):
        raise refuse("resample one onto the other's grid (same shape, spacing and origin) first")
    transform = ornt_transform(o_m, o_r)
    nifti_shape = m_shape[::-1]
    new_affine = a_m @ inv_ornt_aff(transform, nifti_shape)
    new_shape = tuple(int(nifti_shape[int(ax)]) for ax in np.argsort(transform[:, 0]))[::-1]
    if new_shape != r_shape or not _same(new_affine, a_r):
        raise refuse("after reorientation to the same axis order they still differ; "
                     "resample one onto the other's grid first")
    data = reorient(moving.data, transform, m_first, m_stop)
    spacing = (*moving.spacing[:m_first], *reference.spacing[r_first:r_stop])
    origin = (*moving.origin[:m_first], *reference.origin[r_first:r_stop])
    volume = replace(moving, data=data, spacing=spacing, origin=origin, affine=reference.affine)
    note = (f"{moving_name} is stored in orientation {axis_codes(a_m)}, {reference_name} in "
            f"{axis_codes(a_r)}: reoriented onto the grid of {reference_name} (same world space)")
    return Alignment(volume, note)


def fit_length1_axes(vol: Volume, shape: tuple[int, ...], name: str) -> tuple[Volume, str | None]:
    """A volume whose shape differs from ``shape`` only by length-1 axes, reshaped to it.

    NIfTI names its axes by position (X, Y, Z, T), so an array saved with an extra leading axis
    (``(1, X, Y, Z)``, numpy's ``a[None]``) reads as X of length 1 and the rest shifted: its
    header's grid no longer describes the voxels. The data are kept in order with the length-1
    axes dropped; the grid is left to the reference (no spacing, origin or affine here, so
    :func:`align_to` takes the other file's and says so).

    Parameters
    ----------
    vol : Volume
    shape : tuple of int
        The shape to fit (the image's without channels, or the other file's).
    name : str
        For the note.

    Returns
    -------
    (Volume, str or None)
        The volume unchanged and None when the shapes already agree or differ otherwise.
    """
    if tuple(vol.data.shape) == tuple(shape) or (
            tuple(n for n in vol.data.shape if n != 1) != tuple(n for n in shape if n != 1)):
        return vol, None
    data = np.asarray(vol.data).reshape(shape)
    meta = {k: v for k, v in vol.meta.items() if k == "unit"}
    note = (f"warning: {name} is stored with shape {tuple(vol.data.shape)}: read as {tuple(shape)}, its extra "
            "length-1 axes dropped (its header's grid no longer fits those voxels); save it without the extra axis")
    return Volume(data, (1.0,) * len(shape), (0.0,) * len(shape), None, vol.is_labels, vol.name, meta), note


def spacing_note(spacing: tuple[float, ...] | None, trained: tuple[float, ...] | None, name: str,
                 tolerance: float = 1.25, recipe: Any = ()) -> str | None:
    """One line when an image's voxel size differs from a model's training spacing by more
    than ``tolerance`` (a ratio) along any axis; None otherwise or when either is unknown.

    Parameters
    ----------
    spacing : tuple of float or None
        The image's voxel size (napari order).
    trained : tuple of float or None
        The model's training spacing (``model.spacing``: after its recipe).
    name : str
        How the line names the image.
    tolerance : float
        The largest ratio that says nothing.
    recipe : sequence of PreprocessStep (or their dicts)
        The model's preprocessing recipe (``model.config.data.preprocessing``). A resample
        step in it sets the voxel size the network sees, so the spacing after it is
        compared: a model that resamples its input warns about nothing.

    Returns
    -------
    str or None
    """
    if spacing is None or trained is None:
        return None
    for step in recipe or ():
        operation = step.get("operation") if isinstance(step, Mapping) else getattr(step, "operation", None)
        params = (step.get("params") if isinstance(step, Mapping) else getattr(step, "params", None)) or {}
        target = params.get("target_spacing") if operation == "resample" else None
        if target is not None and len(target) >= len(spacing):
            spacing = tuple(float(t) for t in target)[len(target) - len(spacing):]
    if len(spacing) != len(trained):
        return None
    ratios = [s / t for s, t in zip(spacing, trained) if s > 0 and t > 0]
    if all(1 / tolerance <= r <= tolerance for r in ratios):
        return None
    show = lambda v: " x ".join(f"{x:g}" for x in v)  # noqa: E731
    return (f"warning: {name} has voxel size {show(spacing)} but the model was trained at {show(trained)}: "
            "objects look larger or smaller to it; resample the image to the training spacing "
            "(Preprocess > resample in napari) for the best result")
