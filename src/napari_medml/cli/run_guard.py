"""A command-line training run's hold on its ``--out`` folder.

- One run at a time: a lock file in ``<out>/checkpoints`` names the process that writes
  there; a second run is refused in one line while that process lives (two runs on one
  folder each said "saved", and one's checkpoints were deleted by the other's save).
- ``--resume`` only on the files the run started with: ``inputs.json`` records a digest of
  the training images and labels, compared when the run resumes.
- A new run (no ``--resume``) says that it replaces a saved bundle (when it ends) and an
  interrupted run's checkpoints, and sets the checkpoints aside before its first step (else a
  stop before its first checkpoint would leave the old run's ``last`` to resume); they go once
  the new run has a checkpoint of its own, and come back when it ends (fails, stops, is
  killed) before that.

Written by hand (no lock library is a dependency): an ``fcntl.flock`` on the lock file,
which the system lets go when the process ends however it ends, so a killed run's lock is
no hold and two runs that find one at the same moment cannot both take it. Where there is
no ``flock`` (Windows, some network file systems) the lock is a file created exclusively
holding the process id, taken over once that process no longer runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from napari_medml.cli.common import UsageError, info

__all__ = ["INPUTS_NAME", "LOCK_NAME", "hold_out_folder", "inputs_digest", "restore_set_aside"]

LOCK_NAME = "run.lock"
INPUTS_NAME = "inputs.json"
REPLACED_NAME = "replaced"  # an earlier run's checkpoints, while a new run has none of its own


def inputs_digest(images: Sequence[Any], labels: Sequence[Any], spacings: Sequence[Any]) -> str:
    """A digest of a run's training samples (values, shapes and voxel sizes)."""
    from napari_medml.segmentation.run_identity import content_digest

    digest = hashlib.sha256()
    for array in (*images, *labels):
        digest.update(f"{getattr(array, 'shape', ())}{getattr(array, 'dtype', '')}".encode())
        digest.update(content_digest(array).encode())
    digest.update(json.dumps(_sizes(spacings)).encode())
    return digest.hexdigest()


def _sizes(spacings: Sequence[Any]) -> list[list[float]]:
    return [list(map(float, s)) for s in spacings]


