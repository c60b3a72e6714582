"""``htcsim simulate``: replay a workload under one policy or several, and write the results."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from htcsim.cli import _loading, _paths
from htcsim.cli._args import TraceArgument
from htcsim.cli._console import console, err_console, escape, fail, print_loading
from htcsim.policy import BACKFILL_MODES, ORDERS, Policy, PolicyError

if TYPE_CHECKING:
    import numpy as np

    from htcsim.cluster import Cluster
    from htcsim.metrics import Summary
    from htcsim.model import Workload
    from htcsim.report.figure_process import FigureProcess
    from htcsim.schedule import SimResult


def _default(value: str) -> str:
    """A help text's ``[default: ...]`` for an option whose value, when not given, is the
    policy file's (so typer shows none itself); escaped, since help is rich markup."""
    return escape(f"[default: {value}, or the --policy file's]")


def simulate_command(
    trace: TraceArgument = None,
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy file (TOML); the options below override it."),
    ] = None,
    cluster_file: Annotated[
        Path | None,
        typer.Option(
            "--cluster",
            help="Cluster file (TOML node types): the machine the log is read for and "
            "replayed on, instead of the log's own.",
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
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty",
            help="Replay a workload with no job (a warning, exit 0) instead of stopping.",
        ),
    ] = False,
    backfill: Annotated[
        str | None,
        typer.Option(
            help=f"Backfill mode(s), comma-separated: {', '.join(BACKFILL_MODES)}. "
            + _default("easy"),
        ),
    ] = None,
    order: Annotated[
        str | None,
        typer.Option(
            help=f"Queue order: {', '.join(o for o in ORDERS if o != 'priority')}. "
            + _default("fcfs"),
        ),
    ] = None,
    placement: Annotated[
        str | None,
        typer.Option(
            help="Task placement: first_fit, best_fit, spread, cons_tres. " + _default("first_fit"),
        ),
    ] = None,
    backfill_depth: Annotated[
        int | None,
        typer.Option(
            help="Queued jobs examined per pass (0: all), as Slurm's bf_max_job_test. "
            + _default("0"),
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for per-job tables, summary, SWF, plots."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="The run's name: its column in the summary, recorded in summary.json and "
            "used by 'htcsim report' (several backfill modes: NAME/MODE).",
            show_default="the policy's label; the --out folder's name in a report",
        ),
    ] = None,
    plots: Annotated[bool, typer.Option(help="Write PNG plots with --out.")] = True,
    max_procs: Annotated[
        int | None,
        typer.Option(
            help="Machine size in processors; jobs larger are left out (counted).",
            show_default="the log's MaxProcs",
        ),
    ] = None,
    max_jobs: Annotated[
        int | None, typer.Option(help="Replay only the first N jobs of the log.")
    ] = None,
    estimate_sample: Annotated[
        int,
        typer.Option(
            help="Every N-th job: record the start the kernel estimated at submit "
            "(estimates.csv, error summary); 0 records none."
        ),
    ] = 0,
    skip_bad_lines: Annotated[
        bool, typer.Option(help="Skip malformed SWF lines (counted) instead of stopping.")
    ] = False,
    explain_job: Annotated[
        int | None,
        typer.Option(
            "--explain",
            help="Show one job's priority factors (as sprio) instead of a summary: "
            "at --at, or at the pass that started it.",
        ),
    ] = None,
    at_s: Annotated[
        int | None, typer.Option("--at", help="With --explain: the moment (seconds, trace time).")
    ] = None,
    failures_file: Annotated[
        Path | None,
        typer.Option(
            "--failures",
            help="Node failure trace (CSV time_s,node,duration_s): jobs on a failed node "
            "are requeued.",
        ),
    ] = None,
    mtbf_h: Annotated[
        float | None,
        typer.Option("--mtbf", help="Random node failures: mean time between failures (hours)."),
    ] = None,
    mttr_h: Annotated[
        float, typer.Option("--mttr", help="With --mtbf: mean time to repair (hours).")
    ] = 1.0,
    failure_seed: Annotated[int, typer.Option(help="With --mtbf: the random seed.")] = 1,
    checkpoint_s: Annotated[
        int,
        typer.Option(
            "--checkpoint-interval",
            help="Every job checkpoints every N seconds of run: after a node failure it "
            "restarts from its last checkpoint (0: never).",
        ),
    ] = 0,
) -> None:
    """Replay a workload under a policy and print a summary (one column per backfill mode).

    Exits with 2, on one line, on bad input: a file that cannot be read or
    written, a job that fits no node (see --skip-oversized), no job at all
    (see --allow-empty).
    """

    for path, flag in ((policy_file, "--policy"), (cluster_file, "--cluster")):
        if path is not None:
            _paths.input_file(path, flag)
    if failures_file is not None:
        _paths.input_file(failures_file, "--failures")
    if out is not None:
        _paths.output_dir(out, "--out")
    if checkpoint_s < 0:
        raise fail("--checkpoint-interval must be >= 0 seconds")
    if estimate_sample < 0:
        raise fail(f"--estimate-sample must be >= 0 (0: none), got {estimate_sample}")
    if mtbf_h is not None and failures_file is not None:
        raise fail("give either --failures or --mtbf, not both")
    if name is not None and not name.strip():
        raise fail("--name must not be empty")
    policies = _policies(policy_file, backfill, order, backfill_depth, placement)
    if any(policy.order == "priority" for policy in policies):
        raise fail(
            "the 'priority' order needs a priority per job, which only the Python API takes "
            "for now: htcsim.sim.simulate(workload, policy, priority=...)"
        )
    cluster = None
    if cluster_file is not None:
        from htcsim.cluster import ClusterError, load_cluster

        try:
            cluster = load_cluster(cluster_file)
        except ClusterError as exc:
            raise fail(str(exc)) from exc
    workload = _loading.load(
        trace,
        cluster=cluster,
        max_procs=max_procs,
        max_jobs=max_jobs,
        skip_bad_lines=skip_bad_lines,
    )
    workload = _loading.fit_nodes(workload, policies[0], cluster, skip_oversized=skip_oversized)
    failures = None
    if failures_file is not None:
        from htcsim.sim.failures import FailureTraceError, load_failures

        try:
            failures = load_failures(failures_file)
        except FailureTraceError as exc:
            raise fail(str(exc)) from exc
    if mtbf_h is not None:
        failures = _random_failures(workload, cluster, policies[0], mtbf_h, mttr_h, failure_seed)
    if explain_job is not None:
        _explain(workload, policies[0], explain_job, at_s, cluster, failures, checkpoint_s)
        return
    print_loading(workload, cluster)
    _loading.require_jobs(workload, trace, allow_empty=allow_empty)
    inputs = None
    if out is not None:
        inputs = _run_inputs(
            trace,
            policy_file,
            cluster_file,
            failures_file,
            (mtbf_h, mttr_h, failure_seed) if mtbf_h is not None else None,
            {
                "max_jobs": max_jobs,
                "max_procs": max_procs,
                "skip_bad_lines": skip_bad_lines,
                "skip_oversized": skip_oversized,
                "estimate_sample": estimate_sample,
            },
        )
    figures = None
    if out is not None and plots:
        from htcsim.report.figure_process import FigureProcess

        figures = FigureProcess()  # (imports matplotlib while the replay runs)
    try:
        summaries = _replay_all(
            workload,
            policies,
            cluster,
            estimate_sample,
            failures,
            checkpoint_s,
            out,
            figures,
            name,
            inputs,
        )
    finally:
        if figures is not None:
            figures.close()
    from htcsim.report.results import summary_table

    console.print(summary_table(summaries))


