"""The one training loop: ``run(task, config)`` is a generator of ``TrainReport``s that
returns the task's best model.

Every task and every front share it: steps and epochs, reports at least every quarter
second with an ETA, Stop and the time limit, mixed precision and gradient clipping,
the schedule, validation at epoch ends, the best state, early stopping, and
checkpoints (``<checkpoint_dir>/best`` on each improvement, ``<checkpoint_dir>/last``
at each epoch end, on Stop and when the generator is closed), and resuming from
``last``. A task supplies the rest (:class:`~napari_medml.engine.task.TrainingTask`);
:mod:`~napari_medml.engine.fit` resumes or starts a task and runs it here.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_medml.config import TrainConfig, to_dict
from napari_medml.engine.devices import amp_enabled, autocast, resolve_device
from napari_medml.engine.distributed import join
from napari_medml.engine.optim import build_optimizer, build_scheduler
from napari_medml.engine.reports import StopToken, TrainReport
from napari_medml.engine.task import Evaluation, TrainingTask

__all__ = ["GRAD_CLIP_NORM", "REPORT_EVERY_S", "Resume", "Trainer", "run"]

REPORT_EVERY_S = 0.25
GRAD_CLIP_NORM = 12.0  # nnU-Net's clipping norm
_STOP_KEYS = ("steps", "elapsed_s", "stopped_in_first_epoch")  # a model stopped within an epoch says these


@dataclass(frozen=True)
class Resume:
    """What a checkpoint's ``train_state`` holds (``bundles.read_checkpoint``)."""

    state: Mapping[str, Any]
    tensors: Mapping[str, torch.Tensor]
    history: list[dict] = field(default_factory=list)
    best: Path | None = None  # the run's ``best`` checkpoint beside ``last`` (None: ``<checkpoint_dir>/best``)


def run(task: TrainingTask, config: TrainConfig, *, stop: StopToken | None = None,
        checkpoint_dir: str | Path | None = None, resume: Resume | None = None,
        provenance: Mapping[str, Any] | None = None) -> Generator[TrainReport, None, Any]:
    """Train ``task.network`` and return the task's model at its best epoch.

    Parameters
    ----------
    task : TrainingTask
        Batches, loss, evaluation and the model object.
    config : TrainConfig
        ``optim`` (epochs, steps, optimizer, schedule, time limit, early stopping),
        ``device`` and ``amp``.
    stop : StopToken, optional
        Stops after the current step, leaving ``last``.
    checkpoint_dir : str or Path, optional
        Where ``best`` and ``last`` go; None keeps no checkpoint on disk.
    resume : Resume, optional
        Continue a run from its ``last`` checkpoint (the task's network already holds
        its weights).
    provenance : Mapping, optional
        Facts stored with the model (split, initial weights, ...).

    Yields
    ------
    TrainReport
        At least every ``REPORT_EVERY_S`` of work and at every epoch end.

    Returns
    -------
    Any
        ``task.model(...)`` with the best epoch's weights.
    """
    trainer = Trainer(task, config, checkpoint_dir=checkpoint_dir, resume=resume, provenance=provenance)
    return (yield from trainer.loop(stop))


