"""Plumbing every hf_ext package shares: lazy imports (:mod:`.imports`), loggers (:mod:`.logging`), progress bars
(:mod:`.progress`) and the command-line options (:mod:`.cli`). Standard library only at import time."""
