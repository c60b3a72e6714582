"""``htcsim traces``: the SWF logs found here, and fetching one from the archive."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from htcsim.cli import _paths
from htcsim.cli._console import console, escape, fail

traces_app = typer.Typer(help="List the SWF logs found, or fetch one from the archive.")


@traces_app.callback(invoke_without_command=True)
def traces(ctx: typer.Context) -> None:
    """List the SWF logs in ./traces and $HTCSIM_TRACE_DIR with job counts and machine size."""
    if ctx.invoked_subcommand is not None:
        return
    from htcsim.workload.catalog import list_traces, trace_dirs

    dirs = trace_dirs()
    found = list_traces(dirs)
    if not found:
        searched = escape(", ".join(str(d) for d in dirs) or "./traces")
        console.print(
            f"no SWF logs found (searched: {searched}); set HTCSIM_TRACE_DIR or run "
            "'htcsim traces fetch NAME'"
        )
        return
    table = Table(title="SWF logs")
    for column in ("name", "jobs", "MaxProcs", "MaxNodes", "size", "folder"):
        table.add_column(column, justify="left" if column in ("name", "folder") else "right")
    for info in found:
        table.add_row(
            escape(info.name),
            f"{info.n_jobs:,}",
            str(info.max_procs or "-"),
            str(info.max_nodes or "-"),
            f"{info.size_bytes / 1e6:.1f} MB",
            escape(info.path.parent),
        )
    console.print(table)


@traces_app.command("fetch")
def traces_fetch(
    name: Annotated[str, typer.Argument(help="Short name of a Parallel Workloads Archive log.")],
    dest: Annotated[Path, typer.Option(help="Folder to download into.")] = Path("traces"),
) -> None:
    """Download a log from the Parallel Workloads Archive into ./traces."""
    from htcsim.workload.catalog import TraceFetchError, fetch_trace

    _paths.output_dir(dest, "--dest")
    try:
        path = fetch_trace(name, dest)
    except (TraceFetchError, ValueError) as exc:
        raise fail(str(exc)) from exc
    console.print(f"[green]fetched[/] {escape(path)}")
