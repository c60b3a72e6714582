"""``htcsim plan``: the smallest fleet that meets a wait target, now and after growth."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from htcsim.cli import _loading, _paths
from htcsim.cli._args import TraceArgument
from htcsim.cli._console import console, err_console, escape, fail, print_loading
from htcsim.plan.defaults import DEFAULT_GRID

if TYPE_CHECKING:
    from rich.table import Table

    from htcsim.plan.fleet import PlanResult


def plan_command(
    # required, so first: Python puts parameters without a default first
    target_wait_p95: Annotated[
        str,
        typer.Option(
            "--target-wait-p95",
            help="The 95th-percentile wait to meet: 2h, 30m, 90s, 1h30m (bare number: seconds).",
        ),
    ],
    trace: TraceArgument = None,
    growth: Annotated[
        list[float] | None,
        typer.Option(
            "--growth",
            help="Arrival-rate factor to plan for (1.5: 50 % more jobs per day); repeat it "
            "for several.",
            show_default="1.0",
        ),
    ] = None,
    sizes: Annotated[
        str | None,
        typer.Option(help="Evaluate exactly these fleet sizes (comma list) instead of searching."),
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy file (TOML).", show_default="the defaults"),
    ] = None,
    max_jobs: Annotated[
        int | None, typer.Option(help="Plan on the first N jobs of the log only.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Replays run side by side.", show_default="the number of CPUs"),
    ] = None,
    grid: Annotated[
        int,
        typer.Option(
            help="Sizes per search round (the coarse grid; half of it per narrowing round). "
            "The answer depends on it, never on --workers; raise it to use more cores."
        ),
    ] = DEFAULT_GRID,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for plan.csv and plan.png.")
    ] = Path("plan"),
) -> None:
    """The smallest fleet (nodes of the log's machine) whose replay meets a p95 wait target.

    Writes plan.csv (every replayed size) and plan.png. Exits with 1 when no
    size meets the target for some growth factor (after writing them), with
    2 on bad input.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from htcsim.metrics import format_duration
    from htcsim.plan.fleet import PlanStep, parse_sizes, plan_fleet
    from htcsim.plan.plot import plot_plan
    from htcsim.policy import Policy, PolicyError, load_policy
    from htcsim.units import parse_duration

    if policy_file is not None:
        _paths.input_file(policy_file, "--policy")
    _paths.output_dir(out, "--out")
    if workers is not None and workers < 1:
        raise fail(f"--workers must be at least 1, got {workers}")
    if grid < 2:
        raise fail(f"--grid must be at least 2, got {grid}")
    for factor in growth or ():
        if not factor > 0:
            raise fail(f"--growth must be a positive factor, got {factor:g}")
    try:
        target_s = parse_duration(target_wait_p95)
        wanted = parse_sizes(sizes) if sizes is not None else None
        policy = load_policy(policy_file) if policy_file is not None else Policy()
    except (ValueError, PolicyError) as exc:
        raise fail(str(exc), PLAN_FLAGS) from exc
    if policy.order == "priority":
        raise fail(
            "the 'priority' order needs a priority per job, which the command line "
            "cannot give; use multifactor or the Python API"
        )
    workload = _loading.load(trace, max_jobs=max_jobs)
    print_loading(workload)
    _loading.require_jobs(workload, trace, allow_empty=None)
    with Progress(
        TextColumn("[bold]plan[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("replays"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=None)

        def advance(step: PlanStep) -> None:
            bar.update(
                task,
                completed=step.done,
                total=step.scheduled,
                description=f"x{step.growth:g}: {step.size} nodes, "
                f"p95 {format_duration(step.p95_wait_s)}",
            )

        try:
            plan = plan_fleet(
                workload,
                policy,
                target_s,
                growth=growth or (1.0,),
                sizes=wanted,
                workers=workers,
                progress=advance,
                grid=grid,
            )
        except ValueError as exc:  # KernelInputError is one
            raise fail(str(exc), PLAN_FLAGS) from exc
    try:
        out.mkdir(parents=True, exist_ok=True)
        plan.to_frame().write_csv(out / "plan.csv")
        plot_plan(plan, out / "plan.png")
    except OSError as exc:
        raise _paths.write_failed(out, "--out", exc) from exc
    console.print(_plan_table(plan))
    console.print(f"[green]wrote[/] plan.csv, plan.png to {escape(out)}/")
    if any(p.smallest is None for p in plan.plans):
        raise typer.Exit(code=1)


PLAN_FLAGS = {"workers": "--workers", "grid": "--grid", "sizes": "--sizes"}
"""The planner's parameters and the options that set them, for its error messages."""


def _plan_table(plan: PlanResult) -> Table:
    """Growth, answer, its p95 wait and the sizes evaluated, one row per growth factor."""
    from rich.table import Table

    from htcsim.metrics import format_duration as fmt

    kind = "smallest autoscale max" if plan.autoscale else "smallest fleet"
    table = Table(
        title=f"{escape(plan.workload)}: p95 wait <= {fmt(plan.target_p95_s)}, "
        f"{plan.node.cores}-core nodes (the log's machine: {plan.node.count})"
    )
    for column, justify in (
        ("growth", "right"),
        (kind, "right"),
        ("its p95 wait", "right"),
        ("evaluated sizes", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for growth_plan in plan.plans:
        sizes = growth_plan.points["size"].to_list()
        if growth_plan.smallest is None:
            largest = growth_plan.searched_up_to
            if growth_plan.points["meets_target"].any():  # met, then missed again above
                answer = f"none: the largest size tried ({largest}) misses"
            elif plan.explicit_sizes:
                answer = f"not met up to {largest}"
            else:
                answer = f"not reachable (searched up to {largest})"
            wait = "–"
        else:
            answer = f"{growth_plan.smallest}"
            wait = fmt(growth_plan.smallest_p95_wait_s or 0.0)
        table.add_row(f"x{growth_plan.growth:g}", answer, wait, f"{len(sizes)}: {_ranges(sizes)}")
    return table


def _ranges(sizes: list[int], show: int = 12) -> str:
    """Sizes for a table cell: all of them when few, else the first and last few."""
    if len(sizes) <= show:
        return ", ".join(map(str, sizes))
    half = show // 2
    return ", ".join(map(str, sizes[:half])) + ", …, " + ", ".join(map(str, sizes[-half:]))
