"""``htcsim submit``, ``queue``, ``show``, ``history``, ``cancel``, ``hold``,
``release``, ``logs``, ``shadow``, ``nodes`` and ``workflow``: the user's side
of the live agent, as Slurm's sbatch/squeue/scontrol/scancel/sinfo are.

Why the commands talk only to the REST API (``htcsim.agent.client.http``), never to
the store: the agent may run on another machine or as another user, and its
answers already apply the rules (who sees which job, what an admin may do).

The commands live by group: a user's jobs in ``jobs``, the nodes in ``nodes``,
shadow mode in ``shadow``, pipelines in ``workflows``; what they share (output,
errors, the agent client) in ``_output``. ``client_app`` gathers them in the
order ``htcsim --help`` lists them.
"""

from __future__ import annotations

import typer

from htcsim.agent.client._output import PANEL
from htcsim.agent.client.jobs import jobs_app
from htcsim.agent.client.nodes import nodes_app
from htcsim.agent.client.shadow import shadow_app
from htcsim.agent.client.workflows import workflow_app

__all__ = ["client_app"]

client_app = typer.Typer(add_completion=False)
"""Commands merged into the top-level ``htcsim`` app (``app.add_typer(client_app)``)."""
client_app.add_typer(jobs_app)  # submit, queue, show, history, cancel, hold, release, logs
client_app.add_typer(shadow_app)
client_app.add_typer(nodes_app, name="nodes", rich_help_panel=PANEL)
client_app.add_typer(workflow_app, name="workflow", rich_help_panel=PANEL)
