"""``python -m pgq.cli``: the ``pgq`` command (the tests and the bench start workers this way)."""

from pgq.cli import main

main()