class Trainer:
    """One run's loop state; ``loop`` is the generator body (use :func:`run`)."""

    def __init__(self, task: TrainingTask, config: TrainConfig, *, checkpoint_dir: str | Path | None,
                 resume: Resume | None, provenance: Mapping[str, Any] | None) -> None:
        self.task, self.config = task, config
        self.dist = join(config.device)  # None unless torchrun started several processes
        if self.dist is not None:  # rank 0's settings everywhere (a plan timed in each process may differ)
            self.config = config = self.dist.share(config)
        self.device = resolve_device(config.device) if self.dist is None else self.dist.device
        self.amp = amp_enabled(self.device, config.amp)
        self.network = task.network.to(self.device)
        # steps run through DDP's wrapper; the task's own network is saved (no "module." prefixes)
        self.forward = self.network if self.dist is None else self.dist.wrap(self.network, config.seed)
        self.check_draws = self.dist is not None
        self.optimizer = build_optimizer(self.network, config)
        self.total_steps = config.optim.epochs * config.optim.steps_per_epoch
        self.scheduler, self.plateau = build_scheduler(self.optimizer, config, self.total_steps)
        # with a time limit the schedule follows the clock too (engine.optim.ProgressSchedule)
        self.budget_s = None if config.optim.max_minutes is None else config.optim.max_minutes * 60.0
        self.elapsed_before = 0.0  # a resumed run's earlier time counts against the budget
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.params = [p for p in self.network.parameters() if p.requires_grad]
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        if self.dist is not None and not self.dist.main:
            self.checkpoint_dir = None  # rank 0 writes every checkpoint
        self.provenance = dict(provenance or {})
        self.history: list[dict] = []
        self.start_step = 0
        self.steps_done, self.elapsed_done = 0, 0.0  # the last step taken, and the run's seconds then
        self.best_key: tuple[float, ...] | None = None
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_metrics: Mapping[str, Any] = {}
        self.bad_epochs = 0
        if resume is not None:
            self._restore(resume)

    # --- the generator body ---------------------------------------------------------------

    def loop(self, stop: StopToken | None) -> Generator[TrainReport, None, Any]:
        cfg = self.config.optim
        spe = cfg.steps_per_epoch
        start = time.monotonic()
        last_report = -math.inf  # the first step is always reported
        self.note = self.task.start_message()
        if self.dist is not None:
            self.note = "\n".join(m for m in (self.note, self.dist.describe(self.config.data.batch_size)) if m)
        # losses stay on the device until a report reads them: no GPU sync per step
        losses: list[torch.Tensor] = []
        epoch_losses: list[torch.Tensor] = []
        step = self.start_step
        if step > self.total_steps > 0:  # resumed with fewer epochs than it had trained (equal: it finishes)
            from napari_medml.errors import ConfigError

            raise ConfigError(f"the stopped run already trained {step} steps (epoch {(step - 1) // spe + 1}), and "
                              f"epochs {cfg.epochs} x steps_per_epoch {spe} ask for {self.total_steps}: nothing is "
                              f"left to train; give at least {step // spe + 1} epochs to continue it")
        if stop is not None and stop.stopped and self.dist is None:  # stopped while the run was planned
            from napari_medml.errors import NothingLearned

            raise NothingLearned("stopped before the first training step: no model was made")
        self.task.train_mode()
        try:
            while step < self.total_steps:
                step += 1
                self.steps_done = step
                epoch = (step - 1) // spe + 1
                if self.budget_s is not None and self.scheduler is not None:
                    clock = self.elapsed_before + time.monotonic() - start
                    if self.dist is not None:  # one clock for all processes: they keep the same rate
                        clock = self.dist.agree(False, clock)[1]
                    self.scheduler.set_clock(clock / self.budget_s)
                lr = self._lr()  # the rate this step uses
                loss = self._step()
                losses.append(loss)
                epoch_losses.append(loss)
                now = time.monotonic()
                elapsed = self.elapsed_done = self.elapsed_before + now - start
                message, finished, timed_out = "", False, False
                stopped = stop is not None and stop.stopped
                if self.dist is not None:  # all processes stop at the same step, by the slowest clock
                    stopped, elapsed = self.dist.agree(stopped, elapsed)
                    if stopped and stop is not None and not stop.stopped:
                        stop.stop()  # another process was asked: the front saves this run as stopped too
                if stopped:
                    message, finished = "stopped by user", True
                elif self.budget_s is not None and elapsed >= self.budget_s:
                    message, finished = f"time limit of {cfg.max_minutes:.3g} min reached", True
                    timed_out = True
                # the time limit ends an epoch: the final weights (lowest rate) are validated too
                epoch_end = step % spe == 0 or step == self.total_steps or timed_out
                fields: dict[str, Any] = {}
                shown = None  # an epoch's line shows the epoch's mean loss, which judged its best
                if epoch_end:
                    shown = self._mean_all(epoch_losses)
                    fields, early = self._end_epoch(step, epoch, shown, elapsed, lr)
                    epoch_losses = []
                    self.task.train_mode()  # validation left the network in eval mode
                    if early and not finished:
                        message, finished = early, True
                if finished and not epoch_end:
                    self._save_last(step, epoch, elapsed)
                if epoch_end or finished or now - last_report >= REPORT_EVERY_S:
                    if self.note:  # the first report says how the data were split and initialised
                        message, self.note = "\n".join(m for m in (self.note, message) if m), ""
                    eta, progress = None, 1.0
                    if not finished:
                        eta = (now - start) / (step - self.start_step) * (self.total_steps - step)
                        progress = step / self.total_steps
                        if self.budget_s is not None:
                            eta = min(eta, self.budget_s - elapsed)
                            progress = max(progress, min(elapsed / self.budget_s, 1.0))
                    yield TrainReport(step=step, epoch=epoch, total_steps=self.total_steps,
                                      train_loss=_mean(losses) if shown is None else shown, learning_rate=lr,
                                      elapsed_s=elapsed, eta_s=eta, epoch_end=epoch_end, message=message,
                                      progress=progress, time_limit_s=self.budget_s, **fields)
                    losses, last_report = [], now
                if finished:
                    break
        except GeneratorExit:
            # closed from outside (a worker quit): leave a checkpoint, then end quietly; not when
            # Python exits (a script that left its loop with break): nothing can be imported then,
            # and the epoch's checkpoint is there
            if step > self.start_step and not sys.is_finalizing():
                self._save_last(step, (step - 1) // spe + 1, self.elapsed_before + time.monotonic() - start)
            return self._best_model()
        finally:
            if self.dist is not None:
                self.dist.close()
        return self._best_model()

    # --- one step -------------------------------------------------------------------------

    def _step(self) -> torch.Tensor:
        inputs, targets = self.task.next_batch()
        if self.check_draws:  # a task must seed its draws with distributed.data_seed
            self.check_draws = False
            if self.dist.same_everywhere(inputs):
                self.note += ("\nwarning: every process drew the same first batch: this task does not seed its "
                              "draws per process (engine.distributed.data_seed), so the processes repeat each other")
        # plain (pageable) copies: pinning a fresh batch every step costs more than it saves
        inputs = inputs.to(self.device)
        targets = _to(targets, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.amp):
            outputs = self.forward(inputs)
        loss = self.task.loss(_float(outputs), targets)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP_NORM)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP_NORM)
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()

    # --- epoch ends: validation, best state, early stopping, checkpoints ------------------

    def _end_epoch(self, step: int, epoch: int, train_loss: float, elapsed: float,
                   lr: float) -> tuple[dict, str]:
        """Validate, keep the best, record the epoch (``lr``: the rate its last step used, as its line
        shows it), stop early or save a checkpoint."""
        evaluation = self._evaluate()
        key = evaluation.key if evaluation.key is not None else (-train_loss,)
        improved = self.best_key is None or key > self.best_key
        if improved:
            self.best_key, self.best_epoch, self.bad_epochs = key, epoch, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}
            self.best_metrics = {**evaluation.metrics, "epoch": epoch} if evaluation.metrics else {}
        else:
            self.bad_epochs += 1
        if self.plateau is not None:  # it rises with each better epoch: the whole key, as the best epoch's and
            self.plateau.step(self.best_epoch)  # early stopping's (trial 50: the rate fell after a best epoch)
        self.history.append({"epoch": epoch, "step": step, "train_loss": train_loss, "learning_rate": lr,
                             "elapsed_s": elapsed, **evaluation.history})
        if improved and self.checkpoint_dir is not None:
            self._model().save(self.checkpoint_dir / "best")
        self._save_last(step, epoch, elapsed)
        message = ""
        patience = self.config.optim.early_stopping_patience
        if patience is not None and self.bad_epochs >= patience:
            epochs = f"{self.bad_epochs} epoch{'s' if self.bad_epochs != 1 else ''}"
            message = f"early stopping: no improvement for {epochs} (best epoch {self.best_epoch})"
            if evaluation.key is None:  # nothing held out: the judge was the mean training loss
                message = (f"early stopping: the training loss did not improve for {epochs} (best "
                           f"epoch {self.best_epoch}); there is no validation data, so hold some out (val_fraction "
                           "> 0) to stop on unseen data")
        return {**evaluation.report, "best": improved}, message

    # --- models and checkpoints -----------------------------------------------------------

    def _evaluate(self) -> Evaluation:
        if self.dist is None:
            return self.task.evaluate(self.device, self.amp) or Evaluation()
        # rank 0 validates while the others wait here; all then take the same decisions
        # (best epoch, plateau schedule, early stopping) from its evaluation. No gradient: a
        # loss taken with one would wait for the other processes (nn.losses, batch Dice)
        mine = None
        if self.dist.main:
            with torch.no_grad():
                mine = self.task.evaluate(self.device, self.amp) or Evaluation()
        return self.dist.share(mine)

    def _mean_all(self, losses: list[torch.Tensor]) -> float:
        value = _mean(losses)
        return value if self.dist is None else self.dist.mean(value)

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _model(self) -> Any:
        # what ran, where the config leaves it to the run: SGD's default momentum (null), mixed
        # precision asked for but used on CUDA only
        provenance = {**self.provenance, "best_epoch": self.best_epoch,
                      "optimizer": self.config.optim.describe_optimizer(), "mixed_precision": bool(self.amp)}
        if self.checkpoint_dir is not None:
            provenance["checkpoint_dir"] = str(self.checkpoint_dir)
        provenance = {k: v for k, v in provenance.items() if k not in _STOP_KEYS}  # a resumed run's earlier stop
        if self.steps_done > (int(self.history[-1].get("step", 0)) if self.history else 0):
            # stopped within an epoch: the history ends at the last epoch's end (trial 46: "60 steps" for 77)
            provenance.update(steps=self.steps_done, elapsed_s=round(float(self.elapsed_done), 3),
                              **({} if self.history else {"stopped_in_first_epoch": True}))
        return self.task.model(self.history, provenance, self.best_metrics)

    def _best_model(self) -> Any:
        if self.best_state is not None:
            self.network.load_state_dict(self.best_state)
        return self._model()

    def _save_last(self, step: int, epoch: int, elapsed: float = 0.0) -> None:
        if self.checkpoint_dir is None:
            return
        from napari_medml.bundles.checkpoints import write_checkpoint

        scalars = {"step": step, "epoch": epoch, "best_key": list(self.best_key) if self.best_key else None,
                   "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs, "total_steps": self.total_steps,
                   "elapsed_s": float(elapsed), "best_metrics": to_dict(self.best_metrics, default=lambda v: None)}
        write_checkpoint(self._model(), self.checkpoint_dir / "last", self.optimizer,
                         self.plateau or self.scheduler, self.scaler, scalars)

    def _restore(self, resume: Resume) -> None:
        from napari_medml.bundles.checkpoints import optimizer_state

        state = resume.state
        self.start_step = self.steps_done = int(state["step"])
        self.optimizer.load_state_dict(optimizer_state(state, resume.tensors))
        sched = self.plateau or self.scheduler
        if sched is not None and state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        if self.scheduler is not None:  # a run resumed with more (or fewer) epochs follows its new length:
            self.scheduler.total = max(self.total_steps, 1)  # the old one left every added epoch at rate 0
            self.scheduler.set_clock(self.scheduler.clock)  # the first step's rate too
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        key = state.get("best_key")
        if key is None and state.get("best_metric") is not None:  # schema-1 checkpoints
            key = [float(state["best_metric"])]
        self.best_key = tuple(float(k) for k in key) if key is not None else None
        self.best_epoch = int(state.get("best_epoch") or 0)
        self.bad_epochs = int(state.get("bad_epochs") or 0)
        self.elapsed_before = float(state.get("elapsed_s") or 0.0)
        self.history = list(resume.history)
        if self.best_key is not None:
            self._restore_best(resume)

    def _restore_best(self, resume: Resume) -> None:
        """The best epoch's weights and metrics from the run's ``best`` checkpoint: without them a
        resumed run that does not improve would return its last weights as the best epoch's."""
        from napari_medml.bundles.format import read_description, read_weights
        from napari_medml.errors import BundleError

        folder = resume.best
        if folder is None and self.checkpoint_dir is not None:
            folder = self.checkpoint_dir / "best"
        try:
            desc = read_description(folder) if folder is not None else None
            weights = read_weights(folder) if desc is not None else None
        except BundleError:
            desc = weights = None
        saved_epoch = ((desc or {}).get("provenance") or {}).get("best_epoch")
        if weights is None or saved_epoch != self.best_epoch:
            # no best checkpoint, or one a later epoch wrote before a kill stopped ``last`` from
            # following: this run's best so far is unknown, so it chooses again from its own epochs
            self.best_key, self.best_epoch, self.bad_epochs = None, 0, 0
            return
        self.best_state = weights
        metrics = resume.state.get("best_metrics")
        if metrics is None:  # checkpoints from before best_metrics was kept: a classifier's are in its bundle
            metrics = desc.get("metrics") or {}
        self.best_metrics = dict(metrics)


def _mean(losses: list[torch.Tensor]) -> float:
    """Mean of the step losses since the last read (one device-to-host copy)."""
    return float(torch.stack(losses).float().mean()) if losses else float("nan")


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Mapping):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device) for v in obj)
    return obj.to(device) if isinstance(obj, torch.Tensor) else obj


def _float(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):  # deep supervision returns several outputs
        return type(obj)(_float(v) for v in obj)
    return obj.float() if isinstance(obj, torch.Tensor) else obj
