"""From parsed sacct records to jobs: the conventions of :mod:`htcsim.workload.sacct`.

The reader checks the grammar of every value; this module decides what the values
mean for a replay, and is where each convention of the ``sacct`` module docstring
(drop reasons and their order, task shapes, memory per task, machine inference,
dense names, renumbered ids) is implemented, as polars expressions over all jobs at
once. Columns it expects (typed by the reader): ``submit``, ``start``, ``end``
(epoch seconds), ``elapsed``, ``limit`` (seconds), ``ncpus``, ``reqcpus``,
``nnodes``, ``mem`` (MiB) with ``mem_per``, ``alloc_gpus``, ``req_gpus``,
``allocated`` (AllocTRES not empty), ``state``, the job id parts ``base``, ``task``,
``range``, ``het``, and the names ``JobID``, ``User``, ``Group``, ``Partition``,
``QOS`` when the file has them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from htcsim.model import Machine, Workload, empty_jobs
from htcsim.workload import sacct_values as sv

col = pl.col


@dataclass(frozen=True)
class SacctImport:
    """The workload and the names behind its numbers (id -> name tables).

    ``job_names`` lists only the jobs whose id is not their Slurm job id (array
    tasks, heterogeneous components, repeats); every other id is the Slurm one.
    """

    workload: Workload
    users: dict[int, str] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)
    partitions: dict[int, str] = field(default_factory=dict)
    qos: dict[int, str] = field(default_factory=dict)
    job_names: dict[int, str] = field(default_factory=dict)


def _run_s() -> pl.Expr:
    return pl.coalesce(col("elapsed"), col("end") - col("start"))


def drop_reason(has_alloc_column: bool) -> pl.Expr:
    """Why a record (steps already out) is no job to replay; null: keep it.

    The first reason that applies wins, in the order of the ``sacct`` docstring.
    Without an AllocTRES column a cancelled job that has a Start is taken to have run.
    """
    cancelled = col("state") == "CANCELLED"
    unallocated = col("allocated").not_() & (_run_s() == 0) if has_alloc_column else False
    cores = pl.max_horizontal(col("ncpus").fill_null(0), col("reqcpus").fill_null(0))
    return (
        pl.when(col("range").is_not_null())
        .then(pl.lit("array_range_not_started"))
        .when(col("state").is_in(list(sv.UNFINISHED_STATES)))
        .then(pl.lit("unfinished:") + col("state"))
        .when(col("state") == "REVOKED")
        .then(pl.lit("revoked"))
        .when(col("submit").is_null())
        .then(pl.lit("submit_unknown"))
        .when(cancelled & (col("start").is_null() | unallocated))
        .then(pl.lit("cancelled_before_start"))
        .when(col("start").is_null())
        .then(pl.lit("never_started"))
        .when(_run_s().is_null())
        .then(pl.lit("run_time_unknown"))
        .when(cores <= 0)
        .then(pl.lit("size_unknown_or_zero"))
    )


def count_reasons(counter: Counter[str], reasons: pl.Series) -> None:
    """Add the non-null reasons of ``reasons`` to ``counter``."""
    for reason, n in reasons.drop_nulls().value_counts().iter_rows():
        counter[str(reason)] += int(n)


def shape(jobs: pl.DataFrame) -> pl.DataFrame:
    """Run, walltime, cores, tasks, GPUs and memory per task of kept jobs.

    Adds ``node_cores`` (the most cores the job held on one node) and ``per_node``
    (False: spread as one-core tasks), which the machine inference and the counts
    of changes use.
    """
    cores = pl.when(col("ncpus") > 0).then(col("ncpus")).otherwise(col("reqcpus"))
    gpus = pl.when(col("allocated")).then(col("alloc_gpus")).otherwise(col("req_gpus"))
    jobs = jobs.with_columns(
        run_s=_run_s(), cores=cores, gpus=gpus.fill_null(0), nodes=col("nnodes").fill_null(0)
    )
    some_nodes = col("nodes").clip(1)
    per_node = (col("nodes") >= 1) & (col("cores") % some_nodes == 0)
    per_node = per_node & (col("gpus") % some_nodes == 0)
    jobs = jobs.with_columns(
        per_node=per_node,
        n_tasks=pl.when(per_node).then(col("nodes")).otherwise(col("cores")),
        whole_node=(col("mem") == 0).fill_null(False),
    )
    tasks = col("n_tasks")
    mem_total = (
        pl.when(col("whole_node"))
        .then(None)  # the node's memory, known only once the machine is (whole_node_memory)
        .when(col("mem_per") == "c")
        .then(col("mem") * col("cores"))
        .when(col("mem_per") == "n")
        .then(col("mem") * some_nodes)
        .otherwise(col("mem"))  # Slurm 21.08+: the job's total
    )
    spread_over_nodes = (col("cores") + some_nodes - 1) // some_nodes
    return jobs.with_columns(
        walltime_s=pl.when(col("limit") > 0).then(col("limit")).otherwise(col("run_s")),
        cores_per_task=col("cores") // tasks,
        gpus_per_task=(col("gpus") + tasks - 1) // tasks,
        mem_mib_per_task=(mem_total.fill_null(0.0) / tasks).ceil().cast(pl.Int64),
        node_mem=(mem_total / some_nodes).ceil().cast(pl.Int64),
        node_cores=pl.when(col("nodes") >= 1)
        .then(pl.when(per_node).then(col("cores") // tasks).otherwise(spread_over_nodes))
        .otherwise(1),
    )


def node_memory(jobs: pl.DataFrame) -> int:
    """The most memory (MiB) one job asked for on one node: a lower bound of the nodes'
    memory, for the jobs that asked for a whole node (ReqMem 0); 0 when no job says."""
    return int(jobs["node_mem"].drop_nulls().to_numpy().max(initial=0))


def whole_node_memory(jobs: pl.DataFrame, mem_per_node: int) -> pl.DataFrame:
    """Jobs that asked for whole nodes (ReqMem 0, as ``--mem=0``) get ``mem_per_node``
    on each node they used, spread over their tasks as any other request is."""
    some_nodes = col("nodes").clip(1)
    per_task = (pl.lit(float(mem_per_node)) * some_nodes / col("n_tasks")).ceil().cast(pl.Int64)
    return jobs.with_columns(
        mem_mib_per_task=pl.when(col("whole_node")).then(per_task).otherwise("mem_mib_per_task")
    )


def _peak(start: np.ndarray, run: np.ndarray, amount: np.ndarray) -> int:
    """Most of ``amount`` held at once by jobs running over [start, start + run)."""
    times = np.concatenate([start, start + run])
    delta = np.concatenate([amount, -amount])
    order = np.lexsort((delta, times))  # at one instant, ends before starts
    return int(np.cumsum(delta[order]).max(initial=0))


def _largest(jobs: pl.DataFrame, name: str, default: int) -> int:
    return int(jobs[name].to_numpy().max(initial=default))


def machine_for(
    jobs: pl.DataFrame,
    nodes: int | None,
    cores_per_node: int | None,
    gpus_per_node: int | None,
    mem_per_node: int | None = None,
) -> tuple[Machine, bool]:
    """The machine given, each size left out inferred from ``jobs``; and whether inferred.

    Cores (GPUs) per node: the most one job held on one node. Nodes: the most one
    job used, or the nodes the recorded schedule's peak of cores (GPUs) needs, if
    more. The smallest machine of identical nodes that fits the history. Memory
    is declared only when given (``mem_per_node``): inferred, it would be a lower
    bound that makes memory, not cores, what a replay runs short of.
    """
    inferred = nodes is None or cores_per_node is None or gpus_per_node is None
    cpn = cores_per_node if cores_per_node is not None else _largest(jobs, "node_cores", 1)
    gpn = gpus_per_node if gpus_per_node is not None else _largest(jobs, "gpus_per_task", 0)
    if nodes is None:
        start, run = jobs["start"].to_numpy(), jobs["run_s"].to_numpy()
        cores = jobs["cores"].to_numpy()
        need = [_largest(jobs, "nodes", 1), math.ceil(_peak(start, run, cores) / cpn)]
        if gpn > 0:
            gpus = (jobs["gpus_per_task"] * jobs["n_tasks"]).to_numpy()
            need.append(math.ceil(_peak(start, run, gpus) / gpn))
        nodes = max(need)
    machine = Machine(
        n_nodes=nodes, cores_per_node=cpn, gpus_per_node=gpn, mem_mib_per_node=mem_per_node or 0
    )
    return machine, inferred


def too_large(machine: Machine) -> pl.Expr:
    """``larger_than_node`` / ``larger_than_machine`` for jobs that cannot fit; else null."""
    all_gpus = machine.gpus_per_node * machine.n_nodes
    node_too_small = (col("cores_per_task") > machine.cores_per_node) | (
        col("gpus_per_task") > machine.gpus_per_node
    )
    machine_too_small = (col("cores") > machine.total_cores) | (
        col("gpus_per_task") * col("n_tasks") > all_gpus
    )
    if machine.mem_mib_per_node > 0:  # declared: memory must fit as well
        all_mem = machine.mem_mib_per_node * machine.n_nodes
        node_too_small = node_too_small | (col("mem_mib_per_task") > machine.mem_mib_per_node)
        machine_too_small = machine_too_small | (col("mem_mib_per_task") * col("n_tasks") > all_mem)
    return (
        pl.when(node_too_small)
        .then(pl.lit("larger_than_node"))
        .when(machine_too_small)
        .then(pl.lit("larger_than_machine"))
    )


def renumber(jobs: pl.DataFrame, first_free: int) -> tuple[pl.DataFrame, dict[int, str]]:
    """``job_id``: the Slurm id of a plain job; ``first_free``, +1, ... in file order for
    array tasks, heterogeneous components and repeats of an id; and id -> JobID text
    of those. Done before any drop that depends on options, so ids depend on the file
    alone."""
    plain = col("task").is_null() & col("het").is_null()
    fresh = (plain & col("base").is_first_distinct().over(plain)).not_()
    jobs = jobs.with_columns(fresh=fresh).with_columns(
        job_id=pl.when("fresh")
        .then(first_free - 1 + col("fresh").cast(pl.Int64).cum_sum())
        .otherwise("base")
    )
    renamed = jobs.filter("fresh").select("job_id", "JobID").iter_rows()
    return jobs, {int(job_id): str(name) for job_id, name in renamed}


def _dense(jobs: pl.DataFrame, name: str) -> tuple[pl.Expr, dict[int, str]]:
    """Ids 1..N of the names in sorted order (-1 when empty), and the id -> name table."""
    if name not in jobs.columns:
        return pl.lit(-1, dtype=pl.Int32), {}
    names = sorted(jobs[name].drop_nulls().unique().to_list())
    mapping = {value: k for k, value in enumerate(names, start=1)}
    ids = col(name).replace_strict(mapping, default=-1, return_dtype=pl.Int32)
    return ids, {k: value for value, k in mapping.items()}


def _changed(jobs: pl.DataFrame, inferred: bool, renamed: int) -> Counter[str]:
    counts = jobs.select(
        walltime_from_run_time=(col("limit").fill_null(0) <= 0).sum(),
        run_exceeds_walltime=(col("run_s") > col("walltime_s")).sum(),
        run_from_end_minus_start=col("elapsed").is_null().sum(),
        cores_from_reqcpus=(col("ncpus").fill_null(0) <= 0).sum(),
        one_core_tasks=col("per_node").not_().sum(),
        gpus_rounded_up=(col("gpus_per_task") * col("n_tasks") != col("gpus")).sum(),
        start_before_submit=(col("start") < col("submit")).sum(),
        mem_whole_node=(col("whole_node") & (col("mem_mib_per_task") > 0)).sum(),
        mem_whole_node_unknown=(col("whole_node") & (col("mem_mib_per_task") == 0)).sum(),
    ).row(0, named=True)
    changed = Counter({reason: int(n) for reason, n in counts.items() if n})
    if renamed:
        changed["job_id_renumbered"] = renamed
    if inferred and len(jobs):
        changed["machine_inferred"] = 1
    return changed


def _listing(table: dict[int, str]) -> str:
    return "; ".join(f"{k} {name}" for k, name in table.items())


def _job_table(jobs: pl.DataFrame, origin: int, ids: dict[str, pl.Expr]) -> np.ndarray:
    """JOB_DTYPE rows in (submit, job id) order; columns not set here keep the
    unknown markers of ``empty_jobs`` (executable, preceding job, CPU time...)."""
    wait = col("start") - col("submit")
    table = jobs.select(
        "job_id",
        "run_s",
        "walltime_s",
        "n_tasks",
        "cores_per_task",
        "mem_mib_per_task",
        "gpus_per_task",
        submit_s=col("submit") - origin,
        status=col("state").replace_strict(sv.ENDED_STATUS, return_dtype=pl.Int8),
        recorded_wait_s=pl.when(wait >= 0).then(wait).otherwise(-1),
        recorded_alloc=pl.when(col("ncpus") > 0).then("ncpus").otherwise(-1),
        **ids,
    ).sort("submit_s", "job_id")
    out = empty_jobs(table.height)
    for column in table.columns:
        out[column] = table[column].to_numpy()
    return out


_NAMED = {"user_id": "User", "group_id": "Group", "partition_id": "Partition", "queue_id": "QOS"}
"""JOB_DTYPE columns numbered from a name column of the file."""


def assemble(
    name: str,
    jobs: pl.DataFrame,
    machine: Machine,
    *,
    inferred: bool,
    dropped: Counter[str],
    job_names: dict[int, str],
    header: dict[str, str],
) -> SacctImport:
    """The workload (jobs, machine, header, counts) and its name tables."""
    origin = int(jobs["submit"].to_numpy().min()) if len(jobs) else None
    ids: dict[str, pl.Expr] = {}
    tables: dict[str, dict[int, str]] = {}
    for column, source in _NAMED.items():
        ids[column], tables[column] = _dense(jobs, source)
    out = _job_table(jobs, origin or 0, ids)
    header = dict(header)
    if tables["partition_id"]:
        header["Partitions"] = _listing(tables["partition_id"])
    if tables["queue_id"]:
        header["Queues"] = _listing(tables["queue_id"]) + " (Slurm QOS)"
    kept = set(out["job_id"].tolist())
    renamed = {job_id: text for job_id, text in job_names.items() if job_id in kept}
    workload = Workload(
        name=name,
        jobs=out,
        machine=machine,
        unix_start_time=origin,
        header=header,
        dropped=dropped,
        changed=_changed(jobs, inferred, len(renamed)),
    )
    return SacctImport(
        workload,
        users=tables["user_id"],
        groups=tables["group_id"],
        partitions=tables["partition_id"],
        qos=tables["queue_id"],
        job_names=renamed,
    )


def workload_name(path: Path) -> str:
    """``cluster-2024q1`` for ``.../cluster-2024q1.sacct.gz`` or ``cluster-2024q1.txt``."""
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return Path(name).stem or name
