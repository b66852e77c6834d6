"""The plan of a segmentation run: a fingerprint of the training data, the device and
the time budget become the run's choices, as nnU-Net's experiment planner does
(Isensee et al. 2021), scaled to a few minutes on a laptop.

:func:`~napari_medml.segmentation.fingerprint.fingerprint` measures the data (intensities inside the labelled foreground,
spacing and anisotropy, image and object sizes, class frequencies); :func:`make_plan`
turns a fingerprint into a :class:`Plan` (normalisation, network and kernels, patch and
batch size, depth and width, learning rate and schedule over the time budget,
foreground oversampling, augmentation strength), each decision with its reason;
:func:`napari_medml.segmentation.planning.plan_run` does both for the arrays a run
trains on, and under a time limit plans it as one model and as an ensemble
(:mod:`.plan_folds` chooses). ``Plan.apply`` writes the plan into a ``TrainConfig``; every field named in
``keep`` (the options a user set) stays as the user set it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from napari_medml.config import TrainConfig
from napari_medml.segmentation.fingerprint import Fingerprint
from napari_medml.segmentation.margin import planned_margin
from napari_medml.segmentation.plan_rules import (WIDE_STEPS, learning_rate, planned_norm, quarter_turn_patch,
                                                  thin_depth_note, unet_patch, wide_steps)

__all__ = ["PLANNED_FIELDS", "VALIDATIONS", "WIDE_STEPS", "Plan", "changed_fields", "make_plan", "member_minutes"]

# The config fields a plan chooses (dotted names, as in ``keep``).
PLANNED_FIELDS = ("data.normalization", "model.network", "data.patch_size", "data.batch_size", "model.channels",
                  "model.depth", "model.norm", "optim.learning_rate", "optim.schedule", "optim.warmup", "optim.epochs",
                  "optim.steps_per_epoch", "data.foreground_fraction", "data.val_margin", "data.folds", "augment")
ANISOTROPIC = 3.0  # spacing ratio from which a 3D network gets anisotropic kernels (nnU-Net: 3)
VALIDATIONS = 4  # validations over a time budget (each is a sliding-window pass)


@dataclass(frozen=True)
class Plan:
    """A run's choices, why each was made, and which ones the user set.

    Attributes
    ----------
    fingerprint : Fingerprint
    normalization, network : str
    patch_size : tuple of int
    batch_size, channels, depth, epochs, steps_per_epoch : int
    learning_rate, warmup, foreground_fraction, augment_strength : float
    schedule : str
    step_seconds : float or None
        One training step measured on the device (time budgets only).
    val_margin : int
        Training labels left out next to a held-out block (one image).
    kept : tuple of str
        Fields the user set (``PLANNED_FIELDS`` names); they keep the user's value.
    reasons : tuple of str
        One line per decision.
    tta : bool
        Prediction averages over flips (``InferConfig.tta``) unless the user turns it off.
    folds : int
        Models trained on the folds of the data and averaged (1: one model).
    norm : str or None
        The norm layers (``"instance"`` or ``"batch"``); None (plans stored before norm was planned):
        the config's.
    """

    fingerprint: Fingerprint
    normalization: str
    network: str
    patch_size: tuple[int, ...]
    batch_size: int
    channels: int
    depth: int
    learning_rate: float
    schedule: str
    warmup: float
    epochs: int
    steps_per_epoch: int
    foreground_fraction: float
    augment_strength: float
    step_seconds: float | None = None
    val_margin: int = 0
    kept: tuple[str, ...] = ()
    reasons: tuple[str, ...] = field(default=())
    tta: bool = False
    folds: int = 1
    norm: str | None = None

    def apply(self, config: TrainConfig) -> TrainConfig:
        """``config`` with the plan's choices, except the fields in ``kept``."""
        def pick(name: str, planned: Any) -> Any:
            section, attr = name.split(".")
            return getattr(getattr(config, section), attr) if name in self.kept else planned

        data = replace(config.data, normalization=pick("data.normalization", self.normalization),
                       patch_size=pick("data.patch_size", self.patch_size),
                       batch_size=pick("data.batch_size", self.batch_size),
                       foreground_fraction=pick("data.foreground_fraction", self.foreground_fraction),
                       val_margin=pick("data.val_margin", self.val_margin),
                       folds=pick("data.folds", self.folds))
        model = replace(config.model, network=pick("model.network", self.network),
                        channels=pick("model.channels", self.channels), depth=pick("model.depth", self.depth),
                        norm=pick("model.norm", self.norm or config.model.norm))
        optim = replace(config.optim, learning_rate=pick("optim.learning_rate", self.learning_rate),
                        schedule=pick("optim.schedule", self.schedule), warmup=pick("optim.warmup", self.warmup),
                        epochs=pick("optim.epochs", self.epochs),
                        steps_per_epoch=pick("optim.steps_per_epoch", self.steps_per_epoch))
        augment = config.augment if "augment" in self.kept else config.augment.scaled(self.augment_strength)
        return replace(config, data=data, model=model, optim=optim, augment=augment)

    def to_dict(self) -> dict:
        """JSON-able (stored as ``"plan"`` in the bundle's ``config.json``)."""
        from napari_medml.config import to_dict

        return to_dict(self)

    def describe(self) -> str:
        """One readable block: the fingerprint in a line, then each decision with its reason."""
        fp = self.fingerprint
        objects = (f"typical object {'x'.join(f'{e:.0f}' for e in fp.object_extent)} voxels"
                   if fp.labelled_fraction >= 1.0 else  # a scribble's extent is not an object's
                   f"scribbles on {fp.labelled_fraction:.2%} of the voxels (no object size from them)")
        head = (f"plan: {fp.n_images} image(s) of {'x'.join(map(str, fp.shape))} voxels, spacing "
                f"{'x'.join(f'{s:g}' for s in fp.spacing)} (anisotropy {fp.anisotropy:.1f}), {fp.modality}, "
                f"classes {_fractions(fp.class_fractions)}, {objects}")
        return "\n".join([head, *(f"  {line}" for line in self.reasons)])


