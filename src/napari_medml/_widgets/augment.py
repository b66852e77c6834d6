"""Augmentation widget: probability and strength of every transform, and a preview.

The values form the viewer session's :class:`~napari_medml.config.AugmentConfig`, the
very object the train widget trains with; Preview draws samples through
:func:`napari_medml.augment.preview`, the training pipeline.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import napari
from magicgui.widgets import (
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    PushButton,
    SpinBox,
    create_widget,
)

from napari_medml._widgets._layers import (
    check_on_image,
    image_array,
    is_lazy_layer,
    labels_array,
    layer_spatial,
    require,
    show_result,
    visible_region,
)
from napari_medml._widgets._runner import Runner, notify_errors
from napari_medml._widgets._session import session_for
from napari_medml.config import AugmentConfig, AugmentSpec
from napari_medml.layer_data import result_layer_data

if TYPE_CHECKING:
    import numpy as np

__all__ = ["AugmentWidget"]

FIELDS = tuple(f.name for f in dataclasses.fields(AugmentConfig))
PATCH_EDGE = {2: 512, 3: 96}  # on-disk (dask/zarr) layers: the preview draws from this patch where the viewer looks


class AugmentWidget(Container):
    """Edit the session's AugmentConfig and preview it on an image and its labels."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        # napari's Plugins menu passes the viewer as ``napari_viewer`` (npe2 widget class)
        super().__init__()
        from napari_medml.augment import AUGMENT_DESCRIPTIONS

        viewer = napari_viewer
        self._viewer = viewer
        self._session = session_for(viewer)
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.label_layer = create_widget(annotation=napari.layers.Labels, label="labels")
        self.spatial_dims = ComboBox(choices=["auto", "2D", "3D"], value="auto", label="2D/3D",
                                     tooltip="2D on a 3D image augments each slice on its own.")
        self.specs: dict[str, tuple[FloatSlider, FloatSpinBox]] = {}
        rows = []
        current = self._session.augment
        for name in FIELDS:
            spec: AugmentSpec = getattr(current, name)
            tip = AUGMENT_DESCRIPTIONS.get(name, "")
            prob = FloatSlider(value=spec.prob, min=0.0, max=1.0, step=0.05, label="p",
                               tooltip=f"{name}: probability. {tip}")
            strength = FloatSpinBox(value=spec.strength, min=0.0, max=5.0, step=0.1,
                                    label="strength", tooltip=f"{name}: strength. {tip}")
            prob.changed.connect(self._store)
            strength.changed.connect(self._store)
            self.specs[name] = (prob, strength)
            rows.append(Container(widgets=[prob, strength], layout="horizontal", labels=False,
                                  label=name.replace("_", " "), tooltip=tip))
        self.n = SpinBox(value=8, min=1, max=64, label="samples")
        self.seed = SpinBox(value=0, min=0, max=2**31 - 1, label="seed")
        self.none_button = PushButton(text="All off")
        self.default_button = PushButton(text="Defaults")
        self.preview_button = PushButton(text="Preview")
        self.none_button.changed.connect(lambda: self.set_config(AugmentConfig.none()))
        self.default_button.changed.connect(lambda: self.set_config(AugmentConfig()))
        self.preview_button.changed.connect(self.preview)
        self.extend([self.image, self.label_layer, self.spatial_dims, *rows, self.n, self.seed,
                     Container(widgets=[self.none_button, self.default_button],
                               layout="horizontal", labels=False),
                     self.preview_button])
        self.runner = Runner("Augmentation preview", [self.preview_button])
        self.append(self.runner.progress)

    def config(self) -> AugmentConfig:
        """The AugmentConfig the form shows."""
        return AugmentConfig(**{
            name: AugmentSpec(prob.value, strength.value)
            for name, (prob, strength) in self.specs.items()
        })

    def set_config(self, config: AugmentConfig) -> None:
        """Show ``config`` in the form (and make it the session's)."""
        for name, (prob, strength) in self.specs.items():
            spec = getattr(config, name)
            with prob.changed.blocked(), strength.changed.blocked():
                prob.value, strength.value = spec.prob, spec.strength
        self._store()

    def _store(self, *_: object) -> None:
        self._session.augment = self.config()

    @notify_errors("Augmentation preview")
    def preview(self, *_: object) -> None:
        """Draw the samples in a worker; show them as two new layers."""
        from napari_medml.augment import preview

        image_layer = require(self.image.value, napari.layers.Image, "an image")
        labels_layer = require(self.label_layer.value, napari.layers.Labels, "a labels layer")
        check_on_image(labels_layer, image_layer)
        image, _ = image_array(image_layer)
        labels = labels_array(labels_layer)
        config, n, seed = self.config(), self.n.value, self.seed.value
        dims = {"auto": None, "2D": 2, "3D": 3}[self.spatial_dims.value]
        image_at, labels_at = layer_spatial(image_layer), layer_spatial(labels_layer)
        if is_lazy_layer(image_layer) or is_lazy_layer(labels_layer):
            # an on-disk layer: the samples come from a patch where the viewer looks, never the whole
            edge = PATCH_EDGE[dims or min(image.ndim, 3)]
            region = visible_region(self._viewer, image_layer, edge)
            image, labels = image[region], labels[region[-labels.ndim:]]
            image_at, labels_at = (type(at)(at.spacing, tuple(o + r.start * s for o, r, s in
                                                             zip(at.origin, region[-len(at.origin):], at.spacing)),
                                            None) for at in (image_at, labels_at))  # fmt: skip

        def job(stop, report) -> tuple[np.ndarray, np.ndarray]:
            import numpy as np

            return preview(np.asarray(image), np.asarray(labels), config, n=n, seed=seed, spatial_dims=dims)

        def done(result: tuple[np.ndarray, np.ndarray]) -> None:
            images, label_samples = result
            what = "augmentation preview"
            show_result(self._viewer, result_layer_data(
                images, image_layer.name, what, image_at, "image",
                contrast_limits=image_layer.contrast_limits, colormap=image_layer.colormap.name))
            show_result(self._viewer, result_layer_data(
                label_samples, labels_layer.name, what, labels_at, "labels"))

        self.runner.start(job, on_result=done)
