"""The ``htcsim`` command: one typer app, each command group in a module of its own.

Commands call the library and print; none holds logic. Every module here keeps
its top-level imports to typer and rich, and imports the library inside the
command that uses it, so ``htcsim submit`` starts without numpy or polars.
"""

from __future__ import annotations

from typing import Annotated

import typer

from htcsim import __version__
from htcsim.agent.client.commands import client_app
from htcsim.cli import _process  # noqa: F401  (tunes the process before numpy and polars load)
from htcsim.cli._console import console
from htcsim.cli.agent import agent_app, replay_log_command
from htcsim.cli.generate import generate_app
from htcsim.cli.imports import import_app
from htcsim.cli.plan import plan_command
from htcsim.cli.policy import policy_app
from htcsim.cli.report import report_command
from htcsim.cli.simulate import simulate_command
from htcsim.cli.traces import traces_app
from htcsim.cli.tune import tune_command

app = typer.Typer(
    help="htcsim: replay HPC/HTC workloads through one compiled scheduling kernel.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        console.print(f"htcsim {__version__}")
        raise typer.Exit()


app.command("simulate")(simulate_command)
app.add_typer(traces_app, name="traces")
app.command("plan")(plan_command)
app.command("tune")(tune_command)
app.add_typer(agent_app, name="agent")
app.add_typer(client_app)  # submit, queue, show, cancel, hold, release, ...
app.command("replay-log")(replay_log_command)
app.command("report")(report_command)
app.add_typer(import_app, name="import")
app.add_typer(policy_app, name="policy")
app.add_typer(generate_app, name="generate")
