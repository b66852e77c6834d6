"""How much memory an operation that makes a whole new array may take.

One budget for the widgets (an on-disk layer needed whole) and the core (a resampled
image): a quarter of the memory available now, or ``NAPARI_MEDML_LAYER_MEMORY_MB``.
"""

from __future__ import annotations

import os

__all__ = ["LAZY_ENV", "MEMORY_ENV", "lazy_threshold", "memory_budget", "size_text"]

MEMORY_ENV = "NAPARI_MEDML_LAYER_MEMORY_MB"  # overrides the in-memory budget
LAZY_ENV = "NAPARI_MEDML_LAZY_MB"  # overrides the size above which a file is read lazily
_LAZY_DEFAULT = 2**30  # 1 GiB: about 7 s to read whole, napari frozen meanwhile


def memory_budget() -> int:
    """Bytes one whole array may take: a quarter of the available memory (psutil when
    installed, else the OS's available pages), or ``NAPARI_MEDML_LAYER_MEMORY_MB``."""
    given = os.environ.get(MEMORY_ENV)
    if given:
        return int(float(given) * 2**20)
    try:
        import psutil

        return int(psutil.virtual_memory().available // 4)
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4)


def lazy_threshold() -> int:
    """Bytes (uncompressed) above which a TIFF or plain NIfTI file is read lazily, plane by
    plane as a dask array, instead of whole: 1 GiB or the in-memory budget
    (:func:`memory_budget`), whichever is less, or ``NAPARI_MEDML_LAZY_MB``."""
    given = os.environ.get(LAZY_ENV)
    if given:
        return int(float(given) * 2**20)
    return min(_LAZY_DEFAULT, memory_budget())


def size_text(nbytes: float) -> str:
    """``'3.0 TiB'``, ``'1.5 GiB'``, ``'12 MiB'`` or ``'384 KiB'``."""
    for unit, power in (("TiB", 40), ("GiB", 30)):
        if nbytes >= 2**power:
            return f"{nbytes / 2**power:.1f} {unit}"
    return f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"
