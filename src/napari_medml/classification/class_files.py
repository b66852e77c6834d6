"""Class files: one class per sample of a stack, read from a CSV (image-level classification).

:func:`read_class_csv` is what ``train --task classification --level image --classes``
and the Classify widget read; a first column may number the samples (``evaluate`` reads its
truth files with ``evaluation.read_truth_table``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from napari_medml.errors import InputError

__all__ = ["SAMPLE_HEADERS", "read_class_csv"]


def read_class_csv(path: str | Path, n_samples: int, *,
                   class_names: Mapping[int, str] | None = None) -> np.ndarray:
    """Read one class per sample from a CSV file.

    One row per sample; an optional header row; the class is the last column. A first
    column that numbers the samples (0..N-1 or 1..N, each once) puts each class on its
    sample whatever the row order (``index,class`` files); otherwise rows are in stack
    order. An empty cell or 0 means unknown.
    Class names are accepted when ``class_names`` maps them to ids.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    n_samples : int
        Samples in the stack; the file must have exactly this many rows.
    class_names : mapping, optional
        Class id -> name, to read names as ids.

    Returns
    -------
    np.ndarray
        int64 ``(n_samples,)``, 0 = unknown.
    """
    path = Path(path)
    from napari_medml.io.text_tables import read_csv_rows

    rows = read_csv_rows(path, "class file")
    trimmed = list(rows)
    while trimmed and not any(cell.strip() for cell in trimmed[-1]):
        trimmed.pop()  # trailing blank lines, unless they are the missing rows
    if len(rows) != n_samples:
        rows = trimmed
    by_name = {str(v).strip().lower(): int(k) for k, v in (class_names or {}).items()}

    def parse(cell: str, line: int) -> int:
        cell = cell.strip()
        if cell == "":
            return 0
        try:
            value = float(cell)
        except ValueError:
            if cell.lower() in by_name:
                return by_name[cell.lower()]
            raise InputError(
                f"class file '{path.name}' line {line}: {cell!r} is not a class id"
                + (f" or one of the names {sorted(by_name)}" if by_name else "")
                + ": write integer class ids (1, 2, ...; empty or 0 = unknown), one per sample"
            ) from None
        if value != int(value) or value < 0:
            raise InputError(f"class file '{path.name}' line {line}: class {cell!r} must be an integer >= 0")
        return int(value)

    cells = [(row[-1] if row else "") for row in rows]
    start = 0
    if cells:
        try:
            parse(cells[0], 1)
        except InputError:
            start = 1  # a header row
    values = [parse(c, i + 1 + start) for i, c in enumerate(cells[start:])]
    header = rows[0][0] if start and rows[0] and len(rows[0]) > 1 else ""
    order = _sample_order([row[0] if len(row) > 1 else "" for row in rows[start:]], len(values), n_samples,
                          header, path.name)
    if order is not None:  # an index column (0..N-1 or 1..N, any row order): each class to its sample
        placed = [0] * len(values)
        for sample, value in zip(order, values):
            placed[sample] = value
        values = placed
    if len(values) != n_samples:
        raise InputError(
            f"class file '{path.name}' has {len(values)} class rows but the stack has {n_samples} "
            f"samples: give one row per sample (empty or 0 = unknown)"
        )
    return np.asarray(values, dtype=np.int64)


# a first column headed so numbers the samples
SAMPLE_HEADERS = ("sample", "samples", "index", "idx", "id", "#", "n", "image", "slice", "frame", "number", "no")


def _sample_order(first: Sequence[str], n: int, n_samples: int, header: str = "", name: str = "") -> list[int] | None:
    """The sample each row is for, when the first column numbers the samples 0..n-1 or 1..n
    (each once, in any order); None otherwise (rows are in stack order).

    Raises
    ------
    InputError
        A first column that numbers samples but misses some or repeats some: headed
        ``sample``, ``index``... (:data:`SAMPLE_HEADERS`), or, without a header, whole
        numbers nearly all different and nearly all a sample's. Read in stack order, each
        class from the gap on went to the sample before it, without a word (trial 42).
        Another column (a score, a group, a subject's id) is still read in stack order.
    """
    try:
        values = [float(cell) for cell in first]
    except ValueError:
        return None
    if not values or len(values) != n or not all(v.is_integer() for v in values):
        return None
    numbers = [int(v) for v in values]
    for base in (0, 1):
        if sorted(numbers) == list(range(base, n + base)):
            return [k - base for k in numbers]
    named = header.strip().lower() in SAMPLE_HEADERS
    within = sum(0 <= k <= n_samples for k in numbers)
    if not named and (header or len(set(numbers)) < 0.9 * n or within < 0.9 * n):
        return None
    base = 1 if min(numbers) >= 1 else 0
    seen: dict[int, int] = {}
    for k in numbers:
        seen[k] = seen.get(k, 0) + 1
    missing = [k for k in range(base, n_samples + base) if k not in seen]
    repeated = [k for k, c in seen.items() if c > 1]
    outside = [k for k in seen if not base <= k < n_samples + base]
    parts = [f"{_listed(missing)} missing" if missing else "", f"{_listed(repeated)} given twice or more" if repeated
             else "", f"{_listed(outside)} not in the stack" if outside else ""]
    raise InputError(f"class file '{name}' numbers its samples in the first column, but sample "
                     f"{'; '.join(p for p in parts if p)} (the stack has {n_samples}, {base} to "
                     f"{n_samples + base - 1}): give each sample one row, numbered {base} to {n_samples + base - 1} "
                     "(empty or 0 class = unknown), or leave the number column out to give the rows in stack order")


def _listed(numbers: Sequence[int], shown: int = 5) -> str:
    """``5, 7, 9`` or ``5, 7, 9, 11, 13 and 4 more``."""
    numbers = sorted(numbers)
    text = ", ".join(map(str, numbers[:shown]))
    return text + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")
