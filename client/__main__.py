"""``python -m client``: the ``iris`` command line."""

from client.cli import main

main()
