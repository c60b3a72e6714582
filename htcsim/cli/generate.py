"""``htcsim generate``: synthetic workloads (Lublin-Feitelson, HTC) written as SWF."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from htcsim import __version__
from htcsim.cli._console import console, fail

if TYPE_CHECKING:
    from htcsim.model import Workload

generate_app = typer.Typer(help="Write a synthetic workload as SWF.", no_args_is_help=True)


@generate_app.command("lublin")
def generate_lublin_cmd(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="SWF file to write (.swf or .swf.gz).")
    ],
    jobs: Annotated[int, typer.Option(help="Number of jobs.")] = 10_000,
    procs: Annotated[int, typer.Option(help="Machine size in processors.")] = 256,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file).")] = 1,
    load: Annotated[
        float | None,
        typer.Option(help="Rescale arrivals to this offered load (default: the model's)."),
    ] = None,
) -> None:
    """Lublin & Feitelson (2003) rigid parallel jobs: sizes, hyper-gamma run times, daily cycle."""
    from htcsim.workload.lublin import generate_lublin

    try:
        workload = generate_lublin(jobs, procs, seed=seed, load=load)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    _write_generated(workload, output)


@generate_app.command("htc")
def generate_htc_cmd(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="SWF file to write (.swf or .swf.gz).")
    ],
    jobs: Annotated[int, typer.Option(help="Number of jobs.")] = 100_000,
    nodes: Annotated[int, typer.Option(help="Nodes in the cluster.")] = 100,
    cores: Annotated[int, typer.Option(help="Cores per node.")] = 32,
    users: Annotated[int, typer.Option(help="Number of users.")] = 200,
    load: Annotated[
        float, typer.Option(help="Offered load (arrival rate x mean run / cores).")
    ] = 0.9,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file).")] = 1,
) -> None:
    """Many single-core jobs from many users, with bags of tasks: for million-job runs."""
    from htcsim.workload.htc import generate_htc

    try:
        workload = generate_htc(jobs, nodes, cores, seed=seed, n_users=users, load=load)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    _write_generated(workload, output)


def _write_generated(workload: Workload, output: Path) -> None:
    from htcsim.workload.swf_writer import write_workload_swf

    write_workload_swf(
        output, workload, comment=f"synthetic workload {workload.name} (htcsim {__version__})"
    )
    console.print(f"[green]wrote[/] {len(workload):,} jobs to {output}")
