"""``htcsim tune``: the command line of a study (registered by ``htcsim.cli.registry``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from htcsim.cli._args import TraceArgument
from htcsim.cli._console import console, err_console, fail

if TYPE_CHECKING:
    from htcsim.tune.study import StudyResult


def tune_command(
    space_file: Annotated[
        Path, typer.Option("--space", help="Search space (TOML): Policy fields and their ranges.")
    ],
    objective: Annotated[
        list[str],
        typer.Option(
            "--objective",
            help="Metric to optimize, metric[:weight]; repeat it for a weighted sum "
            "(or a Pareto front with --pareto). E.g. mean_bsld, p95_wait_s, node_hours:0.5, "
            "utilization, fairness.",
        ),
    ],
    trace: TraceArgument = None,
    pareto: Annotated[
        bool, typer.Option(help="Search the Pareto front of the objectives (NSGA-II).")
    ] = False,
    trials: Annotated[
        int, typer.Option(help="Replays of the training part the search may use.")
    ] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the search (same seed, same study).")] = 1,
    train_fraction: Annotated[
        float, typer.Option(help="Share of the jobs (the first ones) the search sees.")
    ] = 0.7,
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="Base policy (TOML): the fields the space does not name."),
    ] = None,
    cluster_file: Annotated[
        Path | None,
        typer.Option("--cluster", help="Cluster file (TOML) instead of the log's machine."),
    ] = None,
    max_jobs: Annotated[
        int | None, typer.Option(help="Use only the first N jobs of the log.")
    ] = None,
    also: Annotated[
        list[str] | None,
        typer.Option(
            "--also",
            help="Another trace (name or path) the tuned policy and the baselines are judged "
            "on too (its first --max-jobs jobs); repeat it for several.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local processes running trials.", show_default="all CPUs")
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(help="Run the trials on this Dask scheduler instead, e.g. tcp://host:8786."),
    ] = None,
    study_file: Annotated[
        Path | None,
        typer.Option(
            "--study",
            help="SQLite file of the study: an interrupted tune resumes from it.",
            show_default="OUT/study.sqlite",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the study's files.")] = Path(
        "tune"
    ),
) -> None:
    """Search the policy space on the first part of a trace; compare on the rest.

    Writes best_policy.toml, trials.parquet, comparison.csv (and pareto.csv,
    pareto.png with --pareto) to --out.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from htcsim.cluster import ClusterError, load_cluster
    from htcsim.kernel import KernelInputError
    from htcsim.policy import Policy, PolicyError, load_policy
    from htcsim.tune import (
        ObjectiveError,
        SpaceError,
        Study,
        StudyStore,
        StudyStoreError,
        load_space,
        parse_objective,
        split_workload,
        write_study,
    )
    from htcsim.workload.loader import load_workload
    from htcsim.workload.swf import SWFError

    try:
        base = load_policy(policy_file) if policy_file is not None else Policy()
        space = load_space(space_file, base)
        goal = parse_objective(objective, pareto)
        workload = load_workload(trace, max_jobs=max_jobs)
        cluster = load_cluster(cluster_file) if cluster_file is not None else None
        train, test = split_workload(workload, train_fraction)
        others = {}
        for name in also or []:
            other = load_workload(name, max_jobs=max_jobs)
            others[other.name] = other
    except (PolicyError, SpaceError, ObjectiveError, ClusterError, SWFError, ValueError) as exc:
        raise fail(str(exc)) from exc
    if trials < 1:
        raise fail("--trials must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    identity = {
        "workload": workload.name,
        "jobs": len(workload.jobs),
        "train_fraction": train_fraction,
        "space": {p.name: repr(p) for p in space.parameters},
        "base_policy": base.to_dict(),
        "objective": [list(t) for t in goal.terms],
        "pareto": pareto,
        "seed": seed,
        "also": sorted(others),
    }
    try:
        store = StudyStore(study_file or out / "study.sqlite", identity)
    except StudyStoreError as exc:
        raise fail(str(exc)) from exc
    resumed = store.count()
    console.print(
        f"{workload.name}: {len(train.jobs):,} training jobs, {len(test.jobs):,} test jobs; "
        f"{space.dimensions} parameter(s); objective {', '.join(objective)}"
        + (f"; resuming ({resumed} trials stored)" if resumed else "")
    )
    study = Study(
        workload,
        space,
        goal,
        train_fraction=train_fraction,
        cluster=cluster,
        seed=seed,
        store=store,
        workers=workers or os.cpu_count() or 1,
        dask_address=dask,
        others=others,
    )
    try:
        with Progress(
            TextColumn("[bold]tune[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("trials, best {task.fields[best]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task("tune", total=trials, best="-")
            result = study.run(
                trials,
                progress=lambda s: bar.update(
                    task, completed=s.done, total=s.budget, best=f"{s.best:.4g}"
                ),
            )
    except (KernelInputError, ValueError) as exc:
        raise fail(str(exc)) from exc
    finally:
        study.close()
        store.close()
    paths = write_study(result, out)
    values = ", ".join(f"{k} = {v!r}" for k, v in result.best_values.items())
    console.print(f"best on the training part: {values}")
    console.print(_comparison(result))
    for trace, by_policy in result.others.items():
        console.print(_on_other_trace(trace, by_policy, result))
    console.print(
        f"[green]wrote[/] {', '.join(sorted(paths))} to {out}/ ({result.n_replayed} replays "
        f"run now, {len(result.trials)} trials stored in the study)"
    )


def _cell(name: str, value: float | None) -> str:
    from htcsim.metrics import format_duration

    if value is None or value != value:
        return "-"
    if name.endswith("_s"):
        return format_duration(value)
    if name in ("utilization", "fairness"):
        return f"{value:.3f}"
    return f"{value:,.2f}"


def _on_other_trace(
    trace: str, by_policy: dict[str, dict[str, float]], result: StudyResult
) -> Table:
    """The tuned policy and the baselines on another trace."""
    from htcsim.tune.output import SHOWN_METRICS

    names = list(dict.fromkeys([*result.objective.names, *SHOWN_METRICS]))
    table = Table(title=f"on {trace}")
    table.add_column("policy", style="bold")
    for name in names:
        table.add_column(name, justify="right")
    for label, metrics in by_policy.items():
        table.add_row(label, *(_cell(name, metrics.get(name)) for name in names))
    return table


def _comparison(result: StudyResult) -> Table:
    """The tuned policy and the baselines, each metric on the training and test parts."""
    from htcsim.tune.output import comparison_table

    frame = comparison_table(result)
    names = [c.removeprefix("train_") for c in frame.columns if c.startswith("train_")]
    table = Table(title="tuned policy and baselines: training part | test part")
    table.add_column("policy", style="bold")
    for name in names:
        table.add_column(name, justify="right")
    for row in frame.iter_rows(named=True):
        cells = [
            " | ".join(_cell(name, row[f"{part}_{name}"]) for part in ("train", "test"))
            for name in names
        ]
        table.add_row(row["policy"], *cells)
    return table
