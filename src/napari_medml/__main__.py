"""``python -m napari_medml``: the command line, as torchrun starts it
(``torchrun --nproc-per-node N -m napari_medml train ...``)."""

import sys

from napari_medml.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
