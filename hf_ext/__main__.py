"""``python -m hf_ext …`` runs the ``hf-ext`` command line (``torchrun -m hf_ext …``, ``accelerate launch -m hf_ext …``)."""

import sys

from hf_ext.cli import main

if __name__ == "__main__":
    sys.exit(main())
