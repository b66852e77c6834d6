"""The core never imports the GUI stack (DESIGN.md, style rule 1).

import-linter enforces the same contract in `make test`; this test also catches a new
core module that nobody added to the contract, and runs in the Qt-free environment.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "napari_medml"
GUI_PACKAGES = {"napari", "qtpy", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6"}
# Fronts that may use napari: widgets, the npe2 entry modules and the napari demo.
FRONT_MODULES = {"_reader", "_writer", "_sample_data", "_demo", "__init__"}


def core_modules() -> list[Path]:
    files = [p for p in PACKAGE.rglob("*.py") if "_widgets" not in p.relative_to(PACKAGE).parts]
    return sorted(p for p in files if p.stem not in FRONT_MODULES)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts)


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module)
    return roots


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.stem)
def test_core_module_imports_no_gui(path: Path) -> None:
    # Function-level imports count too: the core must work where no Qt is installed.
    bad = {
        name
        for name in imported_roots(path)
        if name.split(".")[0] in GUI_PACKAGES or name.startswith("napari_medml._widgets")
    }
    assert not bad, f"{module_name(path)} imports GUI modules {sorted(bad)}"


def test_import_linter_contract_covers_every_core_module() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    listed = {m for c in contracts for m in c.get("source_modules", [])}
    # import-linter treats a listed package as covering its submodules.
    missing = {
        name
        for name in map(module_name, core_modules())
        if not any(name == m or name.startswith(m + ".") for m in listed)
    }
    assert not missing, f"add {sorted(missing)} to the import-linter contract in pyproject.toml"


def test_package_import_is_light() -> None:
    code = (
        "import sys, napari_medml, napari_medml.config;"
        "print(' '.join(m for m in ('torch', 'monai', 'qtpy', 'PyQt5', 'napari', 'magicgui')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import napari_medml pulled in: {out.stdout.strip()}"
