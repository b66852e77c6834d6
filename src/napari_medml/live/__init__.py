"""Live segmentation: every stroke answered in about a second (issue 10).

``LiveSession`` is the headless core the Live segmentation widget, scripts,
tests and ``benchmarks/bench_live.py`` drive alike. Features and the instant
random-forest stage follow ilastik (Berg et al. 2019, Nature Methods 16:1226)
and scikit-image's ``multiscale_basic_features`` / ``fit_segmenter``.
"""

from __future__ import annotations

from napari_medml.live.features import FeatureConfig, FeatureStack
from napari_medml.live.instant import InstantConfig, Suggestion
from napari_medml.live.session import LiveSession, Superseded

__all__ = ["FeatureConfig", "FeatureStack", "InstantConfig", "LiveSession", "Suggestion", "Superseded"]
