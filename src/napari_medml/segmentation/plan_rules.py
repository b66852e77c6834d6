"""Rules of the plan (``segmentation.plan.make_plan``) that stand alone: the learning rate
for an optimizer, and the patch shape that lets augmentation turn by quarter turns."""

from __future__ import annotations

from collections.abc import Sequence

from napari_medml.config import AugmentConfig
from napari_medml.segmentation.tta import square_pixels

__all__ = ["learning_rate", "quarter_turn_patch"]


SQUARE_KEEPS = 0.45  # the least shorter/longer edge ratio made square (the measured case: 0.48)


def quarter_turn_patch(patch: Sequence[int], spacing: Sequence[float],
                       augment: AugmentConfig) -> tuple[tuple[int, ...], str]:
    """A 2D patch made square (its shorter edge) when the pixels are square and augmentation
    turns by quarter turns, and the words that say so (``""`` when unchanged).

    ``augment.rotate90`` turns a square patch by 90 degrees and a rectangular one by 180 only
    (``augment.transforms``). On the 2D nuclei of ``benchmarks/bench_plan_quality.py`` (4 CPU
    minutes, predicted with test-time augmentation) a square 120x120 patch scored Dice 0.9387
    where the 248x120 one scored 0.9326 (``docs/benchmarks/plan_quality_square_patch.json``).
    Only a patch whose shorter edge is at least ``SQUARE_KEEPS`` of its longer one is made
    square: the gain was measured on a patch that kept 48 % of its area, not on thinner ones.

    Parameters
    ----------
    patch : sequence of int
        The planned ``(Y, X)`` patch, in voxels (3D patches are returned as given).
    spacing : sequence of float
        The training voxel size, same axes.
    augment : AugmentConfig
        The run's augmentation: nothing changes when ``rotate90`` never fires.
    """
    patch = tuple(int(p) for p in patch)
    if len(patch) != 2 or patch[0] == patch[1] or augment.rotate90.prob <= 0 or not square_pixels(spacing):
        return patch, ""
    if min(patch) < SQUARE_KEEPS * max(patch):  # measured at 120/248 = 0.48 only: a thin fold's 12x60 became
        return patch, ""  # 12x12, a fifth of its area and smaller than the objects (review 43)
    edge = min(patch)
    return (edge, edge), ", square so that augmentation's quarter turns turn by 90 degrees, not only 180"


def learning_rate(optimizer: str, schedule: str, warmup: float | None, momentum: float = 0.99) -> tuple[float, str]:
    """The planned rate for ``optimizer`` (and why): SGD 0.01 with Nesterov momentum 0.99
    (nnU-Net's, Isensee et al. 2021); RMSprop 0.001 (torch's usual); Adam and AdamW 0.001
    (Kingma & Ba 2015), doubled under the planned warm-up.

    Parameters
    ----------
    optimizer : {"sgd", "rmsprop", "adam", "adamw"}
    schedule : str
        The planned schedule (``"plateau"`` takes no warm-up).
    warmup : float or None
        The warm-up's share of the run; None: the plan's.
    momentum : float
        SGD's momentum (the words name nnU-Net's 0.99).

    Returns
    -------
    (float, str)
        The rate and why.
    """
    if optimizer == "sgd":
        return 1e-2, "SGD: nnU-Net's rate" + (", with its Nesterov momentum 0.99" if momentum == 0.99 else "")
    if optimizer == "rmsprop":
        return 1e-3, "RMSprop's usual rate"
    name = "AdamW" if optimizer == "adamw" else "Adam"
    warmed = schedule != "plateau" and (warmup is None or warmup > 0)
    return (2e-3, f"{name}; the warm-up allows twice the usual rate") if warmed else (1e-3, f"{name}'s usual rate")
