"""The classifier's training defaults, apart from the classifier (no torch): the command
line's help quotes them."""

from __future__ import annotations

__all__ = ["CLASSIFIER_OPTIM"]

# cross-entropy, a cosine schedule, 30 epochs of 20 steps, the best epoch by validation accuracy
CLASSIFIER_OPTIM = {"loss": "ce", "schedule": "cosine", "epochs": 30, "steps_per_epoch": 20,
                    "early_stopping_metric": "val_accuracy"}
