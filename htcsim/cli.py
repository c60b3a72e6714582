"""The ``htcsim`` command: typer commands that call the library, no logic of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from htcsim import (
    __version__,
    _process,  # noqa: F401  (tunes the process before numpy and polars load)
)
from htcsim.agent.client_commands import client_app
from htcsim.agent.commands import agent_app, replay_log_command
from htcsim.cli_args import TraceArgument
from htcsim.cluster import Cluster
from htcsim.model import Workload
from htcsim.plan import plan_command
from htcsim.policy import BACKFILL_MODES, ORDERS, Policy, PolicyError
from htcsim.schedule import SimResult
from htcsim.tune.command import tune_command

app = typer.Typer(
    help="htcsim: replay HPC/HTC workloads through one compiled scheduling kernel.",
    no_args_is_help=True,
    add_completion=False,
)
traces_app = typer.Typer(help="List the SWF logs found, or fetch one from the archive.")
generate_app = typer.Typer(help="Write a synthetic workload as SWF.", no_args_is_help=True)
policy_app = typer.Typer(help="Write or check a policy file (TOML).", no_args_is_help=True)
app.add_typer(traces_app, name="traces")
app.add_typer(generate_app, name="generate")
app.add_typer(policy_app, name="policy")

console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        console.print(f"htcsim {__version__}")
        raise typer.Exit()


@app.command()
def simulate(
    trace: TraceArgument = None,
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy file (TOML); the options below override it."),
    ] = None,
    cluster_file: Annotated[
        Path | None,
        typer.Option(
            "--cluster", help="Cluster file (TOML node types) instead of the log's machine."
        ),
    ] = None,
    backfill: Annotated[
        str | None,
        typer.Option(
            help=f"Backfill mode(s), comma-separated: {', '.join(BACKFILL_MODES)} [default: easy]."
        ),
    ] = None,
    order: Annotated[
        str | None,
        typer.Option(
            help=f"Queue order: {', '.join(o for o in ORDERS if o != 'priority')} [default: fcfs]."
        ),
    ] = None,
    placement: Annotated[
        str | None,
        typer.Option(help="Task placement: first_fit, best_fit, spread [default: first_fit]."),
    ] = None,
    backfill_depth: Annotated[
        int | None,
        typer.Option(help="Queued jobs examined per pass (0: all), as Slurm's bf_max_job_test."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for per-job tables, summary, SWF, plots."),
    ] = None,
    plots: Annotated[bool, typer.Option(help="Write PNG plots with --out.")] = True,
    max_procs: Annotated[
        int | None,
        typer.Option(help="Machine size in processors (default: the header's MaxProcs)."),
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
    """Replay a workload under a policy and print a summary (one column per backfill mode)."""
    from htcsim.kernel import KernelInputError
    from htcsim.workload.loader import load_workload
    from htcsim.workload.swf import SWFError

    try:
        policies = _policies(policy_file, backfill, order, backfill_depth, placement)
    except PolicyError as exc:
        raise _fail(str(exc)) from exc
    if any(policy.order == "priority" for policy in policies):
        raise _fail(
            "the 'priority' order needs a priority per job, which only the Python API takes "
            "for now: htcsim.sim.simulate(workload, policy, priority=...)"
        )
    try:
        workload = load_workload(
            trace, max_procs=max_procs, max_jobs=max_jobs, skip_bad_lines=skip_bad_lines
        )
    except (SWFError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    cluster = None
    if cluster_file is not None:
        from htcsim.cluster import ClusterError, load_cluster

        try:
            cluster = load_cluster(cluster_file)
        except ClusterError as exc:
            raise _fail(str(exc)) from exc
    failures = None
    if failures_file is not None:
        from htcsim.failures import FailureTraceError, load_failures

        try:
            failures = load_failures(failures_file)
        except FailureTraceError as exc:
            raise _fail(str(exc)) from exc
    if mtbf_h is not None:
        if failures is not None:
            raise _fail("give either --failures or --mtbf, not both")
        failures = _random_failures(workload, cluster, policies[0], mtbf_h, mttr_h, failure_seed)
    if checkpoint_s < 0:
        raise _fail("--checkpoint-interval must be >= 0 seconds")
    if explain_job is not None:
        _explain(workload, policies[0], explain_job, at_s, cluster)
        return
    _print_loading(workload, cluster)
    summaries = []
    for policy in policies:
        try:
            result = _run_with_progress(
                workload, policy, cluster, estimate_sample, failures, checkpoint_s
            )
        except KernelInputError as exc:
            raise _fail(str(exc)) from exc
        from htcsim.metrics import estimate_error_summary, summarize

        summaries.append((policy.label, summarize(result)))
        if estimate_sample > 0:
            errors = estimate_error_summary(result)
            if errors:
                console.print(
                    f"start estimates ({policy.label}): {int(errors['estimates'])} sampled; "
                    f"median error {errors['median_error_s'] / 3600:+.2f} h, "
                    f"90% within {errors['p90_abs_error_s'] / 3600:.2f} h"
                )
        if out is not None:
            from htcsim.results import write_results

            target = out if len(policies) == 1 else out / policy.backfill
            written = write_results(result, target, plots=plots)
            console.print(f"[green]wrote[/] {len(written)} files to {target}/")
    from htcsim.results import summary_table

    console.print(summary_table(summaries))


def _random_failures(
    workload: Workload,
    cluster: Cluster | None,
    policy: Policy,
    mtbf_h: float,
    mttr_h: float,
    seed: int,
) -> np.ndarray:
    """Seeded MTBF/MTTR failures of every node of the pool over the workload's span."""
    from htcsim.failures import failure_model
    from htcsim.sim import node_pool

    if not mtbf_h > 0 or not mttr_h > 0:
        raise _fail("--mtbf and --mttr must be positive (hours)")
    jobs = workload.jobs
    first = int(jobs["submit_s"].min()) if len(jobs) else 0
    span = int(jobs["submit_s"].max() + jobs["walltime_s"].max()) - first if len(jobs) else 1
    n_nodes = node_pool(workload, policy, cluster).n_nodes
    return failure_model(
        n_nodes, mtbf_h * 3600.0, mttr_h * 3600.0, max(span, 1), seed=seed, start_s=first
    )


