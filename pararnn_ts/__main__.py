"""``python -m pararnn_ts ...``: the ``pararnn-ts`` command."""

from .cli import console

console()
