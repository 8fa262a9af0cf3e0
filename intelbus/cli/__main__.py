"""``python -m intelbus.cli``: the same as the ``intelbus`` console script."""

from intelbus.cli.main import main

main()