def _explain(
    workload: Workload, policy: Policy, job_id: int, at_s: int | None, cluster: Cluster | None
) -> None:
    """Print one job's priority factors at a moment of the replay, as sprio."""
    from htcsim.kernel import KernelInputError
    from htcsim.sim import explain

    try:
        why = explain(workload, policy, job_id, at_s, cluster=cluster)
    except KernelInputError as exc:
        raise _fail(str(exc)) from exc
    place = "" if why.queue_position is None else f", #{why.queue_position + 1} in the queue"
    console.print(
        f"job {why.job_id} at t={why.at_s} s: {why.state} (reason {why.reason}{place}); "
        f"policy {policy.label}"
    )
    table = Table("factor", "value (0..1)", "weight x value")
    for name, value in why.factors.items():
        table.add_row(name, f"{value:.4f}", f"{why.weighted[name]:+.2f}")
    table.add_row("[bold]priority[/]", "", f"[bold]{why.priority:.2f}[/]")
    console.print(table)


def _policies(
    policy_file: Path | None,
    backfill: str | None,
    order: str | None,
    depth: int | None,
    placement: str | None = None,
) -> list[Policy]:
    """The policy file (or the defaults) with the command line's overrides, one per mode."""
    from dataclasses import replace

    from htcsim.policy import load_policy

    base = load_policy(policy_file) if policy_file is not None else Policy()
    overrides: dict[str, object] = {}
    if order is not None:
        overrides["order"] = order
    if depth is not None:
        overrides["backfill_depth"] = depth
    if placement is not None:
        overrides["placement"] = placement
    modes = [m.strip() for m in backfill.split(",")] if backfill else [base.backfill]
    return [replace(base, backfill=mode, **overrides) for mode in modes]  # type: ignore[arg-type]


def _run_with_progress(
    workload: Workload,
    policy: Policy,
    cluster: Cluster | None = None,
    estimate_sample: int = 0,
    failures: np.ndarray | None = None,
    checkpoint_s: int = 0,
) -> SimResult:
    from htcsim.sim import simulate as replay

    with Progress(
        TextColumn(f"[bold]{workload.name}[/] {policy.label}"),
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
            progress=lambda n: progress.update(task, completed=n),
        )


def _print_loading(workload: Workload, cluster: Cluster | None = None) -> None:
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


@traces_app.callback(invoke_without_command=True)
def traces(ctx: typer.Context) -> None:
    """List the SWF logs in ./traces and $HTCSIM_TRACE_DIR with job counts and machine size."""
    if ctx.invoked_subcommand is not None:
        return
    from htcsim.workload.catalog import list_traces, trace_dirs

    dirs = trace_dirs()
    found = list_traces(dirs)
    if not found:
        searched = ", ".join(str(d) for d in dirs) or "./traces"
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
            info.name,
            f"{info.n_jobs:,}",
            str(info.max_procs or "-"),
            str(info.max_nodes or "-"),
            f"{info.size_bytes / 1e6:.1f} MB",
            str(info.path.parent),
        )
    console.print(table)


app.command("plan")(plan_command)
app.command("tune")(tune_command)
app.add_typer(agent_app, name="agent")
app.add_typer(client_app)  # submit, queue, show, cancel, hold, release, ...
app.command("replay-log")(replay_log_command)