def _fractions(fractions: Sequence[float], shown: int = 8) -> str:
    """Each class's share of the labelled voxels; past ``shown`` classes, their count."""
    text = " / ".join(f"{100 * f:.1f}%" for f in fractions[:shown])
    return text if len(fractions) <= shown else f"{text} / ... ({len(fractions)} classes)"


def member_minutes(config: TrainConfig) -> float | None:
    """The minutes one model of the run may train: ``optim.max_minutes`` (the whole run's
    wall-clock budget) shared by the ``data.folds`` models of an ensemble; None without a limit."""
    minutes = config.optim.max_minutes
    return None if minutes is None else minutes / max(1, config.data.folds)


def changed_fields(config: TrainConfig, reference: TrainConfig | None = None) -> frozenset[str]:
    """The ``PLANNED_FIELDS`` whose value in ``config`` differs from ``reference`` (defaults)."""
    reference = reference or TrainConfig()
    out = set()
    for name in PLANNED_FIELDS:
        if name == "augment":
            if config.augment != reference.augment:
                out.add(name)
            continue
        section, attr = name.split(".")
        if getattr(getattr(config, section), attr) != getattr(getattr(reference, section), attr):
            out.add(name)
    return frozenset(out)


def make_plan(fp: Fingerprint, config: TrainConfig, *, device: str = "cpu", keep: Sequence[str] = (),
              step_seconds: Callable[[TrainConfig], float] | None = None,
              val_voxels: int = 0, _width: tuple[int, str] | None = None) -> Plan:
    """Choose a run's settings from a fingerprint, the device and ``config.optim.max_minutes``.

    Parameters
    ----------
    fp : Fingerprint
    config : TrainConfig
        The user's config; fields named in ``keep`` are not planned.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"mps"`` (the resolved device's type).
    keep : sequence of str
        ``PLANNED_FIELDS`` the user set.
    step_seconds : callable, optional
        Measures one training step of a config on the device (time budgets only; without
        it, 0.5 s is assumed).
    val_voxels : int
        Voxels a validation pass predicts (to budget the time validation takes).

    Returns
    -------
    Plan
    """
    from napari_medml.nn.strides import fit_thin_axes, patch_fits
    from napari_medml.segmentation.data import auto_patch_size

    keep = tuple(k for k in PLANNED_FIELDS if k in set(keep))
    if (_width is None and config.optim.max_minutes is not None and device == "cpu"
            and step_seconds is not None and "model.channels" not in keep):
        # width from the steps the budget allows: 16 channels when they still take wide_steps(norm) steps
        # (small images: 0.02-0.05 s a step), else 8: twice the steps, a larger patch (a brain MRI: ~0.2 s)
        args = dict(device=device, keep=keep, step_seconds=step_seconds, val_voxels=val_voxels)
        fill = "CPU with a time limit: the steps at this width fill it (<wanted>)"
        wide = make_plan(fp, config, **args, _width=(16, fill))
        want = wide_steps(wide.norm or "instance")
        wanted = f"{want} wanted" + (" with batch norm" if want != WIDE_STEPS else "")
        def budget_steps(plan: Plan) -> int:
            return int(member_minutes(config) * 60 / max(plan.step_seconds or 0.5, 1e-6))

        steps16 = budget_steps(wide)
        filled = f"about {steps16} steps, {wanted}"
        wide = replace(wide, reasons=tuple(r.replace("<wanted>", filled) for r in wide.reasons))
        fill = fill.replace("<wanted>", filled)
        if steps16 >= want:
            return wide
        narrow = make_plan(fp, config, **args, _width=(8, f"CPU with a time limit: 16 channels would take only "
                                                          f"{steps16} steps, {wanted}; 8 take <n>"))
        narrow_steps = budget_steps(narrow)
        # 8 channels buy a larger patch: on a short budget (or a busy machine) it can cost steps; the line
        # says how much larger, so that fewer steps do not read as a contradiction
        larger = math.prod(narrow.patch_size) / max(math.prod(wide.patch_size), 1)
        if larger <= 1 and narrow_steps < steps16:  # trial 39: "8 take about 182, on larger patches" (no larger)
            why = (f"CPU with a time limit: {steps16} steps, {wanted}, but 8 channels would take "
                   f"about {narrow_steps}, on patches no larger")
            return replace(wide, reasons=tuple(r.replace(fill, why) for r in wide.reasons))
        said = (f"about {narrow_steps}" + (", on larger patches" if larger > 1 else "") if narrow_steps >= steps16
                else f"about {narrow_steps}, fewer but on patches {larger:.1f}x as large (more voxels a step)")
        return replace(narrow, reasons=tuple(r.replace("<n>", said) for r in narrow.reasons))
    reasons: list[str] = []
    d, o = config.data, config.optim
    dims = fp.spatial_dims
    minutes = member_minutes(config)  # with --folds, each member's share of the budget
    budgeted = minutes is not None
    gpu = device != "cpu"

    def note(name: str, planned: Any, why: str, label: str | None = None) -> Any:
        section, attr = name.split(".") if "." in name else (name, None)
        label = label or (attr or section).replace("_", " ")
        if name in keep:
            value = getattr(getattr(config, section), attr) if attr else None
            reasons.append(f"{label}: {_show(value) if attr else 'as set'} (set by you; plan: {_show(planned)})")
            return value if attr else planned
        reasons.append(f"{label}: {_show(planned)} ({why})")
        return planned

    # intensities: CT in HU is clipped to the foreground's range; a constant background
    # (skull-stripped MRI, padded images) is left out of the statistics
    if fp.modality == "ct":
        # the channel that looks like CT (review 43: channel 0's 0..1 was quoted beside a CT channel 1)
        k, c = next((k, c) for k, c in enumerate(fp.channels) if c.low <= -500 and c.high >= 100)
        which = f"channel {k}'s " if len(fp.channels) > 1 else ""
        each = ", each channel with its own" if len(fp.channels) > 1 else ""
        normalization = note("data.normalization", "ct", f"{which}Hounsfield range {c.low:.0f}..{c.high:.0f}: clip "
                             f"to the foreground's 0.5-99.5 percentiles {c.fg_low:.0f}..{c.fg_high:.0f}, then "
                             f"z-score with the foreground's mean and std{each}")
    elif any(c.at_min >= 0.2 for c in fp.channels):
        share = max(c.at_min for c in fp.channels)
        normalization = note("data.normalization", "zscore_nonzero", f"{100 * share:.0f}% of the voxels are a "
                             "constant background: z-score with the mean and std of the rest")
    else:
        normalization = note("data.normalization", "zscore", "MRI/microscopy: z-score over the images")

    anisotropic = dims == 3 and fp.anisotropy >= ANISOTROPIC
    network = note("model.network", "dynunet" if anisotropic else "unet",
                   f"anisotropy {fp.anisotropy:.1f} >= {ANISOTROPIC:g}: kernels and strides follow the spacing, "
                   "no resampling" if anisotropic else f"spacing ratio {fp.anisotropy:.1f}: isotropic 3x3 kernels")

    # width: on a CPU under a time limit, compute per step grows with channels^2; a
    # narrower network takes more steps and larger patches in the same minutes
    planned_channels, why_width = _width or ((32, "GPU: nnU-Net's width") if gpu else
                                             (8, "CPU with a time limit") if budgeted else (16, "CPU"))
    channels = note("model.channels", planned_channels, why_width, "width (channels)")

    # patch: the largest for the device (a CPU's cap is time per step, not memory)
    from napari_medml.engine.devices import CPU_PATCH_VOXELS

    cap = None if gpu else CPU_PATCH_VOXELS[dims] * (2 if channels <= 8 else 1)
    region = fp.train_shape
    pooled_axes = [a for a, sp in enumerate(fp.spacing) if not anisotropic or sp / min(fp.spacing) < ANISOTROPIC]
    # dynunet does not pool an axis under 8 voxels: those do not limit its depth (review 44)
    pooled_axes = [a for a in pooled_axes if network != "dynunet" or region[a] >= 8] or pooled_axes
    user_depth = config.model.depth if "model.depth" in keep else None

    def depth_for(sizes: Sequence[int]) -> int:  # down to about 4 voxels at the bottom
        return max(2, min(5, 1 + int(math.log2(max(min(sizes[a] for a in pooled_axes), 4) / 4))))

    divisor = 2 ** ((user_depth or min(4, depth_for(region))) - 1)
    # smaller than the training region along every axis longer than the network's multiple, so that random crops
    # vary where the image sits (a window covering a small image whole scored 0.03-0.04 Dice lower in the same minutes:
    # real 2D and 3D nuclei, bench_plan_quality.py); shorter axes are padded; the largest within memory and CPU caps
    start = [divisor if r <= divisor else (r - 1) // divisor * divisor for r in region]
    patch = auto_patch_size(start, fp.spacing, dims, d.memory_budget_mb, divisor,
                            bytes_per_voxel=96.0 * channels * 2, max_voxels=cap)
    # dynunet pools a thin axis less: 3 slices take a 3-slice patch, not 8 (review 43, fault 7)
    patch = fit_thin_axes(patch, region, replace(config.model, network=network, depth=divisor.bit_length()), fp.spacing)
    if all(p >= r for p, r in zip(patch, region)):
        why = f"the whole training region {'x'.join(map(str, region))}, padded to the network's multiple"
    else:
        why = ("random crops of the training region, the largest that fit the memory budget"
               + (" and the CPU's voxel cap" if cap else "")
               + ("; coarse axes get fewer voxels" if max(fp.spacing) > min(fp.spacing) else ""))
        patch, square = quarter_turn_patch(patch, fp.spacing, config.augment)
        why += square
    patch = tuple(int(p) for p in note("data.patch_size", tuple(int(p) for p in patch), why))
    # one image in one patch: a batch of 2 would be the same window twice
    single = fp.n_images == 1 and all(p >= r for p, r in zip(patch, region))
    # batch norm over one window: its statistics are one sample's, and none at a one-voxel bottom level
    single = single and config.model.norm != "batch"
    batch = note("data.batch_size", 1 if single else 2,
                 "the patch holds the whole image" if single else
                 "nnU-Net's minimum; smaller steps, more of them" + ("; batch norm needs two samples a step"
                                                                     if config.model.norm == "batch" else ""))
    norm = note("model.norm", *planned_norm(gpu, batch, budgeted=budgeted), "norm layers")
    # the depth for what a window holds: a patch set larger than a thin region is mostly padding
    # there, and the shallower depth that implies keeps the smaller patch the run then suggests
    held = [min(p, r) for p, r in zip(patch, region)]
    depth = wanted = depth_for(held)
    def fits(depth: int) -> bool:
        return patch_fits(replace(config.model, network=network, depth=depth), patch, fp.spacing)
    while depth > 2 and not fits(depth):
        depth -= 1
    if network == "dynunet" and depth < 3 and fits(3):
        depth = 3  # DynUNet needs three levels
    if network == "dynunet" and min(depth, user_depth or depth) < 3 and "model.network" not in keep:
        depth = min(depth, user_depth or depth)
        # two levels (set by you, or a thin patch): DynUNet cannot be built; the U-Net can
        network = "unet"
        patch = unet_patch(patch, depth, reasons, "data.patch_size" in keep)
        reasons[:] = [r if not r.startswith("network:") else
                      f"network: unet (anisotropic, but {depth} levels are too few for dynunet's spacing-aware "
                      "strides)" for r in reasons]
    pooled = min(held[a] for a in pooled_axes)
    why_depth = f"down to about {pooled / 2 ** (depth - 1):.3g} voxels at the bottom of a {pooled}-voxel axis"
    if depth < wanted:  # trial 39: it said 4 voxels where 31 were left
        why_depth += f"; {wanted} levels would need a patch that divides by {2 ** (wanted - 1)}"
    if depth <= 2 and pooled < 8:  # too thin to reach 4 voxels at the bottom: the fewest levels, and why
        why_depth = thin_depth_note(pooled, region, fp.shape)
    depth = note("model.depth", depth, why_depth, "depth (levels)")

    foreground = sum(fp.class_fractions[1:])
    fg_fraction = note("data.foreground_fraction", 0.5 if foreground < 0.25 else 1 / 3,
                       f"foreground is {100 * foreground:.0f}% of the labelled voxels"
                       + (": oversample it" if foreground < 0.25 else ": nnU-Net's third"),
                       "foreground patches")

    margin, why_margin = planned_margin(fp.shape, fp.train_shape, fp.n_images, d.folds, d.val_fraction, patch,
                                        d.sample_groups)
    margin = note("data.val_margin", margin, why_margin, "validation margin")

    planned_lr, why_lr = learning_rate(o.optimizer, o.schedule if "optim.schedule" in keep else "poly", o.warmup
                                        if "optim.warmup" in keep else None, o.momentum_in_use)
    reasons.append(f"optimizer: {o.describe_optimizer()}")
    lr = note("optim.learning_rate", planned_lr, why_lr)
    counted = budgeted and "optim.epochs" in keep  # u32: your epochs may end first (planned ones never do)
    schedule = note("optim.schedule", "poly", "nnU-Net's decay to 0" + (
        " over the time budget, or your epochs' steps if they end first" if counted else
        " over the time budget" if budgeted else " over the planned steps"))
    warmup = note("optim.warmup", 0.0 if schedule == "plateau" else 0.05, "the plateau schedule has none: it halves "
                  "the rate when validation stops improving" if schedule == "plateau" else "linear warm-up over the "
                  "first 5% of the run")

    seconds = None
    if budgeted:
        trial = replace(config, data=replace(d, patch_size=tuple(patch), batch_size=batch),
                        model=replace(config.model, network=network, channels=channels, depth=depth, norm=norm))
        seconds = float(step_seconds(trial)) if step_seconds is not None else 0.5
        # a validation pass: about a forward pass (a third of a step) per window, windows overlapping by half
        per_val = val_voxels / max(math.prod(patch) * batch, 1) * 2 ** dims / 2 * seconds / 3
        train_s = max(minutes * 60 - VALIDATIONS * per_val, minutes * 30)
        steps = max(int(train_s / seconds), VALIDATIONS)
        checks = min(VALIDATIONS, steps // max(5, steps // VALIDATIONS))  # epochs of at least 5 steps
        spe = note("optim.steps_per_epoch", max(5, steps // VALIDATIONS),
                   f"a step takes {seconds:.2f} s here: about {steps} steps in {minutes:.3g} min"
                   + (f" (each of the {d.folds} folds' share of {o.max_minutes:.3g} min)" if d.folds > 1 else "")
                   + (f", validated {checks} time{'s' if checks != 1 else ''} and at the time limit" if checks
                      else ", validated at the time limit"))
        # the clock ends the run; the step count stays out of its way (a measurement on a
        # busy machine can be several times off)
        epochs = note("optim.epochs", max(20, 10 * math.ceil(steps / spe)), "the time limit ends the run")
    else:
        steps = o.epochs * o.steps_per_epoch
        default = "the default with no time limit: set it, or give a time limit to plan it"
        spe = note("optim.steps_per_epoch", o.steps_per_epoch, default)
        epochs = note("optim.epochs", o.epochs, default)
    strength = min(1.0, max(0.25, steps / 2000))
    if "augment" in keep:  # trial 44: "as set" hid the value of --augment-scale 0.3
        scale = config.augment.scale_of_defaults()
        said = "as set" if scale is None else f"{scale:.2f} of the default probabilities"
        reasons.append(f"augmentation: {'off' if config.augment.off else said} (set by you; plan: {strength:.2f})")
    else:
        reasons.append(f"augmentation: {strength:.2f} of the default probabilities (about {steps} steps: "
                       "short runs learn the data before its variations)")
    # nnU-Net mirrors at inference by default; on the real images of bench_plan_quality.py one
    # flip per axis raised Dice by 0.002-0.007 for 1-2x the prediction time
    reasons.append("test-time augmentation: on when predicting (the image and its flip along each axis, averaged, "
                   "as nnU-Net mirrors; in 2D, on square patches of square pixels, its 8 orientations; "
                   "predict --no-tta or the Predict widget's box turns it off)")
    return Plan(fp, normalization, network, tuple(int(p) for p in patch), int(batch), int(channels), int(depth),
                float(lr), schedule, float(warmup), int(epochs), int(spe), float(fg_fraction), float(strength),
                seconds, int(margin), keep, tuple(reasons), tta=True, folds=d.folds, norm=norm)


# --- helpers -------------------------------------------------------------------------------



def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
