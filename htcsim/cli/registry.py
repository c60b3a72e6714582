"""Which module defines each ``htcsim`` command, and the typer app made of the ones needed.

Why a table rather than one module importing every command group: a command
line names one command, and building the others costs their modules' imports
and typer's work on their parameters. ``build_app(args)`` registers only the
entry whose name the command line holds, so ``htcsim submit`` starts without
the simulator's commands and ``htcsim simulate`` without the client's; a
command line that names no command (``htcsim --help``, ``htcsim``) lists them
from ``help_index`` without importing any, and a mistyped name gets them all
(typer's suggestion). The names are stated here once more than in the modules
that define the commands; ``tests/test_layout.py`` checks that each entry
registers exactly its names and that the index lists what they say.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from htcsim import __version__
from htcsim.agent.client.commands import CLIENT_COMMANDS, Register

HELP = "htcsim: replay HPC/HTC workloads through one compiled scheduling kernel."


def version_line() -> str:
    """What ``htcsim --version`` prints (``htcsim.cli.main`` prints it without typer)."""
    return f"htcsim {__version__}"


def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(version_line())
        raise typer.Exit()


def _simulate(app: typer.Typer) -> None:
    from htcsim.cli.simulate import simulate_command

    app.command("simulate")(simulate_command)


def _traces(app: typer.Typer) -> None:
    from htcsim.cli.traces import traces_app

    app.add_typer(traces_app, name="traces")


def _plan(app: typer.Typer) -> None:
    from htcsim.cli.plan import plan_command

    app.command("plan")(plan_command)


def _tune(app: typer.Typer) -> None:
    from htcsim.cli.tune import tune_command

    app.command("tune")(tune_command)


def _agent(app: typer.Typer) -> None:
    from htcsim.cli.agent import agent_app

    app.add_typer(agent_app, name="agent")


def _replay_log(app: typer.Typer) -> None:
    from htcsim.cli.agent import replay_log_command

    app.command("replay-log")(replay_log_command)


def _report(app: typer.Typer) -> None:
    from htcsim.cli.report import report_command

    app.command("report")(report_command)


def _import(app: typer.Typer) -> None:
    from htcsim.cli.imports import import_app

    app.add_typer(import_app, name="import")


def _export(app: typer.Typer) -> None:
    from htcsim.cli.export import export_app

    app.add_typer(export_app, name="export")


def _policy(app: typer.Typer) -> None:
    from htcsim.cli.policy import policy_app

    app.add_typer(policy_app, name="policy")


def _generate(app: typer.Typer) -> None:
    from htcsim.cli.generate import generate_app

    app.add_typer(generate_app, name="generate")


COMMANDS: tuple[tuple[tuple[str, ...], Register], ...] = (
    (("simulate",), _simulate),
    (("traces",), _traces),
    (("plan",), _plan),
    (("tune",), _tune),
    (("agent",), _agent),
    *CLIENT_COMMANDS,  # submit, queue, show, ..., shadow, nodes, workflow
    (("replay-log",), _replay_log),
    (("report",), _report),
    (("import",), _import),
    (("export",), _export),
    (("policy",), _policy),
    (("generate",), _generate),
)
"""Every entry: (the top-level names a module defines, the function that registers
them), in the order ``htcsim --help`` lists them within a panel."""


def command_named(args: Sequence[str]) -> str | None:
    """The command a command line names: its first word that is not an option (the
    top level has flags only, ``--version`` and ``--help``); None when the top level's
    ``--help`` comes first (``htcsim --help submit`` shows the top-level help)."""
    for arg in args:
        if arg == "--help":
            return None
        if not arg.startswith("-"):
            return arg
    return None


def _listed_only() -> None:
    """Stands for a command in the top-level help; never runs (a command line that names
    a command gets the real one)."""
    raise typer.Exit(code=2)


def build_app(args: Sequence[str] | None = None) -> typer.Typer:
    """The ``htcsim`` app with the command ``args`` names; with every command listed
    from the index when ``args`` names none; with every command built when ``args`` is
    None (the whole app) or names one that does not exist (a typo's suggestions)."""
    app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False)
    app.callback(invoke_without_command=True)(_main)
    name = None if args is None else command_named(args)
    if args is not None and name is None:
        from htcsim.cli.help_index import INDEX

        for command, panel, summary in INDEX:
            app.command(command, help=summary, rich_help_panel=panel)(_listed_only)
        return app
    chosen = [entry for entry in COMMANDS if name in entry[0]] or list(COMMANDS)
    if any(entry not in CLIENT_COMMANDS for entry in chosen):
        # tunes the process before numpy and polars load; a client command needs neither
        from htcsim.cli import _process  # noqa: F401
    for _names, register in chosen:
        register(app)
    return app
