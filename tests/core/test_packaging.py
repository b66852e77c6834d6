"""The wheel carries the one root manifest (napari.yaml) and the npe2 entry point."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (path,) = out.glob("napari_medml-*.whl")
    return path


def test_wheel_carries_the_manifest(wheel: Path, tmp_path: Path) -> None:
    npe2 = pytest.importorskip("npe2")
    with zipfile.ZipFile(wheel) as archive:
        manifest = archive.read("napari_medml/napari.yaml")
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        entry_text = archive.read(entry_points).decode()
    # the package's file is a symlink to the root one: the wheel must hold the real text
    assert manifest == (ROOT / "napari.yaml").read_bytes()
    assert "[napari.manifest]" in entry_text and "napari_medml:napari.yaml" in entry_text
    assert "napari-medml = napari_medml.cli:main" in entry_text
    extracted = tmp_path / "napari.yaml"
    extracted.write_bytes(manifest)
    assert npe2.PluginManifest.from_file(extracted).name == "napari-medml"


def test_editable_install_finds_the_manifest() -> None:
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_distribution("napari-medml")
    assert manifest.name == "napari-medml"
    assert {w.display_name for w in manifest.contributions.widgets or []} >= {"Preprocess", "Predict"}
