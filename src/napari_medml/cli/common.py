"""Helpers the subcommands share: option plumbing, files, channels, progress."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEVICES",
    "FILE_TYPES",
    "PROG",
    "UsageError",
    "channel_axis_of",
    "check_bundle_target",
    "check_file_targets",
    "given",
    "info",
    "integer",
    "progress_bar",
    "real",
    "spatial_shape",
    "write_like",
]

PROG = "napari-medml"
FILE_TYPES = ".nii, .nii.gz, .tif, .tiff or .npy"
DEVICES = ("auto", "cpu", "cuda", "mps")


class UsageError(Exception):
    """A command line that argparse, or a check across options, rejects."""


def given(**options: Any) -> dict[str, Any]:
    """The options that were given (not None), so config defaults stay the one source."""
    return {k: v for k, v in options.items() if v is not None}


def info(text: str) -> None:
    """One status line on stderr (stdout is kept for results such as JSON)."""
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


def _spatial_ndim(vol: Any) -> int:
    return vol.data.ndim - int(bool(vol.meta.get("rgb")))


def channel_axis_of(vol: Any, spatial_dims: int, path: Path) -> int | None:
    """Where an image file's channels are: none, in front (io's layout) or RGB last.

    Raises
    ------
    MedMLError
        If the array is not a ``spatial_dims``-D image with at most one channel axis.
    """
    from napari_medml.errors import InputError

    if vol.meta.get("rgb"):
        if _spatial_ndim(vol) != spatial_dims:
            raise InputError(f"image '{path}' is RGB with {_spatial_ndim(vol)} spatial axes, "
                             f"but the network is {spatial_dims}D")  # fmt: skip
        return vol.data.ndim - 1
    extra = vol.data.ndim - spatial_dims
    if extra in (0, 1):
        return None if extra == 0 else 0
    raise InputError(f"image '{path}' has shape {vol.data.shape}, which is not a {spatial_dims}D "
                     "image (with at most one channel axis in front)")  # fmt: skip


def spatial_shape(vol: Any, spatial_dims: int, channel_axis: int | None) -> tuple[int, ...]:
    """The spatial part of a volume's shape."""
    shape = list(vol.data.shape)
    if channel_axis is not None:
        del shape[channel_axis]
    return tuple(shape[-spatial_dims:])


def write_like(path: Path, like: Any, data: Any, *, spatial_dims: int, is_labels: bool = False) -> Path:
    """Write ``data`` (spatial, or with a leading channel axis) in the space of ``like``.

    Spacing, origin, affine and format metadata come from the input volume, so the
    output overlays the input exactly in napari or any NIfTI viewer.
    """
    from napari_medml.io import Volume, write_volume

    # io keeps spatial axes last (channels in front; RGB's colour axis has no spacing)
    spacing, origin = tuple(like.spacing[-spatial_dims:]), tuple(like.origin[-spatial_dims:])
    extra = data.ndim - spatial_dims
    meta = {k: v for k, v in like.meta.items() if k != "rgb"}
    volume = Volume(data, (1.0,) * extra + spacing, (0.0,) * extra + origin, like.affine,
                    is_labels, like.name, meta)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_volume(path, volume)


def check_file_targets(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    """Check output file names before the work starts: a bad one must not waste a run."""
    from napari_medml.errors import InputError
    from napari_medml.io import file_format

    resolved_inputs = {p.resolve() for p in inputs}
    for out in outputs:
        file_format(out)  # raises for an unsupported extension
        if out.resolve() in resolved_inputs:
            raise InputError(f"output '{out}' is one of the inputs: outputs never overwrite inputs")
        if out.is_dir():
            raise InputError(f"output '{out}' is a folder: give a file name")
    if len({o.resolve() for o in outputs}) != len(outputs):
        raise InputError("two outputs have the same file name: give each its own")


def check_bundle_target(out: Path, inputs: Sequence[Path]) -> None:
    """Check a bundle folder before training, so a long run is never lost at the end."""
    from napari_medml.errors import BundleError

    if out.exists() and not out.is_dir():
        raise BundleError(f"--out '{out}' is a file: give a folder for the model bundle")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise BundleError(f"--out '{out}' is a folder with other files in it: give a new or empty "
                          "folder, or an earlier bundle to replace")  # fmt: skip
    if any(out.resolve() == p.resolve() for p in inputs):
        raise BundleError(f"--out '{out}' is one of the inputs: outputs never overwrite inputs")


# --- option values: checked when the command line is read, before any work ------------


def integer(low: int, high: int | None = None) -> Any:
    """An argparse ``type`` for an integer in ``[low, high]``; argparse names the option.

    ``--seed -1`` ends with "argument --seed: must be a non-negative integer, got -1".
    """
    import argparse

    kind = ("a non-negative integer" if low == 0 and high is None else "a positive integer" if low == 1
            and high is None else f"an integer from {low} to {high}" if high is not None
            else f"an integer >= {low}")  # fmt: skip

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {kind}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def real(low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False) -> Any:
    """An argparse ``type`` for a finite number in a range (``low_open``: ``> low``)."""
    import argparse
    import math

    if high is None:
        kind = f"a number > {low:g}" if low_open else f"a number >= {low:g}"
        if low == 0:
            kind = "a positive number" if low_open else "a non-negative number"
    else:
        kind = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        bad_low = value <= low if low_open else value < low
        bad_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or bad_low or bad_high:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text}")
        return value

    parse.__name__ = "real"
    return parse
