"""The ``napari-medml`` command line: ``main`` (in :mod:`napari_medml.cli.main`) and one
module per subcommand.

Each subcommand module has ``add(subparsers)`` declaring its options and
``run(args) -> int`` doing the work; heavy imports (torch, MONAI, the engine) stay
inside ``run`` so that ``napari-medml --help`` answers at once.
"""

from napari_medml.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
