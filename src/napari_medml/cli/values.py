"""argparse ``type`` functions: option values checked when the command line is read, before
any work, so a bad value ends with argparse's one line naming the option."""

from __future__ import annotations

from typing import Any

from napari_medml.cli.common import UsageError

__all__ = ["check_patch_option", "integer", "real"]


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


def check_patch_option(patch: list[int] | None, spatial_dims: int, depth: int | None,
                       network: str | None = None) -> list[int] | None:
    """``--patch-size``: one number for every spatial axis (as the widgets take it) or one per
    axis, each a multiple of ``2 ** (depth - 1)``; returns one number per axis (None: not given).

    ``depth`` None: the plan chooses it, and takes a depth that divides the patch, down to
    2 levels: each axis must then be even. ``network`` "dynunet": pools a thin or coarse
    axis less, by a factor that depends on the spacing; the run checks each axis's factor
    (``nn.strides.patch_divisors``), so only the count of numbers is checked here.
    """
    if not patch:
        return patch
    if len(patch) == 1:
        patch = list(patch) * spatial_dims
    if len(patch) != spatial_dims:
        # from the numbers given (trial 44: a fixed 32 32 32 was larger than the image it was given for)
        example = ([patch[0]] * (spatial_dims - len(patch)) + list(patch))[-spatial_dims:]
        raise UsageError(f"--patch-size {' '.join(map(str, patch))} has {len(patch)} numbers but the "
                         f"{spatial_dims}D network needs {spatial_dims}, one per spatial axis "
                         f"({' '.join('ZYX'[-spatial_dims:])}) or one for all: e.g. --patch-size "
                         f"{' '.join(map(str, example))}")  # fmt: skip
    divisor = 2 ** ((depth or 2) - 1)
    if network != "dynunet" and any(p % divisor for p in patch):
        fit = " ".join(str(max(divisor, p // divisor * divisor)) for p in patch)
        why = (f"2 ** (depth - 1) for --depth {depth}" if depth else
               "the planned network halves each axis at least once")
        if spatial_dims == 3:  # review 43: a thin, anisotropic volume's odd slice count
            why += "; --network dynunet pools a thin or coarse axis less"
        raise UsageError(f"--patch-size {' '.join(map(str, patch))} must be divisible by {divisor} ({why}): "
                         f"use --patch-size {fit}" + (", or a smaller --depth" if depth else ""))  # fmt: skip
    return patch
