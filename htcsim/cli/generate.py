"""``htcsim generate``: synthetic workloads (Lublin-Feitelson, HTC) written as SWF."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from htcsim import __version__
from htcsim.cli import _paths
from htcsim.cli._console import console, escape, fail, warn

if TYPE_CHECKING:
    from htcsim.model import Workload

generate_app = typer.Typer(help="Write a synthetic workload as SWF.", no_args_is_help=True)

AllowEmptyOption = Annotated[
    bool,
    typer.Option(
        "--allow-empty", help="Accept --jobs 0: write a log with no job (a warning, exit 0)."
    ),
]
LUBLIN_FLAGS = {"n_jobs": "--jobs", "n_procs": "--procs", "load": "--load"}
HTC_FLAGS = {
    "n_jobs": "--jobs",
    "n_nodes": "--nodes",
    "cores_per_node": "--cores",
    "n_users": "--users",
    "load": "--load",
}
"""The generators' parameters and the options that set them, for their error messages."""


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
    allow_empty: AllowEmptyOption = False,
) -> None:
    """Lublin & Feitelson (2003) rigid parallel jobs: sizes, hyper-gamma run times, daily cycle."""
    from htcsim.workload.lublin import generate_lublin

    _check(output, jobs, allow_empty, {"--procs": procs})
    try:
        workload = generate_lublin(jobs, procs, seed=seed, load=load)
    except ValueError as exc:
        raise fail(str(exc), LUBLIN_FLAGS) from exc
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
    allow_empty: AllowEmptyOption = False,
) -> None:
    """Many single-core jobs from many users, with bags of tasks: for million-job runs."""
    from htcsim.workload.htc import generate_htc

    _check(output, jobs, allow_empty, {"--nodes": nodes, "--cores": cores, "--users": users})
    try:
        workload = generate_htc(jobs, nodes, cores, seed=seed, n_users=users, load=load)
    except ValueError as exc:
        raise fail(str(exc), HTC_FLAGS) from exc
    _write_generated(workload, output)


def _check(output: Path, jobs: int, allow_empty: bool, sizes: dict[str, int]) -> None:
    """Before generating: the output can be written, the machine's ``sizes`` (by
    option) are at least 1, and a log of no job is what was asked for."""
    _paths.output_file(output, "--output")
    for flag, value in sizes.items():
        if value < 1:
            raise fail(f"{flag} must be at least 1, got {value}")
    if jobs < 0:
        raise fail(f"--jobs must be >= 0, got {jobs}")
    if jobs == 0:
        if not allow_empty:
            raise fail("--jobs 0 writes a log with no job; --allow-empty writes it anyway")
        warn("--jobs 0: writing a log with no job, as --allow-empty asks")


def _write_generated(workload: Workload, output: Path) -> None:
    from htcsim.workload.swf_writer import write_workload_swf

    try:
        write_workload_swf(
            output, workload, comment=f"synthetic workload {workload.name} (htcsim {__version__})"
        )
    except OSError as exc:
        raise _paths.write_failed(output, "--output", exc) from exc
    console.print(f"[green]wrote[/] {len(workload):,} jobs to {escape(output)}")