def _replay_all(
    workload: Workload,
    policies: list[Policy],
    cluster: Cluster | None,
    estimate_sample: int,
    failures: np.ndarray | None,
    checkpoint_s: int,
    out: Path | None,
    figures: FigureProcess | None,
    name: str | None,
    inputs: dict[str, object] | None,
) -> list[tuple[str, Summary]]:
    """Replay under each policy, writing each result directory; the summaries."""
    from htcsim.kernel import KernelInputError

    summaries = []
    for policy in policies:
        label = policy.label if name is None else name
        if name is not None and len(policies) > 1:
            label = f"{name}/{policy.backfill}"
        try:
            result = _run_with_progress(
                workload, policy, cluster, estimate_sample, failures, checkpoint_s, out is not None
            )
        except KernelInputError as exc:
            raise fail(str(exc)) from exc
        from htcsim.metrics import estimate_error_summary, summarize

        summaries.append((label, summarize(result)))
        if estimate_sample > 0:
            errors = estimate_error_summary(result)
            if errors:
                console.print(_estimate_line(label, errors))
        if out is not None:
            from htcsim.report.results import write_results

            target = out if len(policies) == 1 else out / policy.backfill
            try:
                written = write_results(
                    result,
                    target,
                    plots=figures is not None,
                    figures=figures,
                    name=None if name is None else label,
                    inputs=inputs,
                )
            except OSError as exc:
                raise _paths.write_failed(target, "--out", exc) from exc
            console.print(f"[green]wrote[/] {len(written)} files to {escape(target)}/")
    return summaries


