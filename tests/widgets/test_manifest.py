"""The npe2 manifest: valid, light to read, loaded by a real viewer; the sample API."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

npe2 = pytest.importorskip("npe2")

PLUGIN = "napari-medml"
HEAVY = ("torch", "monai", "qtpy", "PyQt5", "PySide2", "napari", "magicgui", "superqt")


def test_manifest_validates() -> None:
    manifest = npe2.PluginManifest.from_distribution(PLUGIN)
    assert manifest.name == PLUGIN
    contributions = manifest.contributions
    assert {s.key for s in contributions.sample_data} == {
        "phantom_3d",
        "touching_objects_2d",
        "shape_classes",
    }
    assert contributions.readers and contributions.writers


def test_manifest_python_names_import() -> None:
    # every command's python_name resolves to a callable in the package
    npe2.PluginManifest.from_distribution(PLUGIN).validate_imports()


def test_npe2_cli_validates() -> None:
    exe = shutil.which("npe2") or str(__import__("pathlib").Path(sys.executable).with_name("npe2"))
    out = subprocess.run([exe, "validate", PLUGIN], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_import_and_manifest_are_light() -> None:
    # napari starts as fast with the plugin as without: neither the package,
    # the sample generators nor reading the manifest may import the heavy stack
    code = (
        "import json, sys, npe2, napari_medml, napari_medml.samples, napari_medml._sample_data\n"
        f"npe2.PluginManifest.from_distribution({PLUGIN!r})\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_plugin_loads_in_viewer(make_napari_viewer) -> None:
    make_napari_viewer()
    pm = npe2.PluginManager.instance()
    manifest = pm.get_manifest(PLUGIN)
    assert not pm.is_disabled(PLUGIN)
    assert {r.command for r in manifest.contributions.readers} == {"napari-medml.get_reader"}
    assert {w.command for w in manifest.contributions.writers} == {
        "napari-medml.write_image",
        "napari-medml.write_labels",
        "napari-medml.write_layers",
    }
    samples = dict(pm.iter_sample_data())
    assert {s.key for s in samples[PLUGIN]} == {"phantom_3d", "touching_objects_2d", "shape_classes"}


# Opening each sample through File › Open Sample: test_plugin_menu.py.


def test_shape_classes_sample_carries_classes(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "shape_classes")
    labels = viewer.layers["shapes [ground truth]"]
    classes = labels.metadata["sample_classes"]
    assert len(classes) == labels.data.shape[0]
    assert sorted(set(classes)) == [1, 2]
    assert [int(labels.data[i].max()) for i in range(len(classes))] == classes
    assert labels.metadata["class_names"] == {1: "smooth", 2: "irregular"}
    assert "class_name" in labels.features.columns
