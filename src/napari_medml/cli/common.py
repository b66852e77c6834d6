"""Helpers the subcommands share: option plumbing, files, channels, progress."""

from __future__ import annotations

import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from napari_medml.config import DeviceName

__all__ = [
    "AXES_HELP",
    "AXES_HINT",
    "DEVICES",
    "FILE_TYPES",
    "PROG",
    "UsageError",
    "add_axes_option",
    "check_bundle_target",
    "check_derived_table",
    "check_file_targets",
    "given",
    "info",
    "progress_bar",
    "say_stored_order",
    "spatial_spacing",
    "write_like",
    "write_output",
]

PROG = "napari-medml"
FILE_TYPES = ".nii, .nii.gz, .tif, .tiff or .npy"
DEVICES = typing.get_args(DeviceName)


class UsageError(Exception):
    """A command line that argparse, or a check across options, rejects."""


def given(**options: Any) -> dict[str, Any]:
    """The options that were given (not None), so config defaults stay the one source."""
    return {k: v for k, v in options.items() if v is not None}


def info(text: str) -> None:
    """One status line on stderr (stdout is kept for results such as JSON); in a data-parallel
    run only rank 0 prints."""
    from napari_medml.engine.distributed import is_main

    if is_main():
        print(f"{PROG}: {text}", file=sys.stderr)


def progress_bar(unit: str) -> Any:
    """A tqdm bar on stderr, shown only when stderr is a terminal (clean logs otherwise).

    Without tqdm installed (it comes with napari, not with the core), a stand-in
    keeps the same interface and prints nothing but ``write`` lines.
    """
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=None, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=None)


class _NoBar:
    """The part of tqdm's interface the subcommands use, drawing no bar."""

    def __init__(self) -> None:
        self.n, self.total = 0, None

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def write(self, text: str, file: Any = None) -> None:
        print(text, file=file or sys.stderr)

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


AXES_HELP = ("what the image's axes are, one letter each in the order the array is stored "
             "(NumPy/tifffile order; NIfTI reversed): T time, C channels, Z, Y, X, e.g. ZCYX or TYX; "
             "needed only where the file does not say (a plain .npy or TIFF), replaces what it says")
AXES_HINT = "say what they are with --axes, e.g. --axes ZYX (a volume) or --axes CYX (channels)"


def add_axes_option(parser: Any) -> None:
    """The ``--axes`` option train, predict and evaluate share."""
    parser.add_argument("--axes", metavar="AXES", help=AXES_HELP)


def label_values(vol: Any, path: Any, what: str = "labels", ids: str = "class") -> Any:
    """A labels file's ids, checked with the file named (``segmentation.label_values.check_label_values``).

    ``ids`` names what an id is in the messages: ``"class"``, or ``"object"`` for instance labels.

    Raises
    ------
    InputError
        Non-integer or negative ids, with the fix; a NIfTI whose header scales its stored
        integers (scl_slope/scl_inter) into fractions is named as the cause.
    """
    from napari_medml.errors import InputError
    from napari_medml.segmentation.label_values import check_label_values

    try:
        return check_label_values(vol.data, f"{what} '{path}'", ids=ids)
    except InputError as exc:
        scaling = _nifti_scaling(path)
        if scaling is None:
            raise
        raise InputError(f"{exc}. Its NIfTI header scales the stored values (scl_slope {scaling[0]:g}, scl_inter "
                         f"{scaling[1]:g}): save the labels unscaled (slope 1, intercept 0)") from exc


def _nifti_scaling(path: Any) -> tuple[float, float] | None:
    """(slope, intercept) of a NIfTI file whose header scales its data; None otherwise."""
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        return None
    import math

    from napari_medml.io.nifti import load_nifti

    try:
        proxy = load_nifti(Path(path)).dataobj  # a loaded header's scl_* are reset; the proxy keeps them
        slope, inter = float(proxy.slope), float(proxy.inter)
    except Exception:  # noqa: BLE001 - only a hint: an unreadable header gives none
        return None
    if math.isclose(slope, 1.0) and inter == 0.0:
        return None
    return slope, inter


def spatial_spacing(vol: Any, spatial_dims: int) -> tuple[float, ...]:
    """Voxel size of the last ``spatial_dims`` spatial axes of a volume."""
    body = vol.axes[: len(vol.spacing)]  # an RGB colour axis has no spacing
    sizes = [s for a, s in zip(body, vol.spacing) if a in "ZYX"]
    return tuple(float(s) for s in sizes[-spatial_dims:])


def write_like(path: Path, like: Any, data: Any, *, spatial_dims: int | None = None,
               is_labels: bool = False, axes: str | None = None) -> Path:
    """Write ``data`` in the space of the image ``like``, with its shape and axes.

    ``axes`` names the axes of ``data``; by default those of ``like`` without channels
    (labels, uncertainty), with a leading ``C`` when ``data`` has one axis more
    (class probabilities). Spacing, origin, affine, format metadata and the input's
    length-1 axes come from ``like``, so the output overlays the input exactly in
    napari or any NIfTI viewer and has the input's shape.
    """
    from napari_medml.io import Volume, write_volume
    from napari_medml.io.axes import placed_values
    from napari_medml.io.units import as_read

    like = as_read(like)  # an image predicted in its model's length unit: written in its own
    rgb = bool(like.meta.get("rgb"))
    body = like.axes[: len(like.axes) - int(rgb)]
    if axes is None:
        plain = body.replace("C", "")
        if spatial_dims is not None and data.ndim < len(plain):
            plain = plain[-spatial_dims:]
        axes = plain if data.ndim == len(plain) else ("C" + plain)[-data.ndim:]
    spacing = placed_values(body, like.spacing, axes, 1.0)
    origin = placed_values(body, like.origin, axes, 0.0)
    meta = {k: v for k, v in like.meta.items() if k not in ("rgb", "channel_names")}  # channels: classes here
    # the input's length-1 axes go back, a one-channel image's C too, so that the output has the input's
    # shape (trial 49: (Y, X) for a (Y, X, 1) image and its (Y, X, 1) labels); not where the output has a C
    singletons = [d for d in meta.get("singletons", []) if d[0] not in axes]
    meta["singletons"] = singletons
    volume = Volume(data, spacing, origin, like.affine, is_labels, like.name, meta, axes)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_volume(path, volume)


