"""``python -m htcsim`` is the ``htcsim`` command."""

from htcsim.cli.app import app

app(prog_name="htcsim")
