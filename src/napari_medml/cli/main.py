"""The ``napari-medml`` command line: train, predict and evaluate on image files.

Each subcommand lives in ``napari_medml.cli.<name>`` as ``add(subparsers)``
(its options, every one with help) and ``run(args) -> int`` (read files, build a
config, drive the same core generator the widgets use, write results). A new
subcommand is one more module listed in ``SUBCOMMANDS``.

torch, MONAI and the engine are imported inside ``run``, so ``napari-medml
--help`` answers at once. Errors a user can fix end the program with one line on
stderr, ``napari-medml: error: ...``, and a non-zero exit status; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import typing
from collections.abc import Sequence

from napari_medml.cli.common import PROG, UsageError
from napari_medml.errors import Cancelled, MedMLError, NothingLearned

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "SUBCOMMANDS", "build_parser", "main"]

# Order is the order in --help.
SUBCOMMANDS = ("train", "predict", "evaluate", "pretrain")
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: what a program killed by a closed pipe returns


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse reads "-1e-3" or "-inf" as an option; as values they reach the range checks
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-inf(inity)?$", re.I)

    # argparse prints the usage and exits; we want one line and a return code.
    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status (0 on success).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 success, 1 error, 2 bad command line, 130 interrupted, 141 standard output closed by its
        reader (``napari-medml evaluate ... | head``; nothing is said).
    """
    args = None
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # what train --nproc passes on
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except NothingLearned as exc:
        return _fail(f"interrupted: {exc}", EXIT_INTERRUPTED)
    except (KeyboardInterrupt, Cancelled) as exc:  # a block-wise run's says what it kept
        return _fail(f"interrupted: {exc}" if isinstance(exc, Cancelled) and str(exc) else "interrupted",
                     EXIT_INTERRUPTED)
    except BrokenPipeError as exc:
        if _stdout_closed():
            return EXIT_CLOSED_PIPE
        return _fail(_message(exc), EXIT_ERROR)
    except Exception as exc:
        if args is not None and args.debug:
            raise
        if isinstance(exc, (MedMLError, ValueError, OSError)):  # ConfigError is a ValueError
            return _fail(_message(exc), EXIT_ERROR)
        # a bug or a library failure: still one line
        return _fail(f"{type(exc).__name__}: {_message(exc)} (run with --debug for the traceback)",
                     EXIT_ERROR)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand in ``SUBCOMMANDS``."""
    from napari_medml import __version__

    parser = _Parser(
        prog=PROG,
        description="Deep learning on medical and microscopy images from the command line: "
        "train a segmentation network or a classifier, predict with it and score "
        "predictions. Files: "
        ".nii, .nii.gz, .tif, .tiff, .npy, and Zarr/OME-Zarr (.zarr) for predict's block-wise runs and "
        "training on large images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="show the version and exit")  # fmt: skip
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when something fails")  # fmt: skip
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"napari_medml.cli.{name}").add(sub)
    return parser


def _message(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"file '{exc.filename}' does not exist; check the path"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _stdout_closed() -> bool:
    """Whether standard output's reader went away (``| head``); if so, point it at the null
    device, so that the interpreter's last flush does not fail again (the recipe of Python's
    ``signal`` documentation, "Note on SIGPIPE")."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # output captured in-process: not a closed pipe
        return False
    try:  # the write end of a pipe without a reader polls as an error (POLLERR)
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        closed = any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() (Windows): the broken pipe was ours
        closed = True
    if closed:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
        except OSError:
            pass
    return closed


def _fail(text: str, code: int) -> int:
    from napari_medml.engine.distributed import rank, world_size

    where = f" (process {rank()} of {world_size()})" if rank() else ""  # data parallel: rank 0 says it plainly
    print(f"{PROG}: error{where}: {text}", file=sys.stderr)
    return code


if __name__ == "__main__":  # python -m napari_medml.cli.main
    sys.exit(main())
