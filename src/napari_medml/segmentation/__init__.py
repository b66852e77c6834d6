"""Semantic segmentation as a task of the engine.

Data: ``prepare`` (inputs to normalised training regions), ``data`` (regions, the
class-balanced patch sampler), ``lazy`` (patches from on-disk images), ``split``
(train/validation blocks), ``fingerprint`` and ``plan`` (the run planned from the data
and the time budget). Training: ``task`` (loss, validation; ``fit``), ``validation``,
``ensemble`` (k folds). The model: ``spec`` (its bundle description), ``model``
(sliding-window prediction), ``prediction``, ``scores``, ``recipes``; block-wise
prediction to Zarr: ``chunked``, ``to_zarr``, ``label_blocks``. Afterwards:
``postprocess`` and ``metrics`` (Dice, IoU, HD95).
"""
