"""The hold of a training run on its --out folder (``cli.run_guard``): one holder at a time,
even when several runs find a dead run's lock at the same moment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from napari_medml.cli.common import UsageError
from lock_holder import lock_held_elsewhere
from napari_medml.cli.run_guard import LOCK_NAME, hold_out_folder

pytest.importorskip("fcntl")


def _hold(out):
    return hold_out_folder(out, resume=False, digest="d", files=[])


def test_runs_that_find_a_dead_runs_lock_together_never_both_hold_the_folder(tmp_path) -> None:
    """Two runs that took over the same stale lock at once could both run (each removed the
    other's fresh lock as the dead one's)."""
    out = tmp_path / "model"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / LOCK_NAME).write_text('{"pid": 999999999}')  # a killed run's
    start, inside, most, refused, crashed = threading.Barrier(8), [0], [0], [], []
    guard = threading.Lock()

    def run() -> None:
        start.wait()
        try:
            with _hold(out):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.3)
                with guard:
                    inside[0] -= 1
        except UsageError as exc:
            refused.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - a traceback a user would see
            crashed.append(repr(exc))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and refused and not crashed, crashed  # one holder at a time; the others told so
    assert set(refused) == {f"another napari-medml run (process {os.getpid()}) is writing to "
                            f"'{out}': wait for it to end, or choose another --out"}
    assert not (out / "checkpoints" / LOCK_NAME).exists()


def test_a_lock_is_a_hold_while_its_process_holds_it_and_not_once_it_has_ended(tmp_path) -> None:
    out = tmp_path / "model"
    (out / "checkpoints").mkdir(parents=True)
    lock = out / "checkpoints" / LOCK_NAME
    with lock_held_elsewhere(lock) as holder:
        with pytest.raises(UsageError) as info:
            with _hold(out):
                pass
        assert str(info.value) == (f"another napari-medml run (process {holder.pid}) is writing to '{out}': wait "
                                   "for it to end, or choose another --out")
    assert json.loads(lock.read_text()) == {"pid": holder.pid}  # killed: its file stays, but no hold
    with _hold(out):
        assert json.loads(lock.read_text()) == {"pid": os.getpid()}
    assert not lock.exists()


def test_a_run_refused_while_the_holder_has_not_yet_written_its_id_names_no_dead_process(tmp_path) -> None:
    """The lock file still held a killed run's id in the moment after a new run took it: the
    refusal named that dead process (seen in CI as a flaky refusal message)."""
    out = tmp_path / "model"
    (out / "checkpoints").mkdir(parents=True)
    lock = out / "checkpoints" / LOCK_NAME
    lock.write_text('{"pid": 999999999}')  # a killed run's
    with lock_held_elsewhere(lock, write_id=False):
        with pytest.raises(UsageError) as info:
            with _hold(out):
                pass
    assert str(info.value) == f"another napari-medml run is writing to '{out}': wait for it to end, or choose another --out"


def test_a_run_whose_holder_ends_while_it_is_being_refused_takes_the_folder(tmp_path, monkeypatch) -> None:
    """A refused run read the lock after its holder had ended and removed it: the refusal named
    no process, for a folder nobody held any more."""
    from napari_medml.cli import run_guard

    out = tmp_path / "model"
    (out / "checkpoints").mkdir(parents=True)
    lock = out / "checkpoints" / LOCK_NAME
    with lock_held_elsewhere(lock, write_id=False) as holder:
        read = run_guard._read

        def read_as_it_ends(path):  # while the refused run waits for the holder's id
            lock.unlink()  # as a run does just before it ends
            holder.kill()
            holder.wait()
            monkeypatch.setattr(run_guard, "_read", read)
            return read(path)

        monkeypatch.setattr(run_guard, "_read", read_as_it_ends)
        with _hold(out):
            assert json.loads(lock.read_text()) == {"pid": os.getpid()}


def _interrupted(out, digest="old"):
    folder = out / "checkpoints"
    (folder / "last").mkdir(parents=True)
    (folder / "last" / "train_state.json").write_text('{"run": "old"}')
    (folder / "inputs.json").write_text(json.dumps({"digest": digest, "files": [], "spacings": [[2.0, 0.5]]}))
    return folder


def test_a_new_run_that_ends_before_its_first_checkpoint_gives_the_interrupted_run_back(tmp_path) -> None:
    """Review 21: a new run deleted an interrupted run's checkpoints before its first step, so
    one that then failed on its input left nothing to resume."""
    folder = _interrupted(tmp_path / "model")
    with pytest.raises(RuntimeError):
        with _hold(tmp_path / "model"):
            assert not (folder / "last").exists()  # set aside: a stop now leaves no old run to resume
            raise RuntimeError("the new run's input is bad")
    assert (folder / "last" / "train_state.json").read_text() == '{"run": "old"}'
    assert json.loads((folder / "inputs.json").read_text())["digest"] == "old"
    assert sorted(p.name for p in folder.iterdir()) == ["inputs.json", "last"]
    with _hold(tmp_path / "model"):  # a new run with a checkpoint of its own replaces it
        (folder / "last").mkdir()
        (folder / "last" / "train_state.json").write_text('{"run": "new"}')
    assert (folder / "last" / "train_state.json").read_text() == '{"run": "new"}'
    assert sorted(p.name for p in folder.iterdir()) == ["inputs.json", "last"]


def test_a_new_run_killed_before_its_first_checkpoint_leaves_the_interrupted_run_to_resume(tmp_path) -> None:
    folder = _interrupted(tmp_path / "model")
    killed = subprocess.run([sys.executable, "-c", f"""
