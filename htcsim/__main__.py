"""``python -m htcsim`` is the ``htcsim`` command."""

from htcsim.cli.main import main

main()
