"""A job's results are of the data its layers held when it started: a layer given new data
while the job ran (``layer.data = ...``, e.g. a script or another plugin replacing it) gets
no result of the old data laid on the new (trial 49: a prediction of the old pixels was shown
on the new ones, without a word)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["HeldData", "new_data_line"]


class HeldData:
    """The data objects of ``layers`` at a job's start, to tell which were replaced since.

    napari replaces a layer's data object when it is given new data, and keeps it through
    edits in place (painting), so identity tells the two apart without reading any voxel.
    """

    def __init__(self, layers: Iterable[Any]) -> None:
        unique = {id(layer): layer for layer in layers if layer is not None}  # a chosen layer may be its own raw one
        self._held = [(layer, layer.data) for layer in unique.values()]

    def replaced(self) -> list[str]:
        """The names of the layers holding another data object than at the start."""
        return [layer.name for layer, data in self._held if layer.data is not data]


def new_data_line(names: list[str], result: str, kind: str = "image") -> str:
    """The line for results not shown because their image(s) got new data (``result``: "its
    prediction"; ``kind``: what the layers are, "layer" for images and labels)."""
    which = ", ".join(f"'{n}'" for n in names)
    return (f"{kind} {which} got new data while the job ran: {result} (of the data it had) is not shown; run it "
            "again on the new data")
