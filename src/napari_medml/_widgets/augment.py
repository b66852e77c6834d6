"""Augmentation widget: probability and strength of every transform, and a preview.

The values form the viewer session's :class:`~napari_medml.config.AugmentConfig`, the
very object the train widget trains with; Preview draws samples through
:func:`napari_medml.augment.preview`, which builds the transforms with the arguments
training gives them: the layer's voxel spacing and the training patch. The samples are
crops of that patch where the viewer looks; the patch is the form's, else the open Train
segmentation widget's, else the one training chooses automatically (without a plan).
Channels stay as the layer holds them (an RGB layer previews as RGB, a ``c`` axis stays a
slider), every channel moved by the same draw, as training moves them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import napari
from magicgui.widgets import (
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    LineEdit,
    PushButton,
    SpinBox,
    create_widget,
)

from napari_medml._widgets._data_watch import HeldData, new_data_line
from napari_medml._widgets._dock import DockForm
from napari_medml._widgets._forms import parse_size
from napari_medml._widgets._layers import (
    check_on_image,
    is_lazy_layer,
    labels_array,
    layer_spatial,
    layer_volume,
    require,
    show_result,
)
from napari_medml._widgets._runner import Runner, notify_errors
from napari_medml._widgets._session import session_for
from napari_medml.config import AugmentConfig, AugmentSpec
from napari_medml.errors import InputError
from napari_medml.layer_data import SpatialMeta
from napari_medml.result_layers import result_layer_data

if TYPE_CHECKING:
    import numpy as np

__all__ = ["AugmentWidget", "training_patch"]

FIELDS = tuple(f.name for f in dataclasses.fields(AugmentConfig))
LAZY_LEAD_EDGE = 96  # on-disk layers previewed slice-wise: at most this many slices around the view


def training_patch(shape: tuple[int, ...], spacing: tuple[float, ...], spatial_dims: int) -> tuple[int, ...]:
    """The patch a new training run chooses for an image of spatial ``shape`` without a plan
    (``segmentation.prepare.choose_patch_size`` at the default width, depth and batch on the
    automatic device). Imports torch: call it in a worker."""
    from napari_medml.config import DataConfig, TrainConfig
    from napari_medml.engine.devices import patch_voxel_cap, resolve_device
    from napari_medml.segmentation.prepare import choose_patch_size

    config = TrainConfig(data=DataConfig(spatial_dims=spatial_dims))
    cap = patch_voxel_cap(resolve_device(config.device), spatial_dims)
    return choose_patch_size([shape[-spatial_dims:]], config, spacing[-spatial_dims:], single=True,
                             max_patch_voxels=cap)


def _train_form_patch(viewer: napari.viewer.Viewer, spatial_dims: int) -> tuple[int, ...] | None:
    """The patch size set in this viewer's Train segmentation form, for the same 2D/3D, if any."""
    from napari_medml._widgets._session import session_for

    found = session_for(viewer).train_patch
    if found is None or found[0] != spatial_dims:
        return None
    try:
        return parse_size(found[1], spatial_dims)
    except ValueError:
        return None


def _cropped(at: SpatialMeta, layer_axes: str, window: tuple[slice, ...]) -> SpatialMeta:
    """``at`` moved to the crop's first voxel (spatial axes in ``window`` order; C keeps 0)."""
    starts = iter(w.start for w in window[len(window) - sum(a != "C" for a in layer_axes):])
    shift = [0 if a == "C" else next(starts) for a in layer_axes]
    origin = tuple(o + k * s for o, k, s in zip(at.origin, shift, at.spacing))
    return SpatialMeta(at.spacing, origin, None, at.stored_orientation, at.file_meta)


def _sample_axis_labels(layer: napari.layers.Layer) -> dict[str, Any]:
    """``axis_labels`` for a result with a leading sample axis, when the layer's axes are named
    (napari 0.5.0 takes none: there the plugin keeps them in metadata only)."""
    from napari_medml.io.axes import axes_to_labels
    from napari_medml.layer_data import _add_image_takes_axis_labels

    labels = axes_to_labels(layer_volume(layer).axes, rgb=bool(getattr(layer, "rgb", False)))
    if labels is None or not _add_image_takes_axis_labels():
        return {}
    return {"axis_labels": ("sample", *labels)}


PLANNED_NOTE = ("these are the default probabilities: a training run planned from the data (Train "
                "segmentation's default) scales them to its length, 0.25 to 1 of them (the plan's 'augmentation' "
                "line says which); change any value here and training takes them as set")


