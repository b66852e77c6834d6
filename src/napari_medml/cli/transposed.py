"""A NumPy file that holds another file's array transposed (nibabel's (X, Y, Z) saved with
``np.save``): refused with the fix that lines the two up."""

from __future__ import annotations

from typing import Any

__all__ = ["check_not_transposed"]


def check_not_transposed(a: Any, a_path: Any, b: Any, b_path: Any) -> None:
    """Refuse a NumPy file whose array is the other file's transposed: a NIfTI array saved with
    ``np.save`` keeps nibabel's (X, Y, Z) order, while ``.npy`` is read as (Z, Y, X).

    Raises
    ------
    InputError
        Naming the ``.npy`` file and the fix (save it transposed, or as NIfTI).
    """
    from napari_medml.errors import InputError

    a_shape, b_shape = tuple(a.data.shape), tuple(b.data.shape)
    if a_shape == b_shape or a_shape != b_shape[::-1]:
        return
    for path, shape, other_path in ((a_path, a_shape, b_path), (b_path, b_shape, a_path)):
        if str(path).lower().endswith(".npy"):
            from napari_medml.io.orientation import file_orientation

            stored = file_orientation(other_path, 3 if len(shape) >= 3 else 2)  # a time series's volumes too
            # a .npy without orientation lies on the RAS grid napari shows: the transpose fits
            # only an array stored in RAS (review 33: after it, an LAS file's scored Dice 0)
            fix = ("save it transposed (np.save(path, a.T)) or as NIfTI with its affine" if stored in (None, "RAS")
                   else f"'{other_path}' is stored in {stored}, not RAS, so a transpose may not line them up: save "
                        f"it as NIfTI with that file's affine (nibabel.save(nibabel.Nifti1Image(a, img.affine), "
                        "'labels.nii.gz'))")
            raise InputError(f"'{path}' holds shape {shape}, the other file's {shape[::-1]} reversed: a NumPy file is "
                             f"read in (Z, Y, X) order, and an array taken from nibabel is (X, Y, Z); {fix}")