def _random_failures(
    workload: Workload,
    cluster: Cluster | None,
    policy: Policy,
    mtbf_h: float,
    mttr_h: float,
    seed: int,
) -> np.ndarray:
    """Seeded MTBF/MTTR failures of every node of the pool over the workload's span."""
    from htcsim.sim import node_pool
    from htcsim.sim.failures import failure_model

    if not mtbf_h > 0 or not mttr_h > 0:
        raise fail("--mtbf and --mttr must be positive (hours)")
    jobs = workload.jobs
    first = int(jobs["submit_s"].min()) if len(jobs) else 0
    span = int(jobs["submit_s"].max() + jobs["walltime_s"].max()) - first if len(jobs) else 1
    n_nodes = node_pool(workload, policy, cluster).n_nodes
    return failure_model(
        n_nodes, mtbf_h * 3600.0, mttr_h * 3600.0, max(span, 1), seed=seed, start_s=first
    )


def _estimate_line(label: str, errors: dict[str, float]) -> str:
    """The start-estimate calibration in one line: the median and spread, and
    the share of jobs that started early and late, with the worst lateness
    (a median near 0 hides a tail of late starts)."""
    return (
        f"start estimates ({escape(label)}): {int(errors['estimates'])} sampled; "
        f"median error {errors['median_error_s'] / 3600:+.2f} h, "
        f"90% within {errors['p90_abs_error_s'] / 3600:.2f} h; "
        f"{errors['early_fraction']:.0%} started early, {errors['late_fraction']:.0%} late "
        f"(worst {errors['max_late_s'] / 3600:.1f} h late)"
    )


def _run_inputs(
    trace: str | None,
    policy_file: Path | None,
    cluster_file: Path | None,
    failures_file: Path | None,
    failure_model: tuple[float, float, int] | None,
    loading: dict[str, object],
) -> dict[str, object]:
    """What the command line replayed, for summary.json: the files with their
    digests, the loading options, where the failures came from and the seeds."""
    from htcsim.report.provenance import file_digest
    from htcsim.workload.catalog import find_trace
    from htcsim.workload.loader import DEFAULT_WORKLOAD

    source: dict[str, object] | None = None
    if failures_file is not None:
        source = {"trace": file_digest(failures_file)}
    elif failure_model is not None:
        mtbf_h, mttr_h, seed = failure_model
        source = {"model": "mtbf", "mtbf_h": mtbf_h, "mttr_h": mttr_h, "seed": seed}
    return {
        "trace": {"embedded": dict(DEFAULT_WORKLOAD)}
        if trace is None
        else file_digest(find_trace(trace)),
        "loading": loading,
        "policy_file": None if policy_file is None else file_digest(policy_file),
        "cluster_file": None if cluster_file is None else file_digest(cluster_file),
        "failure_source": source,
    }


