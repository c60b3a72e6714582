"""The console helpers every ``htcsim`` command shares: where output goes and how errors read.

Private to ``htcsim.cli``: library code raises its own errors and only the
commands turn them into one line on stderr and an exit code. Every text that
comes from outside (a path, a file's name, a library's message naming a
``[section]``) goes through :func:`escape` before rich sees it: rich reads
square brackets as markup and would drop the name from the sentence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape as _escape

if TYPE_CHECKING:
    from htcsim.cluster import Cluster
    from htcsim.model import Workload

console = Console()
err_console = Console(stderr=True)


def escape(value: object) -> str:
    """``value`` as text rich prints as it is (``[easy]`` stays ``[easy]``)."""
    return _escape(str(value))


def fail(message: str, flags: Mapping[str, str] | None = None) -> typer.Exit:
    """Print ``error: message`` on stderr, on one line; the caller raises the returned exit (2).

    ``flags`` maps the library's parameter names to the options that set them
    (``{"n_jobs": "--jobs"}``), so a message raised by the library names what
    the user typed (see :func:`with_flags`).
    """
    text = with_flags(message, flags) if flags else message
    err_console.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True)
    return typer.Exit(code=2)


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr, on one line."""
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", soft_wrap=True)


def with_flags(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with each parameter name replaced by its option.

    A name with an underscore (``max_procs``) is an identifier wherever it
    stands; a plain word (``load``, ``nodes``) is taken for the parameter only
    where it opens the message ("load must be positive"), since elsewhere it
    is as likely to be English.
    """
    for name, flag in flags.items():
        if "_" in name:
            pattern = rf"(?<![\w-]){re.escape(name)}(?!\w)"
        else:
            pattern = rf"^{re.escape(name)}(?!\w)"
        message = re.sub(pattern, flag, message)
    return message


def print_loading(workload: Workload, cluster: Cluster | None = None) -> None:
    """One line on what was loaded, then what loading dropped or changed, by reason."""
    m = workload.machine
    if cluster is None:
        nodes = f"{m.total_cores:,} cores ({m.n_nodes} nodes x {m.cores_per_node})"
    else:
        kinds = ", ".join(f"{t.count} {escape(t.name)} x {t.cores}" for t in cluster.node_types)
        nodes = f"{cluster.total_cores:,} cores ({kinds})"
    console.print(f"[bold]{escape(workload.name)}[/]: {len(workload):,} jobs on {nodes}")
    for title, counts in (("dropped", workload.dropped), ("changed", workload.changed)):
        if counts:
            parts = ", ".join(f"{escape(k)} {v:,}" for k, v in sorted(counts.items()))
            console.print(f"  {title}: {parts}")