@contextlib.contextmanager
def hold_out_folder(out: Path, *, resume: bool, digest: str, files: Sequence[Path],
                    spacings: Sequence[Any] = (), shaped_by: str = "") -> Iterator[None]:
    """Hold ``out`` for one training run (see the module).

    Parameters
    ----------
    out : Path
        The bundle folder (``--out``).
    resume : bool
        The run continues an interrupted one (``--resume``).
    digest : str
        :func:`inputs_digest` of the run's training samples.
    files : sequence of Path
        The image and labels files, named in the messages.
    spacings : sequence of sequence of float
        The voxel sizes in the digest, recorded on their own: a resume with another
        ``--spacing`` is told so, not that its files differ.
    shaped_by : str
        The options that make the samples from the files (a classifier's ``--level``,
        ``--input-size``...), named beside them when the digest differs.

    Raises
    ------
    UsageError
        Another living process holds ``out``; ``--resume`` with other files than the run's.
    """
    from napari_medml.bundles.checkpoints import checkpoint_folder, has_checkpoint
    from napari_medml.bundles.format import CONFIG_NAME

    folder = checkpoint_folder(out)
    created = not out.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    held = _acquire(lock, out)
    try:
        recorded = folder / INPUTS_NAME
        if not has_checkpoint(folder):  # a new run killed before its first checkpoint: the earlier run's back
            _settle(folder, replaced=False)
        if resume:
            stopped = _read(recorded)
            before, sizes = stopped.get("digest"), stopped.get("spacings")
            given, started = [str(p) for p in files], stopped.get("files")
            if before is not None and before != digest and started and started != given and sorted(started) == sorted(
                    given):  # the same files in another order draw other samples: told as such
                raise UsageError(f"--resume: the stopped run took its files in another order ({', '.join(started)}): "
                                 "resume with them in that order, or train a new run without --resume")
            if before is not None and before != digest and sizes is not None and sizes != _sizes(spacings):
                raise UsageError(f"--resume: the training images have voxel size(s) {_shown(spacings)}, the "
                                 f"stopped run's had {_shown(sizes)}: resume with the files and the --spacing it "
                                 "started with (--spacing applies only to files that store no voxel size), or train "
                                 "a new run without --resume")
            if before is not None and before != digest:
                made = f", or {shaped_by} make other samples of them" if shaped_by else ""  # (review 46)
                also = " and those options" if shaped_by else ""
                raise UsageError(f"--resume: the training files ({', '.join(f'{p}' for p in files)}) hold other "
                                 f"images or labels than the stopped run's{made}: resume with the files{also} it "
                                 "started with, or train a new run without --resume")
        else:
            saved = (out / CONFIG_NAME).is_file()
            if has_checkpoint(folder):  # a stopped run saved its best model beside them (review 37)
                model, when = (" and the model it saved", ", and the model when it ends") if saved else ("", "")
                info(f"'{out}' holds the checkpoints of an interrupted run{model}: this new run replaces them once it "
                     f"has its own{when} (the same command with --resume would have continued it)")
            elif saved:  # said before the minutes go, while Ctrl-C still keeps it
                info(f"'{out}' holds a model bundle: this run replaces it when it ends (choose another --out to "
                     "keep it)")
            _set_aside(folder)
            _write(recorded, {"digest": digest, "files": [str(p) for p in files], "spacings": _sizes(spacings)})
        yield
    finally:
        try:
            # (not when the bundle's save replaced the folder: another run may have taken the new one since)
            if not resume and _holds(lock, held):
                with contextlib.suppress(OSError):  # else they stay set aside: the next run or --resume gives them back
                    _settle(folder, has_checkpoint(folder))
                if not has_checkpoint(folder) and not (folder / REPLACED_NAME).exists():
                    _empty(folder)  # nothing to resume: no litter (emptied while held; the folder goes below)
        finally:
            with contextlib.suppress(OSError):
                if _holds(lock, held):
                    lock.unlink()  # before the flock goes: a run waiting on this file finds it gone and tries again
            if held is not None:
                os.close(held)
            with contextlib.suppress(OSError):  # only if still empty: another run may have taken it since
                folder.rmdir()
                if created:
                    out.rmdir()


def restore_set_aside(out: Path) -> None:
    """Put back an interrupted run's checkpoints that a new run set aside and, killed before
    its first checkpoint, never gave back (so that ``--resume`` finds them), holding ``out``.

    Raises
    ------
    UsageError
        Another living process holds ``out``.
    """
    from napari_medml.bundles.checkpoints import checkpoint_folder, has_checkpoint

    folder = checkpoint_folder(out)
    if not (folder / REPLACED_NAME).is_dir() or has_checkpoint(folder):
        return
    lock = folder / LOCK_NAME
    held = _acquire(lock, out)
    try:
        _settle(folder, replaced=False)
    finally:
        with contextlib.suppress(OSError):
            if _holds(lock, held):
                lock.unlink()
        if held is not None:
            os.close(held)


def _locks(name: str) -> bool:
    """``name`` is the lock, or a waiting run's file of its id (``_acquire_by_id``)."""
    return name == LOCK_NAME or name.startswith(f".{LOCK_NAME}.")


def _empty(folder: Path, keep: tuple[str, ...] = ()) -> None:
    for entry in folder.iterdir():
        if entry.name not in keep and not _locks(entry.name):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


def _set_aside(folder: Path) -> None:
    """Move an earlier run's checkpoints and inputs into ``folder/replaced``: a new run that
    fails or stops before its first checkpoint puts them back (:func:`_settle`)."""
    aside = folder / REPLACED_NAME
    entries = [e for e in folder.iterdir() if e.name != REPLACED_NAME and not _locks(e.name)]
    if entries:  # else an older set aside (a run killed before its first checkpoint) is the one to keep
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir()
        for entry in entries:
            entry.rename(aside / entry.name)


