"""Writing outputs so that a crash or a kill never leaves half a file or a stray temp.

Every output (a labels file, a probability map, a CSV table, a model bundle) is checked
before the work starts (:func:`check_file_target`, :func:`check_folder_target`), written
under a hidden temporary name in the same folder and renamed into place
(:func:`atomic_path`; ``os.replace`` is atomic within a folder). Temporary names carry the
writing process's id, ``.NAME.tmp-<pid>-<random>``: the next write of the same output
removes those of processes that no longer run (:func:`remove_stale_temps`), so even a
SIGKILL leaves nothing behind for long.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path

from napari_medml.errors import InputError

__all__ = ["atomic_path", "check_file_target", "check_folder_target", "interrupted_copy", "left_by_dead_writers",
           "remove_stale_temps", "restore_interrupted", "temp_name"]


def temp_name(target: Path, kind: str = "tmp", suffix: str = "") -> Path:
    """A hidden name next to ``target``: ``.NAME.<kind>-<pid>-<random><suffix>``."""
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


def remove_stale_temps(target: Path) -> None:
    """Remove temp and old names of ``target`` left by writers that no longer run.

    An old copy whose writer died between moving it aside and moving the new one in (two
    renames: a folder cannot replace a folder in one) is put back first
    (:func:`restore_interrupted`)."""
    restore_interrupted(target)
    for kind, entry in left_by_dead_writers(target):
        if kind == "old" and not target.exists() and not target.is_symlink():
            continue  # could not be put back: never removed while it is the only copy
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def restore_interrupted(target: Path) -> Path | None:
    """Put back the newest complete copy of a folder ``target`` whose writer died between the two
    renames of its replacement (``target`` -> old name, new copy -> ``target``), so that readers find it.

    Parameters
    ----------
    target : Path
        The folder (a bundle, a checkpoint) to repair; nothing happens while it exists.

    Returns
    -------
    Path or None
        The copy that was put back, if any.
    """
    if target.exists() or target.is_symlink():
        return None
    left = left_by_dead_writers(target)
    old = next((entry for kind, entry in left if kind == "old"), None)
    if old is None:
        return None
    # a writer moves the old copy aside only once its new one is complete: that one is newer
    writer = old.name[len(f".{target.name}.old-"):].split("-", 1)[0]
    newer = [entry for kind, entry in left
             if kind == "tmp" and entry.name.startswith(f".{target.name}.tmp-{writer}-")]
    for copy in (*newer, old):
        try:
            os.replace(copy, target)
            return copy
        except OSError:
            continue
    return None


def interrupted_copy(target: Path) -> Path | None:
    """The old copy of ``target`` that a writer which no longer runs moved aside and never
    replaced (it died between the two renames of a folder's replacement), if any."""
    return next((entry for kind, entry in left_by_dead_writers(target) if kind == "old"), None)


def left_by_dead_writers(target: Path, kinds: Collection[str] = ("tmp", "old")) -> list[tuple[str, Path]]:
    """The hidden names of ``target`` (:func:`temp_name`) whose writers no longer run.

    Parameters
    ----------
    target : Path
        The output those names were made for.
    kinds : collection of str
        The kinds of name to list (``tmp``, ``old``, or a writer's own).

    Returns
    -------
    list of (str, Path)
        ``(kind, path)`` in name order.
    """
    if not target.parent.is_dir():
        return []
    prefix, found = f".{target.name}.", []
    for entry in sorted(target.parent.iterdir()):
        if not entry.name.startswith(prefix):
            continue
        kind, _, rest = entry.name[len(prefix):].partition("-")
        pid = rest.split("-", 1)[0]
        if kind in kinds and pid.isdigit() and not _alive(int(pid)):
            found.append((kind, entry))
    return found


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: not ours to judge
    return True


def _writable_parent(target: Path, what: str) -> None:
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {what} '{target}': '{parent}' is a file, not a folder; "
                         "choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} '{target}': folder '{parent}' is not writable; "
                         "choose a folder you can write to")


def check_file_target(path: str | Path, what: str = "output") -> Path:
    """Check, before any work, that a file can be written at ``path``; returns it resolved.

    Raises
    ------
    InputError
        ``path`` is a folder, lies below a file, or its folder (or the file) is not writable.
    """
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise InputError(f"{what} '{path}' is a folder: give a file name")
    _writable_parent(target, what)
    if target.exists() and not os.access(target, os.W_OK):
        raise InputError(f"cannot write {what} '{path}': the file is read-only; choose another name")
    return target


def check_folder_target(path: str | Path, *, allowed: Collection[str], what: str) -> Path:
    """Check, before any work, that a folder output can be written at ``path``.

    An existing folder is accepted only when every entry's name is in ``allowed`` (what an
    earlier write of the same kind left), so a user's own files are never replaced.

    Raises
    ------
    InputError
        ``path`` is a file, lies below a file, holds other files, or cannot be written.
    """
    target = Path(path).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise InputError(f"cannot write {what} to '{target}': a file of that name exists; give a folder name")
    if target.is_dir():
        foreign = sorted(p.name for p in target.iterdir() if p.name not in allowed)
        if foreign:
            raise InputError(f"'{target}' exists and holds other files ({', '.join(foreign[:3])}): "
                             f"choose a new or empty folder for {what}")
        if not os.access(target, os.W_OK | os.X_OK):
            raise InputError(f"cannot write {what} to '{target}': the folder is not writable")
    _writable_parent(target, what)
    return target


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    ``suffix`` is appended to the temporary name (an extension such as ``.nii.gz``, for
    writers that choose the format by extension). On an error the temporary file is
    removed and ``path`` is left as it was.
    """
    target = Path(path).expanduser().absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = temp_name(target, suffix=suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
