"""The ``htcsim`` command (top layer): one module per command group, no logic.

``app.py`` assembles the typer app; ``_console.py`` and ``_args.py`` are the
helpers the commands share. Nothing in the library imports this package:
library code raises its own errors, and only a command turns one into a
message and an exit code.
"""