def _explain(
    workload: Workload,
    policy: Policy,
    job_id: int,
    at_s: int | None,
    cluster: Cluster | None,
    failures: np.ndarray | None,
    checkpoint_s: int,
) -> None:
    """Print one job's priority factors at a moment of the replay, as sprio:
    then, and as the kernel last computed them to order the queue."""
    from htcsim.kernel import KernelInputError
    from htcsim.sim import explain

    try:
        why = explain(
            workload,
            policy,
            job_id,
            at_s,
            cluster=cluster,
            failures=failures,
            checkpoint_s=checkpoint_s,
        )
    except KernelInputError as exc:
        raise fail(str(exc)) from exc
    place = "" if why.queue_position is None else f", #{why.queue_position + 1} in the queue"
    console.print(
        f"job {why.job_id} at t={why.at_s} s: {why.state} (reason {why.reason}{place}); "
        f"policy {escape(policy.label)}"
    )
    ordered = why.ordered
    table = Table("factor", f"at t={why.at_s}", "x weight")
    if ordered is not None:
        table.add_column(f"ordered by, t={ordered.at_s}")
        table.add_column("x weight")
    for factor, value in why.factors.items():
        cells = [factor, f"{value:.4f}", f"{why.weighted[factor]:+.2f}"]
        if ordered is not None:
            cells += [f"{ordered.factors[factor]:.4f}", f"{ordered.weighted[factor]:+.2f}"]
        table.add_row(*cells)
    total = ["[bold]priority[/]", "", f"[bold]{why.priority:.2f}[/]"]
    if ordered is not None:
        total += ["", f"[bold]{ordered.priority:.2f}[/]"]
    table.add_row(*total)
    console.print(table)
    if ordered is not None and ordered.at_s != why.at_s:
        console.print(
            f"'ordered by': the priority the kernel held for the job and ordered the queue "
            f"by, as of t={ordered.at_s} (its last recomputation, or the job's arrival "
            f"since); 'at t={why.at_s}': what a recomputation then would give."
        )


POLICY_FLAGS = {
    "backfill": "--backfill",
    "order": "--order",
    "placement": "--placement",
    "backfill_depth": "--backfill-depth",
}
"""The policy fields the command line overrides, and their options (for error messages)."""


def _policies(
    policy_file: Path | None,
    backfill: str | None,
    order: str | None,
    depth: int | None,
    placement: str | None = None,
) -> list[Policy]:
    """The policy file (or the defaults) with the command line's overrides, one per mode.

    An error in the file names the file; one in an override names the option.
    """
    from dataclasses import replace

    from htcsim.policy import load_policy

    try:
        base = load_policy(policy_file) if policy_file is not None else Policy()
    except PolicyError as exc:
        raise fail(str(exc)) from exc
    overrides: dict[str, object] = {}
    if order is not None:
        overrides["order"] = order
    if depth is not None:
        overrides["backfill_depth"] = depth
    if placement is not None:
        overrides["placement"] = placement
    modes = [m.strip() for m in backfill.split(",")] if backfill else [base.backfill]
    try:
        return [replace(base, backfill=mode, **overrides) for mode in modes]  # type: ignore[arg-type]
    except PolicyError as exc:
        raise fail(str(exc), POLICY_FLAGS) from exc


def _literal(text: str) -> str:
    """``text`` as a progress column's format string prints it (braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


def _run_with_progress(
    workload: Workload,
    policy: Policy,
    cluster: Cluster | None = None,
    estimate_sample: int = 0,
    failures: np.ndarray | None = None,
    checkpoint_s: int = 0,
    with_series: bool = True,
) -> SimResult:
    """The replay under a progress bar; ``with_series`` False records no node
    time series (a summary has no use for it: one row per step, 356,000 on HPC2N)."""
    from htcsim.sim import simulate as replay

    with Progress(
        TextColumn(_literal(f"[bold]{escape(workload.name)}[/] {escape(policy.label)}")),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("replay", total=2 * len(workload))
        return replay(
            workload,
            policy,
            cluster=cluster,
            estimate_sample=estimate_sample,
            failures=failures,
            checkpoint_s=checkpoint_s,
            series_every_s=0 if with_series else None,
            progress=lambda n: progress.update(task, completed=n),
        )
