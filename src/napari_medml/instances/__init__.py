"""Instance segmentation of touching objects: targets, post-processing, metrics, measurements.

Each object gets its own id. A network learns a target derived from an instance
Labels layer (:mod:`.targets`); its outputs become instances again by a seeded
watershed whose parameters can change without re-running the network
(:mod:`.postprocess`); :mod:`.metrics` scores instances the way the field does
(StarDist / Cellpose / Data Science Bowl 2018) and :mod:`.measure` makes the
per-object table a napari Labels layer shows as ``features``.

Only numpy, SciPy and scikit-image are imported here: no torch, no Qt.
"""

from __future__ import annotations

__all__: list[str] = []
