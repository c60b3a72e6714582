"""``htcsim tune``: the command line of a study (registered by ``htcsim.cli.registry``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from htcsim.cli import _loading, _paths
from htcsim.cli._args import TraceArgument
from htcsim.cli._console import console, err_console, escape, fail, warn

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
    constraint: Annotated[
        list[str] | None,
        typer.Option(
            "--constraint",
            help="A bound every chosen policy must meet, METRIC <= VALUE: a number, a "
            "duration or a multiple of the base policy's value, e.g. \"fairness >= 0.8 * "
            'baseline", "p99_wait_s <= 2d"; repeat it for several.',
        ),
    ] = None,
    guard: Annotated[
        bool,
        typer.Option(
            help="Keep the default guard, max_wait_s <= 1.5 * baseline (a --constraint "
            "on max_wait_s replaces it).",
        ),
    ] = True,
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
        typer.Option(
            "--cluster",
            help="Cluster file (TOML): the machine the logs are read for and replayed on, "
            "instead of the log's own.",
        ),
    ] = None,
    skip_oversized: Annotated[
        bool,
        typer.Option(
            "--skip-oversized",
            help="Leave out (and count) the jobs no node of the machine could hold, "
            "instead of stopping at the first.",
        ),
    ] = False,
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
        typer.Option(
            help="Run the trials on this Dask scheduler instead, e.g. tls://host:8786 (with "
            "--tls-ca-file, --tls-cert and --tls-key, as the agent's settings), or tcp://host:8786 "
            "with --dask-insecure."
        ),
    ] = None,
    tls_ca_file: Annotated[
        Path | None,
        typer.Option(help="With --dask: the CA that signed the scheduler's certificate."),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="With --dask: this client's certificate (the agent's will do)."),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="With --dask: its key.")] = None,
    dask_insecure: Annotated[
        bool,
        typer.Option(
            "--dask-insecure",
            help="With --dask: accept a scheduler without TLS (anyone who reaches it runs "
            "code on its workers).",
        ),
    ] = False,
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
    pareto.png with --pareto) to --out. Exit status 1: no trial met the
    constraints (nothing is written but the study file).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from htcsim.cli._dask_tls import DaskTLSError, dask_security
    from htcsim.cluster import ClusterError, load_cluster
    from htcsim.kernel import KernelInputError
    from htcsim.policy import Policy, PolicyError, inert_fields, load_policy
    from htcsim.tune import (
        ConstraintError,
        NoFeasibleTrial,
        ObjectiveError,
        SpaceError,
        Study,
        StudyStore,
        StudyStoreError,
        inert_parameters,
        load_space,
        parse_objective,
        split_workload,
        study_constraints,
        write_study,
    )

    _paths.input_file(space_file, "--space")
    for path, flag in ((policy_file, "--policy"), (cluster_file, "--cluster")):
        if path is not None:
            _paths.input_file(path, flag)
    _paths.output_dir(out, "--out")
    if study_file is not None:
        _paths.output_file(study_file, "--study", make_parents=True)
    if trials < 1:
        raise fail(f"--trials must be at least 1, got {trials}")
    if workers is not None and workers < 1:
        raise fail(f"--workers must be at least 1, got {workers}")
    if not 0 < train_fraction < 1:
        raise fail(f"--train-fraction must be in (0, 1), got {train_fraction}")
    try:
        security = dask_security(
            dask,
            {"tls_ca_file": tls_ca_file, "tls_cert": tls_cert, "tls_key": tls_key},
            insecure=dask_insecure,
        )
    except DaskTLSError as exc:
        raise fail(str(exc)) from exc
    try:
        base = load_policy(policy_file) if policy_file is not None else Policy()
        space = load_space(space_file, base)
        goal = parse_objective(objective, pareto)
        constraints = study_constraints(constraint or [], guard=guard)
        cluster = load_cluster(cluster_file) if cluster_file is not None else None
    except (PolicyError, SpaceError, ObjectiveError, ConstraintError, ClusterError) as exc:
        raise fail(str(exc)) from exc
    workload = _loading.load(trace, cluster=cluster, max_jobs=max_jobs)
    workload = _loading.fit_nodes(workload, base, cluster, skip_oversized=skip_oversized)
    _loading.require_jobs(workload, trace, allow_empty=None)
    others = {}
    for name in also or []:
        other = _loading.load(name, cluster=cluster, max_jobs=max_jobs)
        other = _loading.fit_nodes(other, base, cluster, skip_oversized=skip_oversized)
        _loading.require_jobs(other, name, allow_empty=None)
        others[other.name] = other
    try:
        train, test = split_workload(workload, train_fraction)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    study_path = study_file or out / "study.sqlite"
    try:
        out.mkdir(parents=True, exist_ok=True)
        study_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"cannot create {exc.filename or out}: {exc.strerror or exc}") from exc
    identity = {
        "workload": workload.name,
        "jobs": len(workload.jobs),
        "train_fraction": train_fraction,
        "space": {p.name: repr(p) for p in space.parameters},
        "base_policy": base.to_dict(),
        "objective": [list(t) for t in goal.terms],
        "pareto": pareto,
        "constraints": [c.text for c in constraints],
        "seed": seed,
        "also": sorted(others),
    }
    try:
        store = StudyStore(study_path, identity)
    except StudyStoreError as exc:
        raise fail(str(exc)) from exc
    resumed = store.count()
    console.print(
        f"{escape(workload.name)}: {len(train.jobs):,} training jobs, "
        f"{len(test.jobs):,} test jobs; {space.dimensions} parameter(s); "
        f"objective {escape(', '.join(objective))}"
        + (f"; resuming ({resumed} trials stored)" if resumed else "")
    )
    for wasted in inert_parameters(space):
        warn(wasted.message)
    for c in constraints:
        console.print(
            f"constraint: {escape(c.text)}"
            + (" (the default guard; --no-guard drops it)" if c.default else "")
        )
    try:
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
            dask_security=security,
            others=others,
            constraints=constraints,
        )
    except (OSError, TimeoutError, ValueError) as exc:  # the scheduler: unreachable, refused
        if dask is None:
            raise
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise fail(f"cannot connect to the Dask scheduler {dask}: {reason}") from exc
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
    except NoFeasibleTrial as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc)}", soft_wrap=True)
        raise typer.Exit(code=1) from exc
    except (KernelInputError, ValueError) as exc:
        raise fail(str(exc)) from exc
    finally:
        study.close()
        store.close()
    paths = write_study(result, out)
    values = escape(", ".join(f"{k} = {v!r}" for k, v in result.best_values.items()))
    console.print(_trial_counts(result))
    for line in _constraint_lines(result):
        console.print(line)
    inert = inert_fields(result.best_policy, node_failures=False)
    idle = [name for name in result.best_values if name in inert]
    console.print(
        f"best on the training part: {values}"
        + (f" ({escape(', '.join(idle))}: no effect under the rest)" if idle else "")
    )
    console.print(_comparison(result))
    for trace, by_policy in result.others.items():
        console.print(_on_other_trace(trace, by_policy, result))
    console.print(
        f"[green]wrote[/] {', '.join(sorted(paths))} to {escape(out)}/ "
        f"({result.n_replayed} replays run now, {len(result.trials)} trials stored in the study)"
    )


def _trial_counts(result: StudyResult) -> str:
    """How many training trials, how many distinct schedules, how many infeasible."""
    from htcsim.tune.study import TRAIN

    train = [r for r in result.trials if r["part"] == TRAIN]
    reused = sum(1 for r in train if r["same_as"] is not None)
    infeasible = sum(1 for r in train if r["metrics"] is not None and r["violation"] != 0)
    text = (
        f"{len(train)} training trials: {len(train) - reused} distinct schedules "
        f"({reused} reused the replay of an equal policy)"
    )
    if result.constraints:
        text += f", {infeasible} infeasible (marked in trials.parquet)"
    return text


def _constraint_lines(result: StudyResult) -> list[str]:
    """Each constraint with its bound on the training part."""
    from htcsim.metrics import format_duration

    baseline = result.baselines[result.baseline][0]
    lines = []
    for c in result.constraints:
        bound = c.bound(baseline)
        shown = format_duration(bound) if c.metric.endswith("_s") else f"{bound:.4g}"
        against = f" (baseline {result.baseline})" if c.relative else ""
        lines.append(
            f"constraint {escape(c.text)}{escape(against)}: {c.metric} {c.op} {shown} "
            "on the training part"
        )
    return lines


def _cell(name: str, value: float | None, unit: str | None = None) -> str:
    from htcsim.metrics import format_duration

    if value is None or value != value:
        return "-"
    if name.endswith("_s"):
        return format_duration(value, unit)
    if name in ("utilization", "fairness"):
        return f"{value:.3f}"
    return f"{value:,.2f}"


def _units(names: list[str], values: dict[str, list[float | None]]) -> dict[str, str | None]:
    """One unit per duration column (its largest figure's), so the rows compare at a glance."""
    from htcsim.metrics import row_duration_unit

    return {
        name: row_duration_unit(values.get(name, [])) if name.endswith("_s") else None
        for name in names
    }


def _on_other_trace(
    trace: str, by_policy: dict[str, dict[str, float]], result: StudyResult
) -> Table:
    """The tuned policy and the baselines on another trace."""
    from htcsim.tune.output import shown_metrics

    names = shown_metrics(result)
    units = _units(names, {n: [m.get(n) for m in by_policy.values()] for n in names})
    table = Table(title=f"on {escape(trace)}")
    table.add_column("policy", style="bold")
    for name in names:
        table.add_column(name, justify="right")
    for label, metrics in by_policy.items():
        table.add_row(
            escape(label), *(_cell(name, metrics.get(name), units[name]) for name in names)
        )
    return table


def _comparison(result: StudyResult) -> Table:
    """The tuned policy and the baselines, each metric on the training and test parts."""
    from htcsim.tune.output import comparison_table

    frame = comparison_table(result)
    names = [
        c.removeprefix("train_")
        for c in frame.columns
        if c.startswith("train_") and c != "train_constraints"
    ]
    units = _units(
        names,
        {n: [*frame[f"train_{n}"].to_list(), *frame[f"test_{n}"].to_list()] for n in names},
    )
    table = Table(title="tuned policy and baselines: training part | test part")
    table.add_column("policy", style="bold")
    checked = "train_constraints" in frame.columns
    if checked:
        table.add_column("constraints")
    for name in names:
        table.add_column(name, justify="right")
    for row in frame.iter_rows(named=True):
        cells = [
            " | ".join(_cell(name, row[f"{p}_{name}"], units[name]) for p in ("train", "test"))
            for name in names
        ]
        if checked:
            cells.insert(
                0,
                " | ".join(_verdict(row[f"{p}_constraints"]) for p in ("train", "test")),
            )
        table.add_row(escape(row["policy"]), *cells)
    return table


def _verdict(cell: str | None) -> str:
    """``met``, or ``broken (max_wait_s)``: the metrics whose bounds it breaks."""
    if not cell or cell in ("met", "-"):
        return cell or "-"
    metrics = [c.split()[0] for c in cell.removeprefix("broken: ").split("; ")]
    return f"broken ({escape(', '.join(metrics))})"
