"""The whole ``htcsim`` command as one typer app, every command registered.

For whoever wants the command line as a whole: tests drive it through typer's
CliRunner, and tools read its help. The ``htcsim`` process itself starts
through ``htcsim.cli.main``, which builds only the command it runs; both come
from the one table of ``htcsim.cli.registry``.
"""

from __future__ import annotations

from htcsim.cli.registry import build_app

app = build_app()
