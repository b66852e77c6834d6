"""One model description per bundle: each task's frozen spec is its model's constructor
input and its ``config.json``; the older constructors build the same spec."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

import napari_medml as mm  # noqa: E402
from napari_medml.classification.model import Classifier, ClassifierSpec, classification_config  # noqa: E402
from napari_medml.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from napari_medml.instances.model import InstanceModel, InstanceSpec  # noqa: E402
from napari_medml.instances.postprocess import InstanceParams  # noqa: E402
from napari_medml.pretraining.model import ReconstructionModel, ReconstructionSpec  # noqa: E402
from napari_medml.segmentation.model import Model, SegmentationSpec  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
NORM = {"method": "zscore", "channels": [{"mean": 1.0, "std": 2.0}]}


def _config(task: str = "segmentation") -> TrainConfig:
    return TrainConfig(task=task, model=ModelConfig(network="unet", channels=8, depth=2),
                       data=DataConfig(spatial_dims=2), class_names={5: "cell"})


def _specs() -> list:
    patch = {"in_channels": 1, "spatial_dims": 2, "patch_size": (16, 16), "spacing": (1.0, 0.5),
             "normalization": NORM}
    return [
        (Model, SegmentationSpec(config=_config(), class_ids=(0, 5, 7), **patch)),
        (InstanceModel, InstanceSpec(config=_config("instances"), params=InstanceParams(), **patch)),
        (ReconstructionModel, ReconstructionSpec(config=_config("pretraining"), **patch)),
        (Classifier, ClassifierSpec(config=classification_config(), class_ids=(1, 2), level="tile", in_channels=1,
                                    image_channels=1, spatial_dims=2, input_size=(32, 32),
                                    sample_params={"tile_size": 32}, normalization=NORM)),
    ]


@pytest.mark.parametrize(("model_type", "spec"), _specs(), ids=["segmentation", "instances", "pretraining",
                                                               "classification"])
def test_spec_is_the_bundle_description_and_round_trips(tmp_path, model_type, spec):
    model = model_type(spec.build_network(), spec, history=[{"epoch": 1}], provenance={"split": "none"})
    assert model.spec is spec and model.in_channels == spec.in_channels and model.config is spec.config
    desc = model.description()
    assert {k: desc[k] for k in spec.to_description()} == spec.to_description()
    assert type(spec).from_description(json.loads(json.dumps(desc)), tmp_path) == spec
    loaded = mm.load_model(model.save(tmp_path / "bundle"))
    assert type(loaded) is model_type and loaded.spec == spec
    assert loaded.history == [{"epoch": 1}] and loaded.provenance == {"split": "none"}


def test_older_constructors_build_the_same_spec():
    (_, seg), (_, inst), (_, rec), (_, cls) = _specs()
    net = seg.build_network()
    assert Model(net, seg.config, seg.class_ids, 1, 2, (16, 16), (1.0, 0.5), NORM).spec == seg
    assert InstanceModel(net, inst.config, 1, 2, (16, 16), (1.0, 0.5), NORM, inst.params).spec == inst
    assert ReconstructionModel(net, rec.config, 1, 2, (16, 16), (1.0, 0.5), NORM).spec == rec
    assert Classifier(net, cls.config, (1, 2), level="tile", in_channels=1, image_channels=1, spatial_dims=2,
                      input_size=(32, 32), sample_params={"tile_size": 32}, normalization=NORM).spec == cls


def test_spec_is_frozen_and_a_model_field_replaces_it():
    _, spec = _specs()[0]
    model = Model(spec.build_network(), spec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.in_channels = 2  # type: ignore[misc]
    model.config = dataclasses.replace(spec.config, device="cpu")
    assert model.spec is not spec and model.spec.config.device == "cpu" and spec.config.device != "cpu"
    with pytest.raises(TypeError, match="not both"):
        Model(model.network, spec, (0, 1))
    with pytest.raises(TypeError, match="needs normalization"):
        Model(model.network, spec.config, (0, 1), 1, 2, (16, 16), None)


@pytest.mark.parametrize(("fixture", "index"), [("schema1_segmentation", 0), ("schema1_classifier", 3)])
def test_description_keeps_the_schema1_keys(fixture, index):
    model_type, spec = _specs()[index]
    old = set(json.loads((FIXTURES / fixture / "config.json").read_text()))
    new = set(model_type(spec.build_network(), spec).description())
    assert new - old <= {"plan", "level"} and old - new <= {"mode"}  # classifiers said "mode" for "level"