def _settle(folder: Path, replaced: bool) -> None:
    """After a new run: drop the earlier run's checkpoints once the new run has its own
    (``replaced``), else put them back."""
    aside = folder / REPLACED_NAME
    if not aside.is_dir():
        return
    if replaced:
        shutil.rmtree(aside, ignore_errors=True)
        return
    _empty(folder, keep=(REPLACED_NAME,))  # the new run's partial files: nothing it could resume
    for entry in aside.iterdir():
        entry.rename(folder / entry.name)
    aside.rmdir()


def _shown(spacings: Sequence[Any]) -> str:
    distinct = list(dict.fromkeys(" x ".join(f"{v:g}" for v in s) for s in spacings))
    return "; ".join(distinct[:3]) + ("; ..." if len(distinct) > 3 else "")


def _refuse(lock: Path, out: Path, fd: int | None = None) -> UsageError | None:
    """The line for a run refused ``lock`` (None: its holder ended meanwhile, so try again).

    ``fd``: this run's open file of ``lock``, whose ``flock`` was refused.
    """
    holder = None
    for _ in range(20):  # the holder writes its id just after it takes the lock (till then: none, or a dead run's)
        if not (lock.exists() if fd is None else _current(lock, fd)):
            return None  # removed by its holder as it ended
        pid = _read(lock).get("pid")
        if isinstance(pid, int) and _alive(pid):
            holder = pid
            break
        threading.Event().wait(0.05)
    if holder is None and fd is not None and _free(fd):  # its holder was killed before it wrote its id
        return None
    who = "" if holder is None else f" (process {holder})"
    return UsageError(f"another napari-medml run{who} is writing to '{out}': wait for it to end, or choose "
                      "another --out")


def _free(fd: int) -> bool:
    """No process holds the ``flock`` of ``fd`` now (this call takes it, and closing ``fd`` lets it go)."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _acquire(lock: Path, out: Path) -> int | None:
    """Take ``lock`` for this process: the open file holding a ``flock`` (None where the
    system has none, see the module)."""
    try:
        import fcntl
    except ImportError:
        return _acquire_by_id(lock, out)
    for _ in range(5):
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder went with the run that just ended (it was empty): again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                refusal = _refuse(lock, out, fd)
            finally:
                os.close(fd)
            if refusal is not None:
                raise refusal from None
            continue  # its holder ended in the meantime: again
        except OSError:  # a file system without flock
            os.close(fd)
            return _acquire_by_id(lock, out)
        if _current(lock, fd):  # else the run that held it removed it as it ended: take the new file
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid()}).encode())
            return fd
        os.close(fd)
    raise UsageError(f"cannot take '{lock}' for this run: remove it if no other run writes to '{out}'")


def _holds(lock: Path, held: int | None) -> bool:
    """This run's lock is still the one at ``lock`` (``held``: :func:`_acquire`'s answer)."""
    return _current(lock, held) if held is not None else _read(lock).get("pid") == os.getpid()


def _current(lock: Path, fd: int) -> bool:
    """``fd`` is the file at ``lock`` (not one its holder removed as it ended)."""
    try:
        return os.stat(lock).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _acquire_by_id(lock: Path, out: Path) -> None:
    """Create ``lock`` holding this process's id, whole at once (a hard link of a written file:
    another run never reads it half-written); take over one whose process has ended."""
    from napari_medml.io.atomic import temp_name

    mine = temp_name(lock)
    try:
        for _ in range(5):
            try:
                lock.parent.mkdir(parents=True, exist_ok=True)
                if not mine.exists():  # (again:) an ending run emptied the folder, or removed it
                    mine.write_text(json.dumps({"pid": os.getpid()}))
                os.link(mine, lock)
                return None
            except FileNotFoundError:
                continue
            except FileExistsError:
                pid = _read(lock).get("pid")
                if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
                    refusal = _refuse(lock, out)
                    if refusal is not None:
                        raise refusal from None
                    continue  # its run ended meanwhile: again
                with contextlib.suppress(OSError):
                    lock.unlink()  # left by a run that no longer runs
        raise UsageError(f"cannot take '{lock}' for this run: remove it if no other run writes to '{out}'")
    finally:
        mine.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if isinstance(pid, bool) or pid <= 0:  # a damaged file: 0 and -1 would ask about process groups
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _read(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write(path: Path, value: dict) -> None:
    from napari_medml.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2))
