"""``htcsim submit``, ``queue``, ``show``, ``history``, ``cancel``, ``hold``,
``release``, ``logs``, ``shadow``, ``nodes`` and ``workflow``: the user's side
of the live agent, as Slurm's sbatch/squeue/scontrol/scancel/sinfo are.

Why the commands talk only to the REST API (``htcsim.agent.client.http``), never to
the store: the agent may run on another machine or as another user, and its
answers already apply the rules (who sees which job, what an admin may do).

The commands live by group: a user's jobs in ``jobs``, the nodes in ``nodes``,
shadow mode in ``shadow``, pipelines in ``workflows``; what they share (output,
errors, the agent client) in ``_output``. ``CLIENT_COMMANDS`` says which
module defines which command, in the order ``htcsim --help`` lists them, so
that the command line imports only the module of the command it runs (a
shell loop of ``htcsim submit`` pays for neither the nodes' nor the
workflows' commands). Each entry's names are checked against what its module
registers by ``tests/test_layout.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

__all__ = ["CLIENT_COMMANDS", "Register"]

Register = Callable[[typer.Typer], None]
"""Adds one module's commands to the top-level app (the module is imported then)."""


def _jobs(app: typer.Typer) -> None:
    from htcsim.agent.client.jobs import jobs_app

    app.add_typer(jobs_app)


def _shadow(app: typer.Typer) -> None:
    from htcsim.agent.client.shadow import shadow_app

    app.add_typer(shadow_app)


def _nodes(app: typer.Typer) -> None:
    from htcsim.agent.client._output import PANEL
    from htcsim.agent.client.nodes import nodes_app

    app.add_typer(nodes_app, name="nodes", rich_help_panel=PANEL)


def _workflows(app: typer.Typer) -> None:
    from htcsim.agent.client._output import PANEL
    from htcsim.agent.client.workflows import workflow_app

    app.add_typer(workflow_app, name="workflow", rich_help_panel=PANEL)


CLIENT_COMMANDS: tuple[tuple[tuple[str, ...], Register], ...] = (
    (("submit", "queue", "show", "history", "cancel", "hold", "release", "logs"), _jobs),
    (("shadow",), _shadow),
    (("nodes",), _nodes),
    (("workflow",), _workflows),
)
"""(the top-level command names a module defines, the function that registers them)."""
