"""``napari-medml train --nproc N``: start N training processes through torchrun.

The shortcut runs ``python -m torch.distributed.run --standalone --nproc-per-node N -m
napari_medml <the same arguments without --nproc>`` in a subprocess and waits for it.
The processes train one network with DistributedDataParallel
(:mod:`napari_medml.engine.distributed`); rank 0 prints and writes the bundle.

Ctrl-C: torchrun itself answers a SIGINT by signalling its processes and then reporting
its own failure, so the launcher does not pass the signal on. It starts torchrun in a
session of its own (the terminal's Ctrl-C reaches only the launcher) and, on the first
Ctrl-C, creates a stop file whose path the processes know (``NAPARI_MEDML_STOP_FILE``):
every process sees it within a quarter second, they agree to stop at the same step,
rank 0 saves the best model and the run ends with status 0, as a one-process run does.
A second Ctrl-C sends SIGINT to torchrun (the processes abort) and ends with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from napari_medml.cli.common import PROG, UsageError, info

__all__ = ["STOP_FILE_ENV", "die_with_parent", "launch", "threads_per_process", "wants_launch", "watch_stop_file",
           "without_nproc"]

STOP_FILE_ENV = "NAPARI_MEDML_STOP_FILE"
POLL_S = 0.25


def wants_launch(args: argparse.Namespace) -> bool:
    """True when ``--nproc`` asks for more than one process and torchrun has not started us."""
    from napari_medml.engine.distributed import launched

    return (getattr(args, "nproc", None) or 1) > 1 and not launched()


def without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` less ``--nproc N`` / ``--nproc=N`` (a process started by torchrun ignores it anyway)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(args: argparse.Namespace) -> int:
    """Run this command in ``args.nproc`` processes under torchrun; return the exit status.

    Returns
    -------
    int
        0 when the processes finished (also after a first Ctrl-C: the best model is
        saved), 1 when one failed (its error line is above torchrun's report), 130
        after a second Ctrl-C.
    """
    from napari_medml.cli.main import EXIT_ERROR, EXIT_INTERRUPTED

    nproc = int(args.nproc)
    _check_gpus(nproc, args.device)
    folder = Path(tempfile.mkdtemp(prefix="napari-medml-launch-"))
    env = {**os.environ, STOP_FILE_ENV: str(folder / "stop")}
    # torchrun sets 1 thread per process (with a warning) when unset; share the cores instead
    env["OMP_NUM_THREADS"] = str(threads_per_process(nproc))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "napari_medml", *without_nproc(args.argv)]
    info(f"training in {nproc} processes (torchrun); Ctrl-C stops them all after the current step")
    aborted = False
    try:
        proc = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=die_with_parent)
        with _forward_interrupts(proc, folder / "stop") as state:
            code = proc.wait()
        aborted = state["aborted"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if aborted:
        return EXIT_INTERRUPTED
    return 0 if code == 0 else EXIT_ERROR


def threads_per_process(nproc: int) -> int:
    """The CPU threads each of ``nproc`` training processes uses: ``OMP_NUM_THREADS`` when
    set to a positive number, else the machine's cores shared out (at least 1)."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, (os.cpu_count() or 1) // nproc)


def folder_held_elsewhere() -> bool:
    """In a process torchrun started: whether another process holds ``--out`` (the
    ``--nproc`` launcher, or rank 0 under a bare ``torchrun``), so this one must not."""
    from napari_medml.engine.distributed import is_main

    return STOP_FILE_ENV in os.environ or not is_main()


def die_with_parent() -> None:
    """Linux: have this process killed when the process that started it ends (torchrun, and
    each process torchrun starts). Without it a launcher killed by SIGKILL left torchrun and
    its processes training, and they wrote the bundle after the user had killed the command."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def _check_gpus(nproc: int, device: str) -> None:
    """One process per GPU: refuse more processes than GPUs before starting any."""
    if device == "cpu" or device == "mps":
        return
    import torch

    count = torch.cuda.device_count()
    if count and nproc > count:
        raise UsageError(f"--nproc {nproc} but this machine has {count} GPUs (one process per GPU): "
                         f"use --nproc {count}, or --device cpu")


@contextlib.contextmanager
def _forward_interrupts(proc: subprocess.Popen, stop_file: Path) -> Iterator[dict[str, bool]]:
    """First Ctrl-C (or SIGTERM): create the stop file. Second: SIGINT to torchrun."""
    state = {"aborted": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def on_interrupt(signum: int, frame: Any) -> None:
        if stop_file.exists():
            state["aborted"] = True
            proc.send_signal(signal.SIGINT)
            return
        stop_file.touch()
        print(f"\n{PROG}: stopping all processes after this step and keeping the best model "
              "(Ctrl-C again to abort)", file=sys.stderr)  # fmt: skip

    def on_terminate(signum: int, frame: Any) -> None:  # kill, a batch scheduler's time limit: as Ctrl-C
        on_interrupt(signum, frame)

    previous = signal.signal(signal.SIGINT, on_interrupt), signal.signal(signal.SIGTERM, on_terminate)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


@contextlib.contextmanager
def watch_stop_file(stop: Any) -> Iterator[None]:
    """In a process the launcher started: ``stop.stop()`` once its stop file appears."""
    path = os.environ.get(STOP_FILE_ENV)
    if not path:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(POLL_S):
            if os.path.exists(path):
                stop.stop()
                return

    thread = threading.Thread(target=watch, name="napari-medml-stop-file", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
