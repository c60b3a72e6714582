"""``python -m htcsim`` is the ``htcsim`` command."""

from htcsim.cli import app

app(prog_name="htcsim")
