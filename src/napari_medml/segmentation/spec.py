"""The description of a segmentation model: a frozen spec that builds its network and
is its bundle's ``config.json`` (schema 1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from napari_medml.bundles.spec import PatchSpec

__all__ = ["SegmentationSpec"]


@dataclass(frozen=True, kw_only=True)
class SegmentationSpec(PatchSpec):
    """What a segmentation bundle says: the network, its inputs and its classes.

    Attributes
    ----------
    config : TrainConfig
        The configuration it was trained with (preprocessing recipe included).
    in_channels, spatial_dims : int
        Input channels; 2 (``Y, X``) or 3 (``Z, Y, X``).
    normalization : dict
        Learned intensity statistics (``preprocessing.normalization.fit_normalization``).
    patch_size : tuple of int
        The training patch and sliding window (spatial axes).
    spacing : tuple of float or None
        Training voxel size (spatial axes).
    class_ids : tuple of int
        Output channel k -> label id ``class_ids[k]``, background 0 first.

    Examples
    --------
    >>> spec = SegmentationSpec(config=TrainConfig(), class_ids=(0, 5), in_channels=1, spatial_dims=2,
    ...                         patch_size=(64, 64), spacing=(1.0, 1.0),
    ...                         normalization={"method": "none", "channels": [{}]})
    >>> model = Model(spec.build_network(), spec)  # segmentation.model.Model
    >>> model.class_ids, model.description()["out_channels"]
    ((0, 5), 2)
    """

    task = "segmentation"
    what = "a segmentation model"

    class_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set(class_ids=tuple(int(c) for c in self.class_ids))

    def check_values(self) -> None:
        super().check_values()
        if len(set(self.class_ids)) != len(self.class_ids) or min(self.class_ids, default=0) < 0:
            raise ValueError(f"class_ids {list(self.class_ids)} repeat an id or hold one below 0 (each output "
                             "channel gives its own label id)")

    @property
    def out_channels(self) -> int:
        return len(self.class_ids)

    def class_names(self) -> dict[str, str]:
        """Label id (as a JSON key) -> name, from the config's ``class_names`` or generic."""
        names = dict(self.config.class_names or {})
        return {str(c): names.get(c, "background" if c == 0 else f"class {c}") for c in self.class_ids}

    def description_fields(self) -> dict[str, Any]:
        return {"class_ids": list(self.class_ids), "class_names": self.class_names(),
                **super().description_fields()}

    @classmethod
    def arguments(cls, desc: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().arguments(desc), "class_ids": desc["class_ids"]}
