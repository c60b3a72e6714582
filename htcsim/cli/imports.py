"""``htcsim import``: bring a site's own history in (Slurm's sacct) as an SWF log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from htcsim import __version__
from htcsim.cli._console import console, fail

import_app = typer.Typer(
    help="Turn a scheduler's accounting history into a workload (SWF).", no_args_is_help=True
)


@import_app.command("sacct")
def import_sacct(
    file: Annotated[
        Path,
        typer.Argument(
            help="Output of sacct --parsable2 (plain or .gz).", exists=True, dir_okay=False
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="SWF file to write (default: FILE's stem + .swf)."),
    ] = None,
    nodes: Annotated[
        int | None, typer.Option(help="Nodes in the cluster (default: inferred from the history).")
    ] = None,
    cores_per_node: Annotated[
        int | None, typer.Option(help="Cores per node (default: the most one job held on a node).")
    ] = None,
    gpus_per_node: Annotated[
        int | None, typer.Option(help="GPUs per node (default: the most one job held on a node).")
    ] = None,
    timezone: Annotated[
        str, typer.Option(help="Time zone sacct printed its times in (IANA name).")
    ] = "UTC",
    names: Annotated[
        Path | None,
        typer.Option(
            help="Also write the id -> name tables (users, groups, partitions, QOS, job ids) "
            "as JSON."
        ),
    ] = None,
) -> None:
    """Slurm accounting history (sacct --parsable2) as an SWF workload to replay."""
    from htcsim.workload.sacct import read_sacct, write_name_tables
    from htcsim.workload.swf_writer import write_workload_swf

    try:
        imported = read_sacct(
            file,
            nodes=nodes,
            cores_per_node=cores_per_node,
            gpus_per_node=gpus_per_node,
            timezone=timezone,
        )
    except ValueError as exc:  # SacctError (a bad file) or a bad option
        raise fail(str(exc)) from exc
    workload = imported.workload
    target = out if out is not None else file.with_name(f"{workload.name}.swf")
    if target.resolve() == file.resolve():
        raise fail(f"{target} is the input file; name another with --out")
    write_workload_swf(
        target, workload, comment=f"imported from {file.name} (htcsim {__version__})"
    )
    if names is not None:
        write_name_tables(names, imported)
    machine = workload.machine
    console.print(
        f"[green]wrote[/] {len(workload):,} jobs to {target}: {machine.n_nodes} nodes x "
        f"{machine.cores_per_node} cores, {machine.gpus_per_node} GPUs per node"
    )
    for label, counts in (("dropped", workload.dropped), ("changed", workload.changed)):
        for reason, count in sorted(counts.items()):
            console.print(f"  {label} {count:,}: {reason}")
