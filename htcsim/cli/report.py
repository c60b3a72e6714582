"""``htcsim report``: compare result directories in one HTML page, or report an agent's usage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from htcsim.cli import _paths
from htcsim.cli._console import console, escape, fail


def report_command(
    results: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Result directories (written by 'simulate --out'), in column order; each "
            "column is labelled by the run's --name, else by its directory."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="HTML file to write (self-contained).")
    ] = Path("report.html"),
    title: Annotated[
        str | None, typer.Option(help="Page title (default: the runs' names).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Live agent: usage since then (7d, 12h, 2026-11-01, ISO time), as sreport."
        ),
    ] = None,
    until: Annotated[str | None, typer.Option(help="Live agent: end of the window.")] = None,
    db: Annotated[Path, typer.Option(help="Live agent: its store.")] = Path(
        "htcsim-agent/agent.db"
    ),
    csv: Annotated[
        Path | None, typer.Option(help="Live agent: write users.csv, groups.csv here.")
    ] = None,
    swf: Annotated[
        Path | None,
        typer.Option(help="Live agent: export the finished jobs as SWF (replay, tune on it)."),
    ] = None,
) -> None:
    """Compare simulation runs in one offline HTML file; or, with --since, report a
    live agent's usage per user and group, waits and utilization from its store."""
    if since is not None or not results:
        _agent_report(since or "7d", until, db, csv, swf)
        return
    from htcsim.report.html import ReportError, write_report

    _paths.output_file(out, "--out", make_parents=True)
    try:
        path = write_report(results, out, title=title)
    except ReportError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:  # reading is wrapped in ReportError: this is the output
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from exc
    console.print(f"[green]wrote[/] {escape(path)}")


def _agent_report(
    since: str, until: str | None, db: Path, csv: Path | None, swf: Path | None
) -> None:
    import time

    from htcsim.agent.engine.accounting import export_swf, parse_since, print_usage, usage_report
    from htcsim.agent.store.jobs import AgentStore
    from htcsim.agent.store.schema import StoreError

    if not db.exists():
        raise fail(f"--db {db}: no agent store there (give --db, or simulation result directories)")
    _paths.input_file(db, "--db")
    if csv is not None:
        _paths.output_dir(csv, "--csv")
    if swf is not None:
        _paths.output_file(swf, "--swf")
    now = time.time()
    try:
        start = parse_since(since, now)
        end = parse_since(until, now) if until else now
        store = AgentStore(db, readonly=True)
    except (ValueError, StoreError) as exc:
        raise fail(str(exc)) from exc
    cores = store.total_cores()
    usage = usage_report(store, start, end, total_cores=cores)
    print_usage(usage, console)
    try:
        if csv is not None:
            for path in usage.to_csv(csv):
                console.print(f"[green]wrote[/] {escape(path)}")
        if swf is not None:
            n = export_swf(store, start, end, swf, total_cores=cores)
            console.print(f"[green]wrote[/] {escape(swf)} ({n:,} jobs)")
    except OSError as exc:
        raise fail(f"cannot write {exc.filename or csv or swf}: {exc.strerror or exc}") from exc