class AugmentWidget(DockForm):
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
        self.patch = LineEdit(value="0", label="patch size",
                              tooltip="The patch training sees ('64' or '16,64,64'): samples are crops of it "
                              "where the viewer looks, and rotate90 turns a quarter only on square patches. "
                              "0 = Train segmentation's patch size when its widget is open and set, else the "
                              "one training chooses automatically (a plan may choose another: its patch is "
                              "shown when training starts).")
        self.n = SpinBox(value=8, min=1, max=64, label="samples")
        self.seed = SpinBox(value=0, min=0, max=2**31 - 1, label="seed")
        self.none_button = PushButton(text="All off")
        self.default_button = PushButton(text="Defaults")
        self.preview_button = PushButton(text="Preview")
        self.cancel_button = PushButton(text="Cancel", tooltip="stop drawing samples")
        self.none_button.changed.connect(lambda: self.set_config(AugmentConfig.none()))
        self.default_button.changed.connect(lambda: self.set_config(AugmentConfig()))
        self.preview_button.changed.connect(self.preview)
        self.extend([self.image, self.label_layer, self.spatial_dims, *rows, self.patch, self.n, self.seed,
                     Container(widgets=[self.none_button, self.default_button],
                               layout="horizontal", labels=False),
                     Container(widgets=[self.preview_button, self.cancel_button], layout="horizontal",
                               labels=False)])
        self.runner = Runner("Augmentation preview", [self.preview_button], self.cancel_button)
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
        from napari_medml.augment import preview, preview_window
        from napari_medml.io.axes_resolve import labels_over_channels

        image_layer = require(self.image.value, napari.layers.Image, "an image")
        labels_layer = require(self.label_layer.value, napari.layers.Labels, "a labels layer")
        check_on_image(labels_layer, image_layer)
        volume = layer_volume(image_layer)
        image, axes, channel_axis = volume.data, volume.axes, volume.channel_axis
        labels = labels_over_channels(labels_array(labels_layer), image.shape, axes, what=f"image '{image_layer.name}'",
                                      labels_what=f"labels '{labels_layer.name}'")[0]  # napari's new labels: CZYX
        spacing = tuple(s for a, s in zip(axes, volume.spacing) if a != "C")  # RGB's colour axis has none
        shape = tuple(n for n, a in zip(image.shape, axes) if a != "C")
        if tuple(labels.shape) != shape:  # before any crop: the shapes the user made
            frames = " (one frame of labels per time point)" if "T" in axes and labels.ndim < len(shape) else ""
            raise InputError(f"labels '{labels_layer.name}' have shape {tuple(labels.shape)} but image "
                             f"'{image_layer.name}' (axes {axes}) has {shape} without channels: choose labels "
                             f"drawn on that image{frames}")
        dims = {"auto": min(sum(a not in "CT" for a in axes), 3), "2D": 2, "3D": 3}[self.spatial_dims.value]
        if dims > len(shape):
            raise InputError(f"2D/3D is {dims}D but image '{image_layer.name}' has {len(shape)} spatial axes: "
                             "choose 2D (or auto)")
        patch = parse_size(self.patch.value, dims) or _train_form_patch(self._viewer, dims)
        layer_axes = axes[: image_layer.ndim]  # without RGB's colour axis, as napari counts
        point = image_layer.world_to_data(self._viewer.dims.point)
        centre = [c for c, a in zip(point, layer_axes) if a != "C"]
        lead = (LAZY_LEAD_EDGE if is_lazy_layer(image_layer) or is_lazy_layer(labels_layer) else None,) * max(
            len(shape) - dims, 0)
        config, n, seed = self.config(), self.n.value, self.seed.value
        held = HeldData([image_layer, labels_layer])

        def job(stop, report) -> tuple[np.ndarray, np.ndarray, tuple[slice, ...], str]:
            import numpy as np

            size = patch or training_patch(shape, spacing, dims)
            window = preview_window(shape, (*lead, *size), centre)  # on-disk layers: only this is read
            at = list(window)
            if channel_axis is not None:
                at.insert(channel_axis, slice(None))
            from napari_medml.errors import raise_if_stopped
            from napari_medml.preprocessing.inputs import nonfinite_note

            def progress(done: int, total: int) -> None:  # sample by sample: the bar and Cancel
                raise_if_stopped(stop)
                report((done, total))

            crop = np.asarray(image[tuple(at)])
            images, samples = preview(crop, np.asarray(labels[window]), config, n=n, seed=seed, spatial_dims=dims,
                                      channel_axis=channel_axis, spacing=spacing, patch_size=size, progress=progress)
            return images, samples, window, nonfinite_note(crop, f"image '{image_layer.name}' (where the view is)")

        def done(result: tuple[np.ndarray, np.ndarray, tuple[slice, ...], str]) -> None:
            from napari.utils import notifications

            images, samples, window, note = result
            gone = [layer.name for layer in (image_layer, labels_layer) if layer not in self._viewer.layers]
            if gone:  # review 50: its layers were added on a removed one's place
                return notifications.show_warning(f"Augmentation preview: layer '{gone[0]}' was removed while the "
                                                  "job ran: its preview is not shown")
            if held.replaced():  # trial 49's kind: samples of the old data, shown as the new one's
                return notifications.show_warning("Augmentation preview: " + new_data_line(held.replaced(),
                                                                                          "its preview", "layer"))
            if note:
                notifications.show_warning(f"Augmentation preview: {note}")
            if config == AugmentConfig():  # trial 43: the preview showed 4x what a short planned run trains with
                notifications.show_info(f"Augmentation preview: {PLANNED_NOTE}")
            what = "augmentation preview"
            look = {"rgb": True} if image_layer.rgb else {"colormap": image_layer.colormap.name}
            show_result(self._viewer, result_layer_data(
                images, image_layer.name, what, _cropped(layer_spatial(image_layer), layer_axes, window),
                "image", contrast_limits=image_layer.contrast_limits, **look, **_sample_axis_labels(image_layer)),
                like=image_layer)
            at, names = layer_spatial(labels_layer), _sample_axis_labels(labels_layer)
            if labels.ndim < labels_layer.ndim:  # they covered the channel axis (labels_over_channels)
                keep = [i for i, a in enumerate(layer_axes) if a != "C"]
                at = SpatialMeta(tuple(at.spacing[i] for i in keep), tuple(at.origin[i] for i in keep), None,
                                 at.stored_orientation, at.file_meta)
                names = {k: ("sample", *(v[1:][i] for i in keep)) for k, v in names.items()}
            show_result(self._viewer, result_layer_data(
                samples, labels_layer.name, what, _cropped(at, "Q" * len(at.spacing), window), "labels",
                **names), like=labels_layer)

        self.runner.start(job, on_result=done, discard_on_stop=True)