def say_stored_order(like: Any, written: Sequence[Path]) -> None:
    """Say when outputs written like a NIfTI image not in RAS+ order went to files without an
    affine (:func:`napari_medml.io.orientation.stored_order_note`)."""
    from napari_medml.io.orientation import stored_order_note

    note = stored_order_note(like, written)
    if note:
        info(note)


def check_file_targets(outputs: Mapping[str, Path | None], inputs: Sequence[Path]) -> None:
    """Check output files before the work starts, so a bad name never wastes a run.

    Parameters
    ----------
    outputs : mapping
        Option name (``"--out"``) -> file (None: not asked for).
    inputs : sequence of Path
        Input files, which outputs must never overwrite.

    Raises
    ------
    InputError
        Unsupported extension (tables: ``.csv``), an input, a folder, a path below a
        file, an unwritable folder, or two outputs with one name.
    """
    from napari_medml.io.atomic import check_file_target
    from napari_medml.errors import InputError
    from napari_medml.io import file_format

    resolved_inputs = {p.resolve() for p in inputs}
    given_outputs = {name: path for name, path in outputs.items() if path is not None}
    for name, out in given_outputs.items():
        if name == "--table":
            if out.suffix.lower() not in (".csv", ".txt", ".tsv"):
                raise InputError(f"{name} '{out}' must be a .csv file")
        elif out.is_dir() and out.suffix.lower() != ".zarr":
            raise InputError(f"{name} '{out}' is a folder: give a file name in it, e.g. {out / 'pred.nii.gz'}")
        else:
            file_format(out)  # raises for an unsupported extension
        if out.resolve() in resolved_inputs:
            raise InputError(f"{name} '{out}' is one of the inputs: outputs never overwrite inputs")
        check_file_target(out, what=name)
    if len({o.resolve() for o in given_outputs.values()}) != len(given_outputs):
        raise InputError(f"two of {', '.join(given_outputs)} have the same file name: give each its own")


def check_derived_table(path: Path, ours: Callable[[list[str]], bool], given: bool = False) -> None:
    """Refuse to let the table predict writes replace a file of the user's.

    A re-run replaces the table it wrote before; any other file there (the classes CSV that
    ``train`` read, say) is kept and the run stops before any work, whether the path is named
    after ``--out`` or given by ``--table`` (a ``--table`` typed for ``--labels`` replaced the
    test set's classes: trial 40).

    Parameters
    ----------
    path : Path
        The table's path.
    ours : callable
        Tells from a CSV header (its column names) whether the file is such a table.
    given : bool
        Whether the user named ``path`` with ``--table`` (the message then asks for another name).

    Raises
    ------
    InputError
        ``path`` exists and is not such a table; the message gives a ``--table`` that works.
    """
    import csv

    from napari_medml.errors import InputError

    if not path.exists():
        return
    try:
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        header = []
    if path.is_file() and ours([name.strip() for name in header]):
        return
    other = path.with_name(path.stem + "-predicted.csv")
    columns = f" (its columns: {', '.join(header[:4])}{', ...' if len(header) > 4 else ''})" if header else ""
    if given:
        raise InputError(f"--table '{path}' is a file predict did not write{columns}: it is kept; name the "
                         f"table another file, e.g. --table {other}, or delete it first")
    raise InputError(f"the table would replace '{path}', which predict did not write (a file of yours is kept): "
                     f"name the table with --table, e.g. --table {other}")


def check_bundle_target(out: Path, inputs: Sequence[Path]) -> None:
    """Check a bundle folder before training, so a long run is never lost at the end."""
    from napari_medml.bundles.format import check_bundle_path
    from napari_medml.errors import BundleError

    if any(out.resolve() == p.resolve() for p in inputs):
        raise BundleError(f"--out '{out}' is one of the inputs: outputs never overwrite inputs")
    if any(out.resolve() in p.resolve().parents for p in inputs):
        raise BundleError(f"--out '{out}' holds an input file: give a new or empty folder for the model bundle")
    try:
        check_bundle_path(out)
    except BundleError as exc:
        raise BundleError(f"--out: {exc}") from None


def write_output(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write`` on a temporary name next to ``path``, then rename it into place, so
    a crash or a kill never leaves a truncated output (see ``napari_medml.io.atomic``)."""
    from napari_medml.io.atomic import atomic_path

    lower = path.name.lower()
    suffix = next((e for e in (".nii.gz", ".ome.tiff", ".ome.tif") if lower.endswith(e)), path.suffix)
    with atomic_path(path, suffix=suffix) as tmp:
        write(tmp)
    return path
