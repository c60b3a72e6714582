"""Command-line arguments shared by several ``htcsim`` commands.

A module of its own so that a command defined outside ``cli.py`` (``plan``)
declares its arguments exactly as ``simulate`` does without importing the CLI.
"""

from __future__ import annotations

from typing import Annotated

import typer

TraceArgument = Annotated[
    str | None,
    typer.Argument(
        help="SWF log (path or name in ./traces or $HTCSIM_TRACE_DIR); "
        "default: the embedded synthetic workload."
    ),
]
"""The workload to replay: a path, a catalog name, or none for the embedded one."""
