"""Rules of the plan (``segmentation.plan.make_plan``) that stand alone: the learning rate
for an optimizer, the norm layers, and the patch shape that lets augmentation turn by quarter turns."""

from __future__ import annotations

from collections.abc import Sequence

from napari_medml.config import AugmentConfig
from napari_medml.segmentation.tta import square_pixels

__all__ = ["WIDE_STEPS", "learning_rate", "planned_norm", "quarter_turn_patch", "thin_depth_note", "unet_patch",
           "wide_steps"]


# steps within a CPU budget from which 16 channels beat 8 (bench_plan_quality.py). Steps are
# timed with their augmentation: 3D nuclei members take about 3100 at 16 channels, a brain
# MRI about 2000 in 4 min (3000 before the augmentation was timed too, when a member took ~7000)
WIDE_STEPS = 2500
WIDE_STEPS_BATCH_NORM = 1500  # the same with batch norm: see wide_steps
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


def planned_norm(gpu: bool, batch: int, processes: int | None = None, *, budgeted: bool = True) -> tuple[str, str]:
    """The norm layers for a run, and why.

    On a CPU under a time limit, batch norm over the batch's windows scored higher than nnU-Net's
    instance norm on all three real images of ``benchmarks/bench_plan_quality.py`` (4 min, seed 0:
    brain MRI 0.957 -> 0.960, 3D nuclei 0.904 -> 0.908, 2D nuclei 0.939 -> 0.940, and on seed 1
    in 2D), with fewer steps, not more; an instance model of the touching-objects phantom scored
    the same in 0.5 min (mean AP 0.965 against 0.966). Everything else keeps nnU-Net's instance
    norm: one window a step (batch norm would take one sample's statistics); GPU runs and runs
    without a time limit (not measured; a 120-step instance run of the command line's tests fell
    from F1 0.6 to 0.15 with batch norm); several processes, whose batch norms would each keep their
    own statistics (PyTorch synchronises them on GPUs only).

    Parameters
    ----------
    gpu : bool
        The run trains on a GPU.
    batch : int
        Windows a step (the planned batch size, per process).
    processes : int, optional
        Processes training together (None: torchrun's ``WORLD_SIZE``, 1 without it).
    budgeted : bool
        The run has a time limit (``--max-minutes``).
    """
    from napari_medml.engine.distributed import world_size

    processes = world_size() if processes is None else processes
    why = ("one window a step" if batch < 2 else "GPU" if gpu else f"{processes} processes" if processes > 1 else
           "no time limit: batch norm was measured within one" if not budgeted else "")
    if not why:
        return "batch", ("on a CPU, batch norm over the batch's windows learned more in the same minutes than "
                         "instance norm (real brain MRI and nuclei, bench_plan_quality.py)")
    return "instance", f"nnU-Net's; {why}"


def wide_steps(norm: str) -> int:
    """The least steps a CPU time budget must allow a 16-channel network for the plan to take
    16 channels rather than 8 (which buy twice the steps and a larger patch).

    With instance norm, ``WIDE_STEPS``. Batch norm learns in fewer steps: on the 2D nuclei of
    ``benchmarks/bench_plan_quality.py`` (4 CPU minutes, 4 folds of about 2400 planned steps at
    16 channels) 16 channels scored Dice 0.9412, 0.9410, 0.9408 on seeds 0, 1, 2 where 8 scored
    0.9398, 0.9394, 0.9405; on the brain MRI (about 1600 steps at 16 channels) 0.9606 where 8
    scored 0.9605. Hence ``WIDE_STEPS_BATCH_NORM``; with it the plan scored 0.9413 on the 2D
    nuclei and 0.9626 on the brain (``docs/benchmarks/plan_quality_width.json``).

    Parameters
    ----------
    norm : {"instance", "batch"}
        The planned norm layers.
    """
    return WIDE_STEPS_BATCH_NORM if norm == "batch" else WIDE_STEPS


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


def unet_patch(patch: Sequence[int], depth: int, reasons: list[str], set_by_user: bool) -> tuple[int, ...]:
    """The patch of a run planned for DynUNet that falls back to the U-Net (too few levels for
    DynUNet): DynUNet leaves an axis under 8 voxels unpooled, so a thin axis may be cut to 1
    voxel (``nn.strides.fit_thin_axes``), but the U-Net halves every axis at each level, so each
    is padded up to a multiple of ``2 ** (depth - 1)`` (trial 49: 62x1x1 for a 2-level U-Net, and a
    loss of two shapes). ``reasons``' patch line says the new patch; the user's patch is kept.

    Parameters
    ----------
    patch : sequence of int
        Voxels per spatial axis.
    depth : int
        The U-Net's levels.
    reasons : list of str
        The plan's lines so far, changed in place.
    set_by_user : bool
        The patch is the user's (``data.patch_size`` given).

    Returns
    -------
    tuple of int
    """
    factor = 2 ** max(depth - 1, 0)
    fitted = tuple(-(-int(p) // factor) * factor for p in patch)
    if set_by_user or fitted == tuple(patch):
        return tuple(patch)
    old = f"patch size: {'x'.join(map(str, patch))} ("
    new = f"patch size: {'x'.join(map(str, fitted))} ("
    padded = f"; each axis padded to the U-Net's multiple of {factor})"
    reasons[:] = [new + r[len(old):].removesuffix(")") + padded if r.startswith(old) else r for r in reasons]
    return fitted


def thin_depth_note(pooled: int, region: Sequence[int], shape: Sequence[int] | None = None) -> str:
    """Why a run has the fewest levels (2): its windows hold ``pooled`` voxels along the thinnest
    pooled axis; a thin volume may segment better slice by slice, and a "volume" one voxel along
    two axes is most likely an image whose axes were read otherwise (trial 49: a 64x64 image
    stored as x=1, y=1, z=64, t=64 trained as 64 lines of 64 voxels).

    Parameters
    ----------
    pooled : int
        Voxels a window holds along its thinnest pooled axis.
    region : sequence of int
        The training region, voxels per spatial axis.
    shape : sequence of int, optional
        The images' shape (the line's length; the region is shorter by the validation block).

    Returns
    -------
    str
    """
    voxels = f"{pooled} voxel{'s' if pooled != 1 else ''}"
    line = f"the fewest levels: a training window holds {voxels} along its thinnest axis"
    if len(region) == 3 and sum(int(r) == 1 for r in region) >= 2:
        return (f"{line}; each image is a line of {max(shape or region)} voxels: if it is an image stored along "
                "other axes, say which axis is which (train --axes)")
    if len(region) == 3 and pooled < 4:
        return f"{line}; a volume this thin may segment better slice by slice (--spatial-dims 2; the widget's 2D/3D)"
    return line
