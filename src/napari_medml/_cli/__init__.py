"""Subcommands of the ``napari-medml`` command line (see ``napari_medml.cli``).

Each module has ``add(subparsers)`` declaring its options and ``run(args) -> int``
doing the work; heavy imports (torch, MONAI, the engine) stay inside ``run``.
"""
