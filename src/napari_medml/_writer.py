"""npe2 writers: save an Image or Labels layer as NIfTI or TIFF (thin over ``io``), or
several of them, one file each, into a new folder.

The layer's ``scale``/``translate`` and the affine in its ``metadata`` decide the
file's spacing, origin and affine (rule in :mod:`napari_medml.layer_data`), so a
layer opened from a file and saved again keeps its header. A NIfTI file that the reader
put in RAS+ voxel order goes back to its own stored order when saved as NIfTI again, so
saving what was read writes the same array and affine.
"""

from __future__ import annotations

from typing import Any

from napari_medml.errors import MedMLError
from napari_medml.io import Volume, file_format, write_volume
from napari_medml.io.orientation import STORED_ORIENTATION
from napari_medml.layer_data import AFFINE_KEY, AXES_KEY, FILE_META_KEY, GEOMETRY_META, layer_to_volume

__all__ = ["LayerNotWritten", "write_image", "write_labels", "write_layers"]


class LayerNotWritten(OSError):
    """A layer the writer refused (an RGB image to NIfTI, a folder that does not exist), with
    the core's one-line reason. Not a ValueError: napari's writer lookup (npe2
    ``write_get_writer`` inside ``napari.plugins._npe2.write_layers``) drops ValueErrors and
    tells the user only that no writer was found."""


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer (npe2 single-layer writer).

    Parameters
    ----------
    path : str
        Target ``.nii.gz``, ``.nii``, ``.tif``, ``.tiff`` or ``.npy`` file (or a ``.zarr`` folder).
    data : array-like
        The layer data.
    meta : dict
        The layer's attributes (``name``, ``scale``, ``translate``, ``metadata``).

    Returns
    -------
    list of str
        The path written.

    Raises
    ------
    LayerNotWritten
        The layer cannot be written there (the reason, and the fix, in one line).
    """
    return _write(path, data, meta, is_labels=False)


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer (npe2 single-layer writer); NIfTI marks it as labels.

    Parameters
    ----------
    path : str
        Target ``.nii.gz``, ``.nii``, ``.tif``, ``.tiff`` or ``.npy`` file (or a ``.zarr`` folder).
    data : array-like
        The label ids.
    meta : dict
        The layer's attributes (``name``, ``scale``, ``translate``, ``metadata``).

    Returns
    -------
    list of str
        The path written.

    Raises
    ------
    LayerNotWritten
        The layer cannot be written there (the reason, and the fix, in one line).
    """
    return _write(path, data, meta, is_labels=True)


