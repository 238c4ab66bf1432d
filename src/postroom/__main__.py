"""``python -m postroom`` is the ``postroom`` command."""

from postroom.cli.main import main

main()
