"""``python -m butler.cli``: the ``butler`` command."""

from .commands import main

main()
