"""The ``htcsim`` entry point: ``--version`` at once, and only the command asked for built.

Why not the typer app itself: building it means importing every command
module and typer's work on every parameter, for one command that runs. A
shell loop of ``htcsim submit`` pays the interpreter's start and what this
module loads: ``--version`` needs no typer at all, and any other command line
gets an app holding only the command it names (``htcsim.cli.registry``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``htcsim`` with ``argv`` (default: the process's arguments); exits as typer does."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        from htcsim import __version__

        sys.stdout.write(f"htcsim {__version__}\n")  # as registry.version_line(), without typer
        return
    from htcsim.cli.registry import build_app

    build_app(args)(args=args, prog_name="htcsim")