import os
from pathlib import Path
from napari_medml.cli.run_guard import hold_out_folder
with hold_out_folder(Path({str(tmp_path / 'model')!r}), resume=False, digest="new", files=[]):
    os._exit(9)
"""], capture_output=True, text=True)
    assert killed.returncode == 9 and (folder / "replaced" / "last").is_dir()
    with hold_out_folder(tmp_path / "model", resume=True, digest="old", files=[], spacings=[(2.0, 0.5)]):
        assert (folder / "last" / "train_state.json").read_text() == '{"run": "old"}'


def test_resume_with_other_voxel_sizes_says_so(tmp_path) -> None:
    """Review 21: a resume with another --spacing was told its files differ."""
    _interrupted(tmp_path / "model")
    with pytest.raises(UsageError) as info:
        with hold_out_folder(tmp_path / "model", resume=True, digest="other", files=[], spacings=[(1.0, 1.0)] * 3):
            pass
    assert str(info.value) == ("--resume: the training images have voxel size(s) 1 x 1, the stopped run's had "
                               "2 x 0.5: resume with the files and the --spacing it started with (--spacing applies "
                               "only to files that store no voxel size), or train a new run without --resume")


def test_a_new_run_that_fails_between_its_best_and_last_checkpoint_gives_the_interrupted_run_back(tmp_path) -> None:
    """Review 22: a new run that wrote its 'best' but not its 'last' could not move the old run's
    'best' back over it, and the clean-up then deleted every checkpoint."""
    folder = _interrupted(tmp_path / "model")
    (folder / "best").mkdir()
    (folder / "best" / "config.json").write_text('{"run": "old"}')
    with pytest.raises(RuntimeError):
        with _hold(tmp_path / "model"):
            (folder / "best").mkdir()
            (folder / "best" / "config.json").write_text('{"run": "new"}')
            raise RuntimeError("the disk is full")
    assert (folder / "best" / "config.json").read_text() == '{"run": "old"}'
    assert (folder / "last" / "train_state.json").read_text() == '{"run": "old"}'
    assert sorted(p.name for p in folder.iterdir()) == ["best", "inputs.json", "last"]


def test_resume_after_a_new_run_was_killed_before_its_first_checkpoint_finds_the_interrupted_run(tmp_path) -> None:
    """Review 22: --resume looked for checkpoints before the hold gave the set-aside ones back."""
    from argparse import Namespace

    from napari_medml.cli.progress import resume_folder

    folder = _interrupted(tmp_path / "model")
    killed = subprocess.run([sys.executable, "-c", f"""
import os
from pathlib import Path
from napari_medml.cli.run_guard import hold_out_folder
with hold_out_folder(Path({str(tmp_path / 'model')!r}), resume=False, digest="new", files=[]):
    os._exit(9)
"""], capture_output=True, text=True)
    assert killed.returncode == 9 and not (folder / "last").exists()
    assert resume_folder(Namespace(resume=True, out=tmp_path / "model")) == folder
    assert (folder / "last" / "train_state.json").read_text() == '{"run": "old"}'
    assert not (folder / "replaced").exists() and not (folder / "run.lock").exists()


def test_a_run_that_leaves_nothing_removes_only_an_empty_folder(tmp_path, monkeypatch) -> None:
    """Review 22: the clean-up of a run with nothing to resume removed the folder after letting it
    go, with the lock and inputs of a run that had taken it in between."""
    import napari_medml.cli.run_guard as guard

    out = tmp_path / "model"

    class Os:  # run_guard's os, whose close lets another run take the folder at once
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def close(fd):
            os.close(fd)
            (out / "checkpoints" / "run.lock").write_text('{"pid": 1}')  # the next run's, just created

    monkeypatch.setattr(guard, "os", Os())
    with _hold(out):
        pass
    assert (out / "checkpoints" / "run.lock").read_text() == '{"pid": 1}'
    monkeypatch.undo()
    with _hold(tmp_path / "other"):
        pass
    assert not (tmp_path / "other").exists()  # created by the run, left empty: gone


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_damaged_lock_is_refused_in_one_line_and_leaves_no_file_open(tmp_path) -> None:
    """Review 23: a lock file holding a pid too large for the system escaped as OverflowError,
    and the lock's file stayed open."""
    out = tmp_path / "model"
    (out / "checkpoints").mkdir(parents=True)
    lock = out / "checkpoints" / LOCK_NAME
    with lock_held_elsewhere(lock, write_id=False):
        lock.write_text(json.dumps({"pid": 10**20}))
        before = _open_files()
        with pytest.raises(UsageError) as info:
            with _hold(out):
                pass
        assert _open_files() == before
    assert str(info.value) == f"another napari-medml run is writing to '{out}': wait for it to end, or choose another --out"


