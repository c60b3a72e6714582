"""``htcsim shadow``: what the agent's shadow policy (``agent serve
--shadow-policy``) would have done otherwise than the active one: the jobs it
would have started at another time or on another node, and its simulated waits
beside the live ones.
"""

from __future__ import annotations

from typing import Annotated

import typer

from htcsim.agent.client._output import (
    PANEL,
    JsonOption,
    _agent,
    _print_json,
    _print_table,
    _table,
    console,
    err_console,
    escape,
    human_duration,
    human_time,
)

shadow_app = typer.Typer(add_completion=False)
"""``htcsim shadow``; ``htcsim.agent.client.commands`` registers it at the top level."""


def _seconds(value: float | None) -> str:
    """A wait statistic: tenths of a second under a minute (means are fractions)."""
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 60 else human_duration(value)


@shadow_app.command("shadow", rich_help_panel=PANEL)
def shadow_command(
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="Differences to list (by job id).", min=0)
    ] = 20,
    json_out: JsonOption = False,
) -> None:
    """Shadow mode: where the candidate policy (agent serve --shadow-policy) would have
    started jobs otherwise than the active one, and its simulated waits."""
    with _agent() as client:
        report = client.shadow(limit)
    if json_out:
        _print_json(report)
        return
    s = report["summary"]
    console.print(
        f"shadow policy {escape(s['policy'])} (active {escape(s['active_policy'] or '?')}): "
        f"{s['jobs_compared']} jobs compared, {s['differences']} started differently",
        soft_wrap=True,
    )
    waits = _table("WAIT", "LIVE", "SHADOW")
    for key in ("mean", "median", "p95"):
        waits.add_row(key, _seconds(s["live_wait_s"][key]), _seconds(s["shadow_wait_s"][key]))
    _print_table(waits)
    horizon = human_time(s["horizon"]) if s["horizon"] is not None else "nothing yet"
    console.print(
        f"started by the shadow only: {s['shadow_only']}, by the live agent only: "
        f"{s['live_only']}; decided up to {horizon} (lag {_seconds(s['lag_s'])})",
        soft_wrap=True,
    )
    if s["error"]:
        err_console.print(f"[bold red]the shadow stopped:[/] {escape(s['error'])}")
    if not report["differences"]:
        return
    table = _table(
        "ID", "LIVE START", "LIVE NODE", "LIVE WAIT", "SHADOW START", "SHADOW NODE", "SHADOW WAIT"
    )
    for job in report["differences"]:
        table.add_row(
            str(job["job_id"]),
            human_time(job["live_start"]),
            escape(job["live_node"]),
            human_duration(job["live_wait_s"]),
            human_time(job["shadow_start"]),
            escape(job["shadow_node"]),
            human_duration(job["shadow_wait_s"]),
        )
    _print_table(table)
    if s["differences"] > len(report["differences"]):
        console.print(f"(the first {len(report['differences'])}; --limit N shows more)")
