"""Semantic segmentation as a task of the engine: patch data and the train/validation
split, the task (loss, validation), the model (sliding-window prediction), post-processing
and metrics (Dice, IoU, HD95)."""
