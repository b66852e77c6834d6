"""Another process holding a run's lock on --out (``cli.run_guard``), as a second napari-medml run would."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

HOLD = """
import fcntl, json, os, sys
fd = os.open({lock!r}, os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
if {write_id!r}:
    os.write(fd, json.dumps({{"pid": os.getpid()}}).encode())
print("held", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def lock_held_elsewhere(lock: Path, write_id: bool = True) -> Iterator[subprocess.Popen]:
    """A process that holds ``lock`` (its id written in it unless not ``write_id``: one that has
    just taken it) until the block ends; then it is killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(lock=str(lock), write_id=write_id)],
                              stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()