def test_a_holder_killed_before_it_wrote_its_id_holds_nothing(tmp_path, monkeypatch) -> None:
    """Review 23: a run refused by a holder that was then killed (its file left, no id in it)
    was refused, for a folder nobody held."""
    from napari_medml.cli import run_guard

    out = tmp_path / "model"
    (out / "checkpoints").mkdir(parents=True)
    lock = out / "checkpoints" / LOCK_NAME
    with lock_held_elsewhere(lock, write_id=False) as holder:
        read = run_guard._read

        def read_then_kill(path):
            holder.kill()  # its flock goes with it; its file stays
            holder.wait()
            return read(path)

        monkeypatch.setattr(run_guard, "_read", read_then_kill)
        with _hold(out):
            monkeypatch.setattr(run_guard, "_read", read)
            assert json.loads(lock.read_text()) == {"pid": os.getpid()}


def test_without_flock_a_run_whose_holder_ends_while_it_waits_takes_the_folder(tmp_path, monkeypatch) -> None:
    """Review 23: where there is no flock, the ending holder emptied the folder, this run's file
    of its id with it, and the run crashed with FileNotFoundError."""
    from napari_medml.cli import run_guard

    out = tmp_path / "model"
    folder = out / "checkpoints"
    folder.mkdir(parents=True)
    lock = folder / LOCK_NAME
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    lock.write_text(json.dumps({"pid": holder.pid}))
    read = run_guard._read

    def read_as_it_ends(path):  # the holder's end: its folder emptied, its lock removed, the folder gone
        for entry in folder.iterdir():
            entry.unlink()
        folder.rmdir()
        holder.kill()
        holder.wait()
        monkeypatch.setattr(run_guard, "_read", read)
        return {"pid": holder.pid}

    monkeypatch.setattr(run_guard, "_read", read_as_it_ends)
    assert run_guard._acquire_by_id(lock, out) is None
    assert json.loads(lock.read_text()) == {"pid": os.getpid()}
    assert [p.name for p in folder.iterdir()] == [LOCK_NAME]


def test_a_run_whose_folder_was_replaced_by_its_save_leaves_the_next_runs_folder_alone(tmp_path) -> None:
    """Review 23: a finished run's bundle save replaces the folder, its lock with it; a run that
    took the new folder meanwhile lost its inputs.json to the first run's clean-up."""
    out = tmp_path / "model"
    folder = out / "checkpoints"
    taken, done, failed = threading.Event(), threading.Event(), []

    def next_run() -> None:
        try:
            with _hold(out):
                taken.set()
                assert done.wait(60)
                assert (folder / "inputs.json").exists()
        except Exception as exc:  # noqa: BLE001 - reported below
            failed.append(repr(exc))
            taken.set()

    with _hold(out):
        os.replace(folder, tmp_path / "saved-elsewhere")  # as the save replaces the bundle folder
        other = threading.Thread(target=next_run)
        other.start()
        assert taken.wait(60)
    assert (folder / "inputs.json").exists() and (folder / LOCK_NAME).exists()
    done.set()
    other.join()
    assert not failed, failed


def test_resume_with_the_same_files_in_another_order_says_so(tmp_path) -> None:
    """Trial 27: the same files in another order were told their voxel sizes differ."""
    folder = tmp_path / "model" / "checkpoints"
    (folder / "last").mkdir(parents=True)
    (folder / "inputs.json").write_text(json.dumps({"digest": "old", "files": ["a.nii", "b.nii"],
                                                    "spacings": [[2.0, 2.0], [1.0, 1.0]]}))
    with pytest.raises(UsageError) as info:
        with hold_out_folder(tmp_path / "model", resume=True, digest="other", files=["b.nii", "a.nii"],
                             spacings=[(1.0, 1.0), (2.0, 2.0)]):
            pass
    assert str(info.value) == ("--resume: the stopped run took its files in another order (a.nii, b.nii): resume "
                               "with them in that order, or train a new run without --resume")
