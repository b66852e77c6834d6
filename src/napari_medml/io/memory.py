"""How much memory an operation that makes a whole new array may take.

One budget for the widgets (an on-disk layer needed whole) and the core (a resampled
image): a quarter of the memory available now, or ``NAPARI_MEDML_LAYER_MEMORY_MB``.
"""

from __future__ import annotations

import os

__all__ = ["MEMORY_ENV", "memory_budget", "size_text"]

MEMORY_ENV = "NAPARI_MEDML_LAYER_MEMORY_MB"  # overrides the in-memory budget


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


def size_text(nbytes: float) -> str:
    """``'3.0 TiB'``, ``'1.5 GiB'``, ``'12 MiB'`` or ``'384 KiB'``."""
    for unit, power in (("TiB", 40), ("GiB", 30)):
        if nbytes >= 2**power:
            return f"{nbytes / 2**power:.1f} {unit}"
    return f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"
