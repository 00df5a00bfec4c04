"""``python -m gopherq``: the same as the ``gopherq`` command."""

from gopherq.cli import main

main()
