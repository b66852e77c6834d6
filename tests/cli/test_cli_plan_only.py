"""``napari-medml train --plan-only`` (the console script): the plan a run would train with,
printed before anything is trained, so that a user can override a line and then train."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from napari_medml.samples import touching_objects_2d


def run(*argv: object) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("napari-medml")
    exe = str(script) if script.exists() else shutil.which("napari-medml") or "napari-medml"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([exe, *map(str, argv)], capture_output=True, text=True, timeout=600, env=env)


def test_plan_only_prints_the_plan_and_trains_nothing(tmp_path) -> None:
    s = touching_objects_2d(0, shape=(48, 96))
    np.save(tmp_path / "image.npy", s.image.astype(np.float32))
    np.save(tmp_path / "labels.npy", (s.labels > 0).astype(np.uint8))
    files = ("--image", tmp_path / "image.npy", "--labels", tmp_path / "labels.npy", "--device", "cpu")
    r = run("train", *files, "--max-minutes", "2", "--channels", "8", "--out", tmp_path / "m", "--plan-only")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("plan: 1 image(s) of 48x96 voxels"), r.stdout
    assert "\n  width (channels): 8 (set by you" in r.stdout and "\n  patch size: " in r.stdout
    assert "\n  schedule: " in r.stdout and "time budget" in r.stdout  # the schedule spans the 2 minutes
    assert "--plan-only: nothing was trained" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.npy", "labels.npy"]  # no bundle, no checkpoints
    # trial 44: --plan-only saves nothing, yet asked for --out; a run without --plan-only still needs it
    bare = run("train", *files, "--max-minutes", "2", "--channels", "8", "--plan-only")
    assert bare.returncode == 0 and bare.stdout.startswith("plan: 1 image(s) of 48x96 voxels"), bare.stderr
    assert "the same command without --plan-only and with --out (the bundle's folder) trains" in bare.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.npy", "labels.npy"]
    needs = run("train", *files, "--max-minutes", "2")
    assert needs.returncode == 2 and needs.stderr.strip() == ("napari-medml: error: the following arguments are "
                                                              "required: --out (the folder for the trained model "
                                                              "bundle)"), needs.stderr
    refused = run("train", *files, "--out", tmp_path / "m", "--plan-only", "--no-plan")
    assert refused.returncode == 2 and "--plan-only prints the plan of a new segmentation" in refused.stderr, \
        refused.stderr
    # trial 41: a classifier is not planned, and --plan-only trained and saved one
    (tmp_path / "classes.csv").write_text("sample,class\n0,1\n")
    refused = run("train", "--task", "classification", "--level", "image", "--image", tmp_path / "image.npy",
                  "--classes", tmp_path / "classes.csv", "--out", tmp_path / "c", "--plan-only")
    assert refused.returncode == 2 and "(a classifier is not planned)" in refused.stderr, refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.csv", "image.npy", "labels.npy"]


def test_plan_only_with_nproc_times_a_step_with_each_processs_threads(tmp_path, monkeypatch, capsys) -> None:
    """Review 41: ``--plan-only --nproc 2`` timed a step with every core, while each of the
    two processes trains with its share, so the printed step time was too short."""
    import torch

    import napari_medml.segmentation.planning as planning
    from napari_medml.cli.main import main

    s = touching_objects_2d(0, shape=(48, 96))
    np.save(tmp_path / "image.npy", s.image.astype(np.float32))
    np.save(tmp_path / "labels.npy", (s.labels > 0).astype(np.uint8))
    seen: list[int] = []
    real = planning.plan_run

    def plan_run(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(planning, "plan_run", plan_run)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    before = torch.get_num_threads()
    argv = [str(a) for a in ("train", "--image", tmp_path / "image.npy", "--labels", tmp_path / "labels.npy",
                             "--device", "cpu", "--max-minutes", "1", "--out", tmp_path / "m", "--plan-only",
                             "--nproc", "3")]
    assert main(argv) == 0
    assert seen == [2], seen  # 6 cores shared by 3 processes, as the launcher gives them
    assert torch.get_num_threads() == before
    err = capsys.readouterr().err
    assert "--nproc 3: a step is timed with 2 CPU thread(s), as each process trains" in err, err
    assert not (tmp_path / "m").exists()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's setting is what each process gets
    assert main(argv) == 0
    assert seen == [2, 1], seen
