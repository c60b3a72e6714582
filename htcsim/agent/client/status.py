"""``htcsim agent status``: the agent's health as ``/healthz`` reports it.

Why a command: an operator (or a script) wants one line that says whether the
agent runs jobs, and if not quite, why, without reading the log: ``ok``,
``degraded`` (it works, impaired: the shepherd restarting, its keeper gone)
or ``down`` (it cannot run jobs), with the shepherd's pids and restarts. The
exit code says the same: 0 ok, 1 degraded, 2 down or unreachable. No token is
needed (``/healthz`` answers without one).
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from htcsim.agent.client._output import JsonOption, _agent, _print_json, console, human_time

EXIT_CODES = {"ok": 0, "degraded": 1, "down": 2}
STYLES = {"ok": "green", "degraded": "yellow", "down": "bold red"}


def status_command(json_out: JsonOption = False) -> None:
    """The agent's health: ok, degraded or down, why, and its shepherd's restarts
    (exit code 0 ok, 1 degraded, 2 down or unreachable)."""
    with _agent() as client:
        health = client.health()
        url = client.url
    state = str(health.get("status", "down"))
    if json_out:
        _print_json(health)
    else:
        _print(url, state, health)
    raise typer.Exit(code=EXIT_CODES.get(state, 2))


def _print(url: str, state: str, health: dict[str, Any]) -> None:
    style = STYLES.get(state, "bold red")
    console.print(f"agent {escape(url)}: [{style}]{escape(state)}[/]", soft_wrap=True)
    reasons = list(health.get("reasons") or [])
    if not reasons and health.get("detail"):
        reasons = [str(health["detail"])]
    for reason in reasons:
        console.print(f"  {escape(str(reason))}", soft_wrap=True)
    shepherd = health.get("shepherd")
    if isinstance(shepherd, dict):
        keeper = shepherd.get("keeper")
        keeper_text = f"keeper {keeper}" if keeper else "no keeper"
        console.print(f"shepherd: worker {shepherd.get('pid')}, {keeper_text}")
        restarts = int(shepherd.get("restarts") or 0)
        line = f"restarts: {restarts}"
        if restarts:
            line += (
                f", last at {human_time(shepherd.get('last_restart'))}: "
                f"{shepherd.get('last_restart_reason') or '?'}"
            )
        console.print(escape(line), soft_wrap=True)
    if "passes" in health:
        console.print(f"scheduling passes: {health['passes']}")
