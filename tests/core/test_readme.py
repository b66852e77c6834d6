"""The README's Python examples run as written (a shorter run: fewer epochs and steps, a
smaller phantom), so that a user who copies them gets no AttributeError or wrong name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def shorter(code: str) -> str:
    code = code.replace("mm.OptimConfig(max_minutes=2)", "mm.OptimConfig(epochs=2, steps_per_epoch=2)")
    code = code.replace("phantom_3d(seed=0)", "phantom_3d(seed=0, shape=(16, 48, 48))")
    return code


def test_the_readme_python_section_runs(tmp_path, monkeypatch, capsys) -> None:
    blocks = [b for b in python_blocks() if "import napari_medml as mm" in b or "mm.fit(" in b]
    assert len(blocks) == 2, "the README's Python section changed: update this test"
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    for block in blocks:
        code = shorter(block)
        assert code != block or "mm.fit(" in block  # the shortening applied
        exec(compile(code, str(README), "exec"), names)  # noqa: S102 - the README's own code
    assert names["labels"].shape == (16, 48, 48)
    assert (tmp_path / "my-model" / "config.json").exists()
    printed = capsys.readouterr().out.splitlines()
    assert 0 <= float(printed[0]) <= 1 and names["scores"]["mean_dice"] == float(printed[0])  # mm.evaluate
    epochs = printed[1:]
    assert len(epochs) == 2 and all(line.split()[0] in ("1", "2") for line in epochs)  # one line per epoch


def test_the_readme_live_session_example_runs(monkeypatch, tmp_path) -> None:
    from napari_medml.samples import phantom_3d

    block = next(b for b in python_blocks() if "LiveSession(" in b)
    p = phantom_3d(seed=0, shape=(16, 48, 48))
    scribbles = np.zeros(p.labels.shape, np.int32)
    scribbles[8, 4:8, 4:20] = 1  # background (id 1, as the example says)
    scribbles[8][p.labels[8] == 2] = 2
    names = {"volume": p.image, "scribbles": scribbles}
    monkeypatch.chdir(tmp_path)
    exec(compile(shorter(block).replace('device="auto"', 'device="cpu"'), str(README), "exec"), names)  # noqa: S102
    assert names["labels"].shape == p.image.shape and names["model"] is not None
