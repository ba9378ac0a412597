"""``python -m iris_client``: the ``iris`` command line."""

from iris_client.cli import main

main()