@app.command("report")
def report(
    results: Annotated[
        list[Path] | None,
        typer.Argument(help="Result directories (written by 'simulate --out'), in column order."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="HTML file to write (self-contained).")
    ] = Path("report.html"),
    title: Annotated[
        str | None, typer.Option(help="Page title (default: the runs' names).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Live agent: usage since then (7d, 12h, 2026-11-01, ISO time), as sreport."
        ),
    ] = None,
    until: Annotated[str | None, typer.Option(help="Live agent: end of the window.")] = None,
    db: Annotated[Path, typer.Option(help="Live agent: its store.")] = Path(
        "htcsim-agent/agent.db"
    ),
    csv: Annotated[
        Path | None, typer.Option(help="Live agent: write users.csv, groups.csv here.")
    ] = None,
    swf: Annotated[
        Path | None,
        typer.Option(help="Live agent: export the finished jobs as SWF (replay, tune on it)."),
    ] = None,
) -> None:
    """Compare simulation runs in one offline HTML file; or, with --since, report a
    live agent's usage per user and group, waits and utilization from its store."""
    if since is not None or not results:
        _agent_report(since or "7d", until, db, csv, swf)
        return
    from htcsim.report import ReportError, write_report

    try:
        path = write_report(results, out, title=title)
    except ReportError as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:  # reading is wrapped in ReportError: this is the output
        raise _fail(f"cannot write {out}: {exc.strerror or exc}") from exc
    console.print(f"[green]wrote[/] {path}")


def _agent_report(
    since: str, until: str | None, db: Path, csv: Path | None, swf: Path | None
) -> None:
    import time

    from htcsim.agent.accounting import export_swf, parse_since, print_usage, usage_report
    from htcsim.agent.store import AgentStore, StoreError

    if not db.exists():
        raise _fail(f"no agent store at {db} (give --db, or simulation result directories)")
    now = time.time()
    try:
        start = parse_since(since, now)
        end = parse_since(until, now) if until else now
        store = AgentStore(db, readonly=True)
    except (ValueError, StoreError) as exc:
        raise _fail(str(exc)) from exc
    cores = store.total_cores()
    usage = usage_report(store, start, end, total_cores=cores)
    print_usage(usage, console)
    if csv is not None:
        for path in usage.to_csv(csv):
            console.print(f"[green]wrote[/] {path}")
    if swf is not None:
        n = export_swf(store, start, end, swf, total_cores=cores)
        console.print(f"[green]wrote[/] {swf} ({n:,} jobs)")


import_app = typer.Typer(
    help="Turn a scheduler's accounting history into a workload (SWF).", no_args_is_help=True
)
app.add_typer(import_app, name="import")


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
    from htcsim.workload.swf import write_workload_swf

    try:
        imported = read_sacct(
            file,
            nodes=nodes,
            cores_per_node=cores_per_node,
            gpus_per_node=gpus_per_node,
            timezone=timezone,
        )
    except ValueError as exc:  # SacctError (a bad file) or a bad option
        raise _fail(str(exc)) from exc
    workload = imported.workload
    target = out if out is not None else file.with_name(f"{workload.name}.swf")
    if target.resolve() == file.resolve():
        raise _fail(f"{target} is the input file; name another with --out")
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


@traces_app.command("fetch")
def traces_fetch(
    name: Annotated[str, typer.Argument(help="Short name of a Parallel Workloads Archive log.")],
    dest: Annotated[Path, typer.Option(help="Folder to download into.")] = Path("traces"),
) -> None:
    """Download a log from the Parallel Workloads Archive into ./traces."""
    from htcsim.workload.catalog import TraceFetchError, fetch_trace

    try:
        path = fetch_trace(name, dest)
    except (TraceFetchError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"[green]fetched[/] {path}")


@policy_app.command("init")
def policy_init(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: print it).")
    ] = None,
) -> None:
    """Write the default policy, every key documented."""
    from htcsim.policy import DEFAULT_POLICY_TOML

    if output is None:
        typer.echo(DEFAULT_POLICY_TOML, nl=False)
        return
    if output.exists():
        raise _fail(f"{output} exists; not overwriting it")
    output.write_text(DEFAULT_POLICY_TOML, encoding="utf-8")
    console.print(f"[green]wrote[/] {output}")


@policy_app.command("show")
def policy_show(
    path: Annotated[Path, typer.Argument(help="Policy file (TOML).")],
) -> None:
    """Check a policy file and print it with every value, defaults included."""
    from htcsim.policy import load_policy, policy_to_toml

    try:
        policy = load_policy(path)
    except PolicyError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"[bold]{path}[/]: valid ({policy.label})")
    typer.echo(policy_to_toml(policy), nl=False)


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
        raise _fail(str(exc)) from exc
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
        raise _fail(str(exc)) from exc
    _write_generated(workload, output)


def _write_generated(workload: Workload, output: Path) -> None:
    from htcsim.workload.swf import write_workload_swf

    write_workload_swf(
        output, workload, comment=f"synthetic workload {workload.name} (htcsim {__version__})"
    )
    console.print(f"[green]wrote[/] {len(workload):,} jobs to {output}")


if __name__ == "__main__":
    app()
