"""The console helpers every ``htcsim`` command shares: where output goes and how errors read.

Private to ``htcsim.cli``: library code raises its own errors and only the
commands turn them into one line on stderr and an exit code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from htcsim.cluster import Cluster
    from htcsim.model import Workload

console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; the caller raises the returned exit (code 2)."""
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def print_loading(workload: Workload, cluster: Cluster | None = None) -> None:
    """One line on what was loaded, then what loading dropped or changed, by reason."""
    m = workload.machine
    if cluster is None:
        nodes = f"{m.total_cores:,} cores ({m.n_nodes} nodes x {m.cores_per_node})"
    else:
        kinds = ", ".join(f"{t.count} {t.name} x {t.cores}" for t in cluster.node_types)
        nodes = f"{cluster.total_cores:,} cores ({kinds})"
    console.print(f"[bold]{workload.name}[/]: {len(workload):,} jobs on {nodes}")
    for title, counts in (("dropped", workload.dropped), ("changed", workload.changed)):
        if counts:
            parts = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
            console.print(f"  {title}: {parts}")
