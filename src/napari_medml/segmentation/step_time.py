"""How long one training step of a planned configuration takes on the device (the plan's clock)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from napari_medml.config import TrainConfig

__all__ = ["measure_step", "model_steps_trained", "steps_trained"]

DRAWS = 8  # augmented batches timed
SLOW_S = 1.0  # a warm-up step (or batch) this slow: fewer are timed (trial 48: 242 classes planned for minutes)


def measure_step(config: TrainConfig, in_channels: int, classes: int, spacing: Any, device: Any,
                 check: Any = None) -> float:
    """Seconds of one training step on random data, as the training loop takes it.

    A step is the batch's augmentation (the run's MONAI transforms, on each patch of the
    batch), then forward, loss, backward, gradient clipping and the update. For small
    patches the augmentation is a large share: without it, the plan's step count of a
    2D nuclei member was 1.6 times too high, that of a 3D one twice.

    Parameters
    ----------
    config : TrainConfig
        The trial's patch size, batch size, network and loss.
    in_channels, classes : int
        Input channels and output classes of the network.
    spacing : sequence of float
        Voxel size per spatial axis (for spacing-aware networks).
    device : torch.device
    check : callable, optional
        Called before each timed step and augmented batch; it raises to stop the timing
        (a Stop pressed while planning: a trial took 5.5 s on a busy CPU, trial 39).

    Returns
    -------
    float
        The fastest of three timed steps after a warm-up step (one when the warm-up took
        over ``SLOW_S``, the warm-up itself when it took over ``5 * SLOW_S``), plus the mean
        time of augmenting a batch (over ``DRAWS`` batches, or two when they take over
        ``2 * SLOW_S``), in seconds.
    """
    import time

    import torch

    from napari_medml.engine.devices import autocast, amp_enabled
    from napari_medml.engine.loop import GRAD_CLIP_NORM
    from napari_medml.nn.losses import build_loss
    from napari_medml.nn.segmentation import build_network

    patch = tuple(config.data.patch_size)
    gen = torch.Generator().manual_seed(0)
    net = build_network(config.model, config.data.spatial_dims, in_channels, classes, patch_size=patch,
                        spacing=spacing).to(device)
    amp = amp_enabled(device, config.amp)
    loss_fn = build_loss(config.optim, classes, device)
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    x = torch.randn(config.data.batch_size, in_channels, *patch, generator=gen).to(device)
    y = torch.randint(1, classes + 1, (config.data.batch_size, 1, *patch), generator=gen).to(device)
    times = []
    check = check or (lambda: None)
    for i in range(4):  # the first step warms up allocators and kernels
        if (i == 1 and times[0] > 5 * SLOW_S) or (i == 2 and times[0] > SLOW_S):  # each slow step eats the
            break  # budget: one timed step after a slow warm-up, none after a very slow one (it counts, a bit high)
        check()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast(amp):
            out = net(x)
        loss = loss_fn(out.float(), y - 1, y > 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), GRAD_CLIP_NORM)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:] or times) + _augment_seconds(config, x, y, spacing, check)


def _augment_seconds(config: TrainConfig, x: Any, y: Any, spacing: Any, check: Any) -> float:
    """Mean seconds to augment one batch ``x`` ``(B, C, *patch)``, labels ``y``, as the sampler
    does (``data.PatchSampler.batch``); 0 when the run has no augmentation."""
    import time

    from napari_medml.segmentation.task import training_transform

    patch = tuple(x.shape[2:])
    transform = training_transform(config, ("image", "label"), seed=0, patch_size=patch,
                                   spacing=None if spacing is None else tuple(spacing))
    if transform is None:
        return 0.0
    x, y = x.cpu(), y.cpu().float()
    spent, draws = 0.0, 0
    while draws < DRAWS and not (draws >= 2 and spent > SLOW_S * 2):  # they fire at random: a mean over batches
        check()
        start = time.perf_counter()
        for b in range(x.shape[0]):
            transform({"image": x[b].clone(), "label": y[b].clone()})
        spent += time.perf_counter() - start
        draws += 1
    return spent / draws


def steps_trained(history: Sequence[Mapping[str, Any]], plan: Mapping[str, Any] | None = None,
                  stopped: Mapping[str, Any] | None = None) -> str:
    """How many steps a run trained, and how long a step took against the plan's timing.

    The plan times a step once, before training; on a machine that gets busier the run
    trains fewer steps than the plan said, and this says so.

    Parameters
    ----------
    history : sequence of mapping
        A model's ``history`` (one entry per epoch end, with ``step`` and ``elapsed_s``).
    plan : mapping, optional
        The plan stored with the model (``provenance["plan"]``), for its ``step_seconds``.
    stopped : mapping, optional
        The model's provenance: a run stopped within an epoch records its last ``steps`` and
        ``elapsed_s`` there, past the history's last epoch end.

    Returns
    -------
    str
        E.g. ``"462 steps in 0.3 min (0.039 s a step with validation; the plan timed 0.03 s)"``;
        "" without history.
    """
    if not history:
        return ""
    steps, seconds = int(history[-1].get("step") or 0), float(history[-1].get("elapsed_s") or 0.0)
    if stopped and int(stopped.get("steps") or 0) > steps:
        steps = int(stopped["steps"])
        seconds = seconds if stopped.get("elapsed_s") is None else float(stopped["elapsed_s"])
    if steps <= 0:
        return ""
    text = f"{steps} step{'s' if steps != 1 else ''} in {seconds / 60:.2g} min"
    timed = (plan or {}).get("step_seconds")
    if timed and seconds > 0:
        per = seconds / steps
        text += f" ({per:.2g} s a step with validation; the plan timed {timed:.2g} s"
        if per > 2 * timed:
            text += ": the machine was busier than when the plan timed a step, so fewer steps were trained than planned"
        text += ")"
    return text


def model_steps_trained(model: Any) -> str:
    """:func:`steps_trained` of a trained model (its history and plan); for an ensemble,
    :func:`fold_steps` of its members; for a model stopped before its first epoch ended
    (``provenance["stopped_in_first_epoch"]``), the steps it took (``provenance["steps"]``)."""
    provenance = getattr(model, "provenance", None) or {}
    if "ensemble" in provenance:
        return fold_steps(provenance["ensemble"].get("member_steps"))
    history = getattr(model, "history", None) or []
    if not history and provenance.get("stopped_in_first_epoch") and provenance.get("steps"):
        steps = int(provenance["steps"])
        return (f"{steps} step{'s' if steps != 1 else ''}, stopped before its first epoch ended: never validated, "
                "so these are its last weights")
    return steps_trained(history, provenance.get("plan"), provenance)


def fold_steps(steps: Sequence[int] | None) -> str:
    """``steps per fold: ...`` of an ensemble's members, and a warning when a fold trained
    under half the steps of the one that trained most (its member still counts as much in
    the average); "" without steps (an ensemble saved before they were recorded)."""
    if not steps:
        return ""
    text = f"steps per fold: {', '.join(str(n) for n in steps)}"
    short = [k + 1 for k, n in enumerate(steps) if n < 0.5 * max(steps)]
    if short:
        text += (f". Fold{'s' if len(short) > 1 else ''} {', '.join(map(str, short))} trained under half the steps "
                 "of the others but count as much in the average: give more minutes or fewer folds")
    return text