def write_layers(path: str, layer_data: list[tuple[Any, dict[str, Any], str]]) -> list[str]:
    """Write several Image and Labels layers, one file each, into a new folder (npe2 multi-layer writer).

    The folder is ``path`` without its extension; each layer goes in it as
    ``<layer name><extension>`` (``ct.nii.gz``, ``ct [prediction].nii.gz``), written as
    :func:`write_image` and :func:`write_labels` write one layer. Nothing is left behind
    when one layer cannot be written: the files are written into a hidden folder beside it,
    which takes the folder's name at the end.

    Parameters
    ----------
    path : str
        ``<folder>.nii.gz``, ``.nii``, ``.tif``, ``.tiff``, ``.npy`` or ``.zarr``: the folder
        to create and the format of its files.
    layer_data : list of (data, meta, layer_type)
        napari's full layer data of the selected layers (``"image"`` or ``"labels"``).

    Returns
    -------
    list of str
        The files (and Zarr folders) written, in the layers' order.

    Raises
    ------
    LayerNotWritten
        The folder exists already, or a layer cannot be written (its reason, in one line).
    """
    import shutil
    import tempfile
    from pathlib import Path

    target = Path(path)
    given = [s for s in (".nii.gz", ".nii", ".tiff", ".tif", ".npy", ".zarr") if target.name.lower().endswith(s)]
    suffix = given[0] if given else ".nii.gz"  # no extension given: NIfTI
    folder = target.with_name(target.name[: len(target.name) - len(suffix)] if given else target.name)
    if folder.exists():
        raise LayerNotWritten(f"{len(layer_data)} layers were not saved: '{folder}' exists already: choose a new "
                              "name (each layer becomes a file in a folder of that name)")
    if not folder.parent.is_dir():
        raise LayerNotWritten(f"{len(layer_data)} layers were not saved: folder '{folder.parent}' does not exist")
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        written, used = [], set()
        for data, meta, layer_type in layer_data:
            name = "".join("_" if c in '/\\:*?"<>|' else c for c in str(meta.get("name") or layer_type)).strip(". ")
            stem, k = name or layer_type, 2
            while stem.lower() in used:  # two layers of one name: the second gets " (2)"
                stem, k = f"{name} ({k})", k + 1
            used.add(stem.lower())
            file = _write(str(work / f"{stem}{suffix}"), data, meta, is_labels=layer_type == "labels")[0]
            written.append(folder / Path(file).name)
        work.rename(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return [str(p) for p in written]


def _write(path: str, data: Any, meta: dict[str, Any], is_labels: bool) -> list[str]:
    try:
        volume = _volume(path, data, meta, is_labels=is_labels)
        written = [str(write_volume(path, volume))]
    except MedMLError as exc:
        raise LayerNotWritten(f"'{meta.get('name', 'layer')}' was not saved: {exc}") from None
    _warn_geometry_lost(path, volume, meta)
    return written


def _with_image_details(data: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` of a labels layer napari made (its New Labels copies an image's scale and translate,
    not its metadata), with the file details of the one image it lies on: painted on an oblique
    NIfTI, it saves with that image's affine, NIfTI codes and voxel order, not axis-aligned
    (trial 40: 25-30 mm off). Any other layer's ``meta`` as it is."""
    import numpy as np

    metadata = meta.get("metadata") or {}
    if metadata.get(AFFINE_KEY) is not None or metadata.get(FILE_META_KEY):
        return meta
    try:
        import napari

        viewer = napari.current_viewer()
    except ImportError:
        viewer = None
    if viewer is None or meta.get("scale") is None:
        return meta
    scale = np.asarray(meta["scale"], float)
    translate = np.asarray(meta["translate"] if meta.get("translate") is not None else np.zeros_like(scale), float)
    found = []
    for layer in viewer.layers:
        shape = np.shape(layer.data[0] if getattr(layer, "multiscale", False) else layer.data)
        stored = layer.metadata.get(AFFINE_KEY)
        details = layer.metadata.get(FILE_META_KEY) or {}
        # a NIfTI with no orientation (codes 0): its labels get none either (trial 42: they were saved
        # "aligned", which other tools place off the image)
        unoriented = stored is None and details.get("sform_code") == 0 and details.get("qform_code") == 0
        if (type(layer).__name__ == "Image" and (stored is not None or unoriented)
                and tuple(shape) == tuple(np.shape(data))
                and np.allclose(layer.scale, scale) and np.allclose(layer.translate, translate)):
            found.append((stored, {k: details[k] for k in (*GEOMETRY_META, STORED_ORIENTATION) if k in details},
                          layer.metadata.get(AXES_KEY)))

    def same(a: Any, b: Any) -> bool:
        return (a is None and b is None) or (a is not None and b is not None and np.allclose(a, b))

    if not found or any(not same(f[0], found[0][0]) for f in found):  # none, or images that disagree
        return meta
    # and its axes, which napari 0.5's New Labels does not name (its voxel order is saved by them)
    axes = {AXES_KEY: found[0][2]} if found[0][2] and not metadata.get(AXES_KEY) else {}
    return {**meta, "metadata": {**metadata, AFFINE_KEY: found[0][0], FILE_META_KEY: found[0][1], **axes}}


def _warn_geometry_lost(path: str, volume: Volume, meta: dict[str, Any]) -> None:
    """A ``.npy`` keeps the voxels only: say so (napari shows a warning) when the layer had a
    voxel size or an origin that the file drops."""
    import numpy as np

    if file_format(path) != "npy":
        return
    lost = [what for what, values, plain in (("voxel size", volume.spacing, 1.0), ("origin", volume.origin, 0.0))
            if values is not None and not np.allclose(np.asarray(values, float), plain)]
    if lost:  # a notification: napari records the warnings of a save and drops them once it succeeded
        from napari.utils.notifications import show_warning

        show_warning(f"'{meta.get('name', 'layer')}' was saved to '{path}' without its {' and '.join(lost)}: "
                     "a .npy stores the voxels only; save as .tif, .nii.gz or .zarr to keep them")


def _volume(path: str, data: Any, meta: dict[str, Any], is_labels: bool) -> Volume:
    """The layer as a Volume; for a NIfTI target, in the orientation its file was stored in."""
    volume = layer_to_volume(data, _with_image_details(data, meta) if is_labels else meta, is_labels=is_labels)
    if file_format(path) != "nifti":
        return volume
    from napari_medml.io.orientation import to_stored

    return to_stored(volume)
