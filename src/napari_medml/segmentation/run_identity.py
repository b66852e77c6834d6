"""What identifies a block-wise prediction run, so that a store is resumed only by the same
prediction of the same image: the networks' weights, the class ids and the image's values
(:func:`prediction_fingerprint`), where the image came from and where it lies
(:func:`image_identity`), and the geometry the stores record (:func:`store_geometry`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["content_digest", "image_identity", "network_spacing", "prediction_fingerprint", "prediction_members",
           "store_geometry"]


def prediction_members(model: Any) -> list[Any]:
    """The networks that predict: an ensemble's members, or the model itself."""
    from napari_medml.segmentation.ensemble import EnsembleModel

    return list(model.members) if isinstance(model, EnsembleModel) else [model]


def prediction_fingerprint(model: Any, image: Any) -> str:
    """Weights (of every member), class ids, the preprocessing recipe, and the image's shape,
    dtype and content: a resumed store must come from the same prediction of the same image."""
    digest = hashlib.sha256()
    for member in prediction_members(model):
        for name, tensor in member.network.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps([list(model.class_ids), list(np.shape(image)), str(image.dtype)]).encode())
    steps = getattr(getattr(getattr(model, "config", None), "data", None), "preprocessing", ())
    if steps:  # replayed block by block: the same weights with another recipe are another prediction
        from napari_medml.config import to_dict

        digest.update(json.dumps([to_dict(s) for s in steps], sort_keys=True).encode())
    digest.update(content_digest(image).encode())
    return digest.hexdigest()[:32]


def content_digest(image: Any, samples: int = 3, edge: int = 8) -> str:
    """A hash of ``image``'s values: all of them for a NumPy array (in memory already; a
    pass over it costs far less than the prediction), otherwise (dask, zarr: possibly larger
    than memory) ``samples`` regions of ``edge`` voxels per spatial axis, at the start, the
    middle and the end of each axis, with every channel: another image of the same shape
    differs there, and only a few chunks are read."""
    digest = hashlib.sha256()
    shape = np.shape(image)
    if isinstance(image, np.ndarray):
        for index in np.ndindex(*shape[:-2]):  # a plane at a time: never a second copy of the volume
            digest.update(np.ascontiguousarray(image[index]).tobytes())
        return digest.hexdigest()
    import itertools

    spatial = shape[1:]
    starts = [sorted({0, max(0, (n - edge) // 2), max(0, n - edge)})[:samples] for n in spatial]
    for corner in itertools.product(*starts):
        region = tuple(slice(c, min(c + edge, n)) for c, n in zip(corner, spatial))
        digest.update(np.ascontiguousarray(np.asarray(image[(slice(None), *region)])).tobytes())
    return digest.hexdigest()


def image_identity(volume: Any, source: str | Path | None = None) -> dict[str, Any]:
    """Where the image comes from and where it lies, for the resume record.

    Parameters
    ----------
    volume : io.Volume
        Its spacing, origin and affine are part of the identity.
    source : str or Path, optional
        The file or Zarr store the image was read from: a file by its resolved path, size
        and modification time (an edited or replaced file is another image), a store (a
        folder) by its resolved path (its values are sampled by :func:`prediction_fingerprint`).

    Returns
    -------
    dict
        JSON-ready; equal for a genuine resume of the same image.
    """
    affine = getattr(volume, "affine", None)
    found: dict[str, Any] = {"spacing": [float(s) for s in volume.spacing],
                             "origin": [float(o) for o in volume.origin],
                             "affine": None if affine is None else np.asarray(affine, float).round(9).tolist()}
    if source is not None:
        path = Path(source).expanduser().resolve()
        found["path"] = str(path)
        if path.is_file():
            stat = path.stat()
            found["size"], found["mtime_ns"] = stat.st_size, stat.st_mtime_ns
    return found


def network_spacing(volume: Any, spatial_axes: str) -> list[float]:
    """The voxel size of ``spatial_axes`` as the network takes ``volume``: in the model's unit when
    ``io.units.in_model_unit`` converted it (the recipe's physical steps replay in it; review 53: a
    gaussian of sigma 1 µm ran at sigma 1 mm on a layer in mm), where :func:`store_geometry` gives
    the unit it was read in."""
    from napari_medml.io.axes import placed_values

    return list(placed_values(volume.axes[: len(volume.spacing)], volume.spacing, spatial_axes, 1.0))


def store_geometry(volume: Any, spatial_axes: str) -> dict[str, Any]:
    """Spacing, origin (of ``spatial_axes``) and unit of ``volume``, for the stores' metadata (in the
    unit it was read in: ``io.units.as_read``)."""
    from napari_medml.io.axes import placed_values
    from napari_medml.io.units import as_read

    volume = as_read(volume)

    body = volume.axes[: len(volume.spacing)]
    return {"spacing": list(placed_values(body, volume.spacing, spatial_axes, 1.0)),
            "origin": list(placed_values(body, volume.origin, spatial_axes, 0.0)), "unit": volume.meta.get("unit")}
