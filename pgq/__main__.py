"""``python -m pgq``: the ``pgq`` command (for environments where another package owns ``pgq``)."""

from pgq.cli import main

main(prog_name="pgq")
