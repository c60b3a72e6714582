"""The ``htcsim`` command (top layer): one module per command group, no logic.

``registry.py`` says which module defines which command and builds the typer
app from the ones a command line needs; ``main.py`` is the entry point and
``app.py`` the app with every command; ``_console.py`` and ``_args.py`` are
the helpers the commands share. Nothing in the library imports this package:
library code raises its own errors, and only a command turns one into a
message and an exit code.
"""
