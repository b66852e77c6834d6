"""The one training engine every task runs on.

- :mod:`~napari_medml.engine.reports`: ``TrainReport`` and ``StopToken``;
- :mod:`~napari_medml.engine.task`: the ``TrainingTask`` protocol a task implements;
- :mod:`~napari_medml.engine.loop`: ``run(task, config)``, the loop itself;
- :mod:`~napari_medml.engine.fit`: ``fit_task`` (resume or start a task, then run it),
  which every task's ``fit`` calls, and ``run_to_end``;
- :mod:`~napari_medml.engine.optim`: optimizers and schedules;
- :mod:`~napari_medml.engine.devices`: device choice, mixed precision (autocast), threads;
- :mod:`~napari_medml.engine.windows`: sliding-window counting and the window predictor
  every task's model predicts with;
- :mod:`~napari_medml.engine.distributed`: data-parallel training under torchrun (DDP).

Only ``reports`` and ``task`` are imported here: torch loads when a run starts.
"""

from napari_medml.engine.reports import StopToken, TrainReport
from napari_medml.engine.task import Evaluation, TrainingTask

__all__ = ["Evaluation", "StopToken", "TrainReport", "TrainingTask"]
