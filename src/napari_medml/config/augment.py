"""Data augmentation's configuration: how often and how hard each transform acts.

Kept apart from the other configs (re-exported by ``napari_medml.config``); the transforms
themselves are in ``napari_medml.augment``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from napari_medml.errors import ConfigError
from napari_medml.fields import check_fields

__all__ = ["AugmentConfig", "AugmentSpec"]


@dataclass(frozen=True)
class AugmentSpec:
    """How often (``prob``, 0-1) and how hard (``strength``, 1 = default) one transform acts."""

    prob: float = 0.0
    strength: float = 1.0

    def __post_init__(self) -> None:
        check_fields(self)
        if not 0.0 <= self.prob <= 1.0:
            raise ConfigError(f"augmentation probability must be in [0, 1], got {self.prob}")
        if self.strength < 0:
            raise ConfigError(f"augmentation strength must be >= 0, got {self.strength}")


@dataclass(frozen=True)
class AugmentConfig:
    """Data augmentation, applied to image and labels together during training.

    The same object drives the augmentation preview, so what a user previews is
    exactly what training sees. Strength 1 gives the defaults in brackets.
    """

    flip: AugmentSpec = AugmentSpec(0.5, 1.0)  # flip along each spatial axis
    rotate90: AugmentSpec = AugmentSpec(0.25, 1.0)  # quarter turns in the last two axes
    affine: AugmentSpec = AugmentSpec(0.2, 1.0)  # rotate (15 deg) and scale (15 %)
    elastic: AugmentSpec = AugmentSpec(0.0, 1.0)  # smooth elastic deformation
    noise: AugmentSpec = AugmentSpec(0.15, 1.0)  # Gaussian noise (std 0.1)
    smooth: AugmentSpec = AugmentSpec(0.1, 1.0)  # Gaussian blur (sigma 0.5-1)
    contrast: AugmentSpec = AugmentSpec(0.15, 1.0)  # gamma (0.7-1.5)
    intensity: AugmentSpec = AugmentSpec(0.15, 1.0)  # scale and shift (10 %)
    bias_field: AugmentSpec = AugmentSpec(0.0, 1.0)  # smooth multiplicative field

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all."""
        off = AugmentSpec(0.0, 1.0)
        return cls(**{f.name: off for f in dataclasses.fields(cls)})

    @property
    def off(self) -> bool:
        """No transform ever fires: every probability is 0 (whatever the strengths)."""
        return not any(getattr(self, f.name).prob > 0 for f in dataclasses.fields(self))

    def scaled(self, factor: float) -> AugmentConfig:
        """Every probability times ``factor`` (at most 1), the strengths as they are: what the plan
        does to the defaults for a short run (0.25 to 1), and ``train --augment-scale``.

        Parameters
        ----------
        factor : float
            The multiplier, 0 (no augmentation) and up.

        Returns
        -------
        AugmentConfig
        """
        return AugmentConfig(**{f.name: AugmentSpec(min(1.0, getattr(self, f.name).prob * factor),
                                                    getattr(self, f.name).strength)
                                for f in dataclasses.fields(self)})

    def scale_of_defaults(self) -> float | None:
        """The factor :meth:`scaled` would give these probabilities from the defaults, or None when
        they are no such multiple (set one by one); the strengths must be the defaults' too.

        Returns
        -------
        float or None
        """
        base, factors = AugmentConfig(), set()
        for f in dataclasses.fields(self):
            mine, default = getattr(self, f.name), getattr(base, f.name)
            if mine.strength != default.strength or (default.prob == 0 and mine.prob != 0):
                return None
            if default.prob > 0 and mine.prob < 1:
                factors.add(round(mine.prob / default.prob, 6))
        return factors.pop() if len(factors) == 1 else None
