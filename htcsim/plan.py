"""Capacity planning: the smallest fleet whose replay meets a wait target, now and after growth.

An operator's question is rarely "how does this policy do on this machine" but
"how many nodes do I need so that 95 % of jobs start within two hours, and how
many next year when arrivals are up 50 %?". The simulator answers it by
replaying the same history on fleets of different sizes: each replay is
independent, so they run side by side in a process pool, and each returns a
handful of numbers (never a schedule), so the pool costs almost nothing to feed.

Layer: this module drives the simulator (``htcsim.sim``), as the policy search
(``htcsim/tune``) does, so it sits above it; nothing in the shared domain may
import it, and it imports the simulator only where a replay runs.

Growth is modelled the simplest way that keeps the workload's shape: submit
times are compressed around the first submit (``t0 + (t - t0) / factor``), so
the arrival rate is ``factor`` times higher while job sizes, run times, users,
order, dependencies and think times are those of the log.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NamedTuple

import numpy as np
import typer

from htcsim.cli_args import TraceArgument
from htcsim.cluster import Cluster, NodeType
from htcsim.model import Workload
from htcsim.policy import Policy
from htcsim.worker_pool import WorkerPool

if TYPE_CHECKING:
    # imported where used: the command line imports this module for every
    # command, and most never build a frame or a figure
    import polars as pl
    from rich.table import Table

DEFAULT_CAP_FACTOR = 64
"""The search for an upper bound doubles the machine's node count at most up to
this multiple of it; a target not met there is reported as not reachable (a
wait the fleet size cannot remove, e.g. jobs held by their dependencies)."""

DEFAULT_GRID = 8
"""Sizes in a coarse grid (each narrowing round takes half as many). Fixed rather
than derived from the number of workers: waits are not monotone in fleet size,
so the answer depends on which sizes were evaluated, and a plan must give the
same answer on a laptop and on a 64-core node (pass ``grid`` to use more cores)."""

POINT_COLUMNS: tuple[str, ...] = (
    "size",
    "p95_wait_s",
    "mean_wait_s",
    "utilization",
    "makespan_s",
    "meets_target",
)
"""One evaluated fleet: its size in nodes, the replay's summary figures, and
whether its p95 wait meets the target (inf when some job never started)."""

_DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(min|[smhdw])?", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds from "2h", "30m", "90s", "1.5d", "1h30m" or a bare number of seconds.

    No parser existed in the codebase (policy files give times in seconds);
    this one is for command-line flags, where people write hours.
    """
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned:
        raise ValueError("empty duration; give e.g. 2h, 30m, 90s or 1h30m")
    total = 0.0
    at = 0
    while at < len(cleaned):
        match = _DURATION_PART.match(cleaned, at)
        if match is None or match.end() == at:
            raise ValueError(
                f"cannot read {text!r} as a duration; give e.g. 2h, 30m, 90s, 1.5d or 1h30m"
            )
        unit = match.group(2) or "s"
        total += float(match.group(1)) * _DURATION_UNITS[unit]
        at = match.end()
    return total


# --------------------------------------------------------------------------- inputs


def scale_arrivals(workload: Workload, factor: float) -> Workload:
    """The workload with ``factor`` times the arrival rate: a growth forecast.

    Submit times are compressed around the first submit, ``t0 + (t - t0) /
    factor``, rounded down to whole seconds (the workload's resolution; never
    later than the exact time). Rounding down is monotone, so the job order,
    which is the kernel's tie-break, is kept as it is. Dependencies and think
    times are left alone: a dependent job still waits for its parent's end
    plus the logged think time, as a user would. ``factor`` 1 returns the
    workload itself.
    """
    _check_factor(factor)
    if factor == 1 or len(workload) == 0:
        return workload
    jobs = workload.jobs.copy()
    submit = jobs["submit_s"]
    t0 = int(submit.min())
    jobs["submit_s"] = t0 + np.floor((submit - t0) / float(factor)).astype(np.int64)
    return replace(workload, jobs=jobs, name=f"{workload.name} x{factor:g} arrivals")


def _check_factor(factor: float) -> None:
    if isinstance(factor, bool) or not (
        isinstance(factor, int | float) and math.isfinite(factor) and factor > 0
    ):
        raise ValueError(f"a growth factor must be a positive number, got {factor!r}")


def with_fleet(workload_or_cluster: Workload | Cluster, n_nodes: int) -> Cluster:
    """The machine with ``n_nodes`` nodes of the same shape (cores, memory, GPUs).

    From a workload, its ``Machine``; from a cluster, its only node type
    (reservations and partitions kept: a reservation takes at most the nodes
    there are). A cluster of several node types has no single "fleet size",
    so it is refused rather than resized in some arbitrary proportion.
    """
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int | np.integer) or n_nodes < 1:
        raise ValueError(f"a fleet needs at least one node, got {n_nodes!r}")
    if isinstance(workload_or_cluster, Workload):
        base = Cluster.from_machine(workload_or_cluster.machine)
    else:
        base = workload_or_cluster
    if len(base.node_types) != 1:
        names = ", ".join(t.name for t in base.node_types)
        raise ValueError(
            f"fleet planning resizes one node type; this cluster has {len(base.node_types)} "
            f"({names})"
        )
    return replace(base, node_types=(replace(base.node_types[0], count=int(n_nodes)),))


def min_fleet(workload: Workload, node: NodeType) -> int:
    """The fewest nodes of type ``node`` that can hold the workload's largest job (>= 1).

    Counted with whole tasks per node (a task never spans nodes), so it is
    exact, unlike a total-cores bound. Memory counts only when the node
    declares some (as in the simulator: SWF machines declare none). A task
    larger than the node can never run on any fleet: an error naming the job.
    """
    jobs = workload.jobs
    if len(jobs) == 0:
        return 1
    per_node = np.full(len(jobs), np.iinfo(np.int64).max, dtype=np.int64)
    requests = [(node.cores, jobs["cores_per_task"]), (node.gpus, jobs["gpus_per_task"])]
    if node.mem_mib > 0:
        requests.append((node.mem_mib, jobs["mem_mib_per_task"]))
    for have, want in requests:
        want = want.astype(np.int64)
        asks = want > 0
        per_node[asks] = np.minimum(per_node[asks], have // want[asks])
    too_big = per_node == 0
    if too_big.any():
        k = int(np.flatnonzero(too_big)[0])
        raise ValueError(
            f"job {int(jobs['job_id'][k])} has a task larger than a node "
            f"({node.cores} cores, {node.mem_mib} MiB, {node.gpus} GPUs): no fleet of "
            f"these nodes can run it ({int(too_big.sum())} such job(s))"
        )
    tasks = np.maximum(jobs["n_tasks"].astype(np.int64), 0)
    need = -(-tasks // per_node)  # ceil
    return max(1, int(need.max()))


def _fleet_policy(policy: Policy, n_nodes: int, type_name: str) -> Policy:
    """The policy for one fleet: unchanged, or with autoscaling its max bound is the fleet.

    With autoscaling the planned quantity is the most nodes the autoscaler may
    boot; the cluster holds that many and the policy's max says so. A per-type
    max naming the fleet's type would override it, so it is dropped; a min
    above the fleet is lowered to it.
    """
    if not getattr(policy, "autoscale", False):
        return policy
    changes: dict[str, object] = {"autoscale_max_nodes": n_nodes}
    if getattr(policy, "autoscale_min_nodes", 0) > n_nodes:
        changes["autoscale_min_nodes"] = n_nodes
    per_type = getattr(policy, "autoscale_node_max", ())
    if any(name == type_name for name, _ in per_type):
        changes["autoscale_node_max"] = tuple(p for p in per_type if p[0] != type_name)
    return replace(policy, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- evaluation


class _Point(NamedTuple):
    """What a worker sends back for one replay: a few floats, cheap to pickle."""

    p95_wait_s: float
    mean_wait_s: float
    utilization: float
    makespan_s: float


class _Evaluator:
    """Replays the workload (scaled by a growth factor) on a fleet of a given size.

    One instance lives in each worker process, sent once by the pool's
    initializer, so a task carries only (growth, size). The scaled workload of
    the last growth factor is kept: the plan asks for one factor at a time.
    """

    def __init__(self, workload: Workload, policy: Policy, base: Cluster) -> None:
        self.workload = workload
        self.policy = policy
        self.base = base
        self._scaled: tuple[float, Workload] | None = None

    def __call__(self, growth: float, size: int) -> _Point:
        from htcsim.metrics import summarize
        from htcsim.sim import simulate

        if self._scaled is None or self._scaled[0] != growth:
            self._scaled = (growth, scale_arrivals(self.workload, growth))
        workload = self._scaled[1]
        cluster = with_fleet(self.base, size)
        policy = _fleet_policy(self.policy, size, self.base.node_types[0].name)
        summary = summarize(simulate(workload, policy, cluster=cluster))
        p95 = float(summary["p95_wait_s"])
        if int(summary["n_started"]) + int(summary["n_cancelled"]) < int(summary["n_jobs"]):
            p95 = math.inf  # some job never started: its wait is unbounded, not missing
        return _Point(
            p95_wait_s=p95,
            mean_wait_s=float(summary["mean_wait_s"]),
            utilization=float(summary["utilization"]),
            makespan_s=float(summary["makespan_s"]),
        )


@dataclass(frozen=True)
class PlanStep:
    """Reported after every replay: which one ended, and how far the plan is."""

    growth: float
    size: int
    p95_wait_s: float
    meets_target: bool
    done: int  # replays finished so far
    scheduled: int  # replays asked for so far (grows while the search narrows)


PlanProgress = Callable[[PlanStep], None]


class _Runner:
    """Evaluates batches of (growth, size) in a process pool, or in-process with one worker."""

    def __init__(
        self,
        evaluator: _Evaluator,
        workers: int,
        target_p95_s: float,
        progress: PlanProgress | None,
    ) -> None:
        self._target = target_p95_s
        self._progress = progress
        self._pool = WorkerPool(evaluator, workers)
        self.done = 0
        self.scheduled = 0

    def close(self) -> None:
        self._pool.close()

    def meets(self, point: _Point) -> bool:
        return math.isfinite(point.p95_wait_s) and point.p95_wait_s <= self._target

    def run(self, growth: float, sizes: Sequence[int]) -> dict[int, _Point]:
        """Replay every size (each once), reporting each as it ends."""
        self.scheduled += len(sizes)
        out: dict[int, _Point] = {}
        futures: dict[Future[_Point], int] = {
            self._pool.submit(growth, size): size for size in sizes
        }
        for future in as_completed(futures):
            size = futures[future]
            out[size] = future.result()
            self._report(growth, size, out[size])
        return out

    def _report(self, growth: float, size: int, point: _Point) -> None:
        self.done += 1
        if self._progress is not None:
            self._progress(
                PlanStep(
                    growth, size, point.p95_wait_s, self.meets(point), self.done, self.scheduled
                )
            )


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class GrowthPlan:
    """The evaluated fleets for one growth factor and the smallest that meets the target.

    ``points`` has the columns ``POINT_COLUMNS``, one row per evaluated size,
    sorted by size. ``smallest`` is None when no evaluated size meets the
    target (with every larger one meeting it too); ``searched_up_to`` is the
    largest size tried, so "not reachable" can say how far the search went.
    """

    growth: float
    points: pl.DataFrame
    smallest: int | None
    searched_up_to: int

    @property
    def smallest_p95_wait_s(self) -> float | None:
        if self.smallest is None:
            return None
        sizes = self.points["size"].to_list()
        return float(self.points["p95_wait_s"][sizes.index(self.smallest)])


@dataclass(frozen=True, eq=False)
class PlanResult:
    """A capacity plan: per growth factor, every evaluated fleet and the answer.

    Not comparable with ``==`` (it holds DataFrames): compare ``to_frame()``.
    """

    workload: str
    target_p95_s: float
    node: NodeType  # the shape every fleet is made of (its count: the machine's)
    autoscale: bool  # sizes are the autoscaler's max bound, not a fixed fleet
    lower_bound: int  # the fewest nodes that can hold the largest job
    plans: tuple[GrowthPlan, ...]
    explicit_sizes: bool = False  # the sizes were given, not searched

    def plan_for(self, growth: float = 1.0) -> GrowthPlan:
        for plan in self.plans:
            if plan.growth == growth:
                return plan
        raise KeyError(f"no plan for growth {growth:g} (have {[p.growth for p in self.plans]})")

    def smallest(self, growth: float = 1.0) -> int | None:
        return self.plan_for(growth).smallest

    def to_frame(self) -> pl.DataFrame:
        """Every evaluated point (plan.csv): the growth factor, the point's figures,
        the target, and whether the point is its growth factor's answer."""
        import polars as pl

        frames = [
            plan.points.with_columns(
                pl.lit(plan.growth, dtype=pl.Float64).alias("growth"),
                (pl.col("size") == (-1 if plan.smallest is None else plan.smallest)).alias(
                    "chosen"
                ),
            )
            for plan in self.plans
        ]
        return (
            pl.concat(frames)
            .with_columns(pl.lit(self.target_p95_s, dtype=pl.Float64).alias("target_p95_s"))
            .select("growth", *POINT_COLUMNS, "target_p95_s", "chosen")
        )


def _frame(points: dict[int, _Point], meets: Callable[[_Point], bool]) -> pl.DataFrame:
    import polars as pl

    sizes = sorted(points)
    return pl.DataFrame(
        {
            "size": sizes,
            "p95_wait_s": [points[s].p95_wait_s for s in sizes],
            "mean_wait_s": [points[s].mean_wait_s for s in sizes],
            "utilization": [points[s].utilization for s in sizes],
            "makespan_s": [points[s].makespan_s for s in sizes],
            "meets_target": [meets(points[s]) for s in sizes],
        },
        schema={
            "size": pl.Int64,
            "p95_wait_s": pl.Float64,
            "mean_wait_s": pl.Float64,
            "utilization": pl.Float64,
            "makespan_s": pl.Float64,
            "meets_target": pl.Boolean,
        },
    )


# --------------------------------------------------------------------------- search


def _smallest_meeting(points: dict[int, _Point], meets: Callable[[_Point], bool]) -> int | None:
    """The smallest evaluated size that meets the target with every larger one meeting it too."""
    smallest = None
    for size in sorted(points, reverse=True):
        if not meets(points[size]):
            break
        smallest = size
    return smallest


def _spread(low: int, high: int, k: int, skip: Iterable[int]) -> list[int]:
    """Up to ``k`` integers evenly spaced strictly between ``low`` and ``high``, not in ``skip``."""
    if high - low < 2 or k < 1:
        return []
    inner = np.linspace(low, high, k + 2)[1:-1]
    chosen = set(np.rint(inner).astype(np.int64).tolist()) - set(skip)
    return sorted(s for s in chosen if low < s < high)


def _search(
    runner: _Runner, growth: float, lower: int, start: int, cap: int, grid: int
) -> tuple[dict[int, _Point], int | None]:
    """Bracket, grid, then k-section for one growth factor; every point evaluated.

    1. Upper bound: the machine's own size (``start``) and its doubling, two
       at a time (the second usually meets when the first misses, and costs
       one replay when it does not), doubling on up to ``cap``; nothing
       meeting there: not reachable.
    2. A coarse grid of ``grid`` sizes below the first size that meets: from
       the lower bound when the machine itself meets, else strictly above the
       last size that missed.
    3. k-section on integers (bisection generalised to a batch): ``grid //
       2`` sizes evenly inside (largest miss below the answer, answer) per
       batch, so a batch keeps the workers busy; ``grid`` 2 is plain
       bisection. It ends when the two are adjacent or the answer is the
       lower bound.

    Every decision depends on the evaluated points only, never on the number
    of workers or on the order in which replays finish.
    """
    meets = runner.meets
    bracket = [start]
    while bracket[-1] < cap:
        bracket.append(min(2 * bracket[-1], cap))
    points: dict[int, _Point] = {}
    below, met = None, None
    while bracket and met is None:
        batch, bracket = bracket[:2], bracket[2:]
        points.update(runner.run(growth, batch))
        for size in batch:
            if meets(points[size]):
                met = size
                break
            below = size
    if met is None:
        return points, None
    if below is None:  # the machine meets the target: grid from the lower bound
        coarse = np.rint(np.linspace(lower, met, grid + 1)[:-1]).astype(np.int64).tolist()
        points.update(runner.run(growth, sorted(set(coarse) - set(points))))
    else:
        points.update(runner.run(growth, _spread(below, met, grid, points)))
    width = max(1, grid // 2)
    while True:
        smallest = _smallest_meeting(points, meets)
        if smallest is None or smallest == lower:
            return points, smallest
        # the largest evaluated size below the answer misses (else it would be
        # the answer); there is one: the lower bound or a miss of step 1
        below = max(s for s in points if s < smallest)
        between = _spread(below, smallest, width, points)
        if not between:
            return points, smallest
        points.update(runner.run(growth, between))


def plan_fleet(
    workload: Workload,
    policy: Policy,
    target_p95_s: float,
    *,
    growth: Sequence[float] = (1.0,),
    sizes: Sequence[int] | None = None,
    workers: int | None = None,
    progress: PlanProgress | None = None,
    cluster: Cluster | None = None,
    grid: int | None = None,
    cap_factor: int = DEFAULT_CAP_FACTOR,
) -> PlanResult:
    """The smallest fleet whose replay has a 95th-percentile wait <= ``target_p95_s``.

    For each growth factor (``scale_arrivals``; duplicates count once), fleets
    of the workload's machine (or of ``cluster``'s only node type) are
    replayed under ``policy``. The p95 wait is ``htcsim.metrics.summarize``'s,
    over started jobs; a job that never starts makes it infinite. With
    ``policy.autoscale`` the size planned is the autoscaler's max bound.

    ``sizes`` given: exactly those are evaluated. Otherwise a search (see
    ``_search``): the lower bound is the largest job's node need
    (``min_fleet``), the upper bound the machine's node count doubled until
    the target is met, at most ``cap_factor`` times it (beyond: not
    reachable, ``smallest`` None); a coarse grid of ``grid`` sizes (default
    ``DEFAULT_GRID``), then integer k-section, ``grid // 2`` sizes a round
    (``grid=2``: bisection).

    Waits are not strictly monotone in fleet size (a larger machine can
    reorder backfilling so that a few jobs wait longer), so the answer is the
    smallest *evaluated* size that meets the target *and every larger
    evaluated size meets it too*: a lucky dip below a size that misses is not
    taken. Every evaluated point is kept in the result.

    ``workers`` processes (default ``os.cpu_count()``; 1 runs in-process)
    each receive the workload once, through the pool's initializer; a task
    sends a growth factor and a size and gets four floats back. No batch is
    larger than ``grid``, so there are at most that many workers. Which sizes are
    evaluated depends on ``grid``, never on ``workers``, and replays are
    deterministic: serial and parallel plans are identical. Workers are
    spawned (not forked), so a script calling this needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    if not (math.isfinite(target_p95_s) and target_p95_s >= 0):
        raise ValueError(f"the target p95 wait must be >= 0 seconds, got {target_p95_s!r}")
    if len(workload) == 0:
        raise ValueError(f"workload {workload.name} has no job: nothing to plan for")
    if not growth:
        raise ValueError("give at least one growth factor")
    for factor in growth:
        _check_factor(factor)
    factors = [float(g) for g in dict.fromkeys(growth)]  # in the order given, each once
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    grid = DEFAULT_GRID if grid is None else grid
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an integer >= 2, got {grid!r}")
    if cap_factor < 1:
        raise ValueError(f"cap_factor must be >= 1, got {cap_factor}")
    source: Workload | Cluster = workload if cluster is None else cluster
    count = workload.machine.n_nodes if cluster is None else cluster.n_nodes
    base = with_fleet(source, count)  # refuses a cluster of several node types
    node = base.node_types[0]
    lower = min_fleet(workload, node)
    explicit = None
    if sizes is not None:
        explicit = sorted({_size(s) for s in sizes})
        if not explicit:
            raise ValueError("sizes is empty: give at least one fleet size")
        if explicit[0] < lower:
            raise ValueError(
                f"a fleet of {explicit[0]} node(s) cannot hold the largest job, which needs "
                f"{lower} node(s) of {node.cores} cores"
            )
    n_workers = min(n_workers, grid if explicit is None else len(explicit))
    start = max(node.count, lower)
    runner = _Runner(_Evaluator(workload, policy, base), n_workers, target_p95_s, progress)
    plans = []
    try:
        for factor in factors:
            if explicit is not None:
                points = runner.run(factor, explicit)
                smallest = _smallest_meeting(points, runner.meets)
            else:
                points, smallest = _search(runner, factor, lower, start, cap_factor * start, grid)
            plans.append(GrowthPlan(factor, _frame(points, runner.meets), smallest, max(points)))
    finally:
        runner.close()
    return PlanResult(
        workload=workload.name,
        target_p95_s=float(target_p95_s),
        node=node,
        autoscale=bool(getattr(policy, "autoscale", False)),
        lower_bound=lower,
        plans=tuple(plans),
        explicit_sizes=explicit is not None,
    )


def _size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"a fleet size must be an integer >= 1, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- figure


def plot_plan(plan: PlanResult, path: Path | str) -> Path:
    """p95 wait (solid) and mean wait (dashed) against fleet size, one colour per
    growth factor, the target as a horizontal line and each answer starred.

    Waits near the smallest fleets are often days while the answer sits at
    minutes, so the y axis turns logarithmic when the finite waits span more
    than two decades (waits under 1 s drawn at 1 s, as the wait ECDF does); the
    x axis turns logarithmic when the doubling search spread the sizes over
    more than a factor of 8. A size where some job never started has no wait
    and is not drawn.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from htcsim.metrics import format_duration
    from htcsim.plots import _save, wait_ticks

    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    kind = "autoscaler max nodes" if plan.autoscale else "fleet size"
    ax.set_title(
        f"{kind.capitalize()} for a p95 wait <= {format_duration(plan.target_p95_s)}: "
        f"{plan.workload}",
        fontsize=10,
    )
    waits = np.concatenate(
        [p.points[c].to_numpy() for p in plan.plans for c in ("p95_wait_s", "mean_wait_s")]
        + [np.array([plan.target_p95_s])]
    )
    waits = waits[np.isfinite(waits)]
    log_y = waits.size > 0 and waits.max() / max(waits.min(), 1.0) > 100
    floor = 1.0 if log_y else 0.0
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles: list[Line2D] = []
    for k, growth_plan in enumerate(plan.plans):
        color = colors[k % len(colors)]
        sizes = growth_plan.points["size"].to_numpy()
        p95 = np.maximum(growth_plan.points["p95_wait_s"].to_numpy(), floor)
        mean = np.maximum(growth_plan.points["mean_wait_s"].to_numpy(), floor)
        p95[~np.isfinite(p95)] = np.nan
        if growth_plan.smallest is None:
            answer = f"not met up to {growth_plan.searched_up_to} nodes"
        else:
            answer = f"{growth_plan.smallest} nodes"
            at = int(np.flatnonzero(sizes == growth_plan.smallest)[0])
            ax.plot(
                [growth_plan.smallest],
                [p95[at]],
                marker="*",
                markersize=15,
                color=color,
                markeredgecolor="black",
                linestyle="none",
                zorder=3,
            )
        (line,) = ax.plot(
            sizes,
            p95,
            marker="o",
            markersize=3,
            color=color,
            label=f"growth x{growth_plan.growth:g}: {answer}",
        )
        ax.plot(sizes, mean, linestyle="--", color=color, alpha=0.6)
        handles.append(line)
    ax.axhline(max(plan.target_p95_s, floor), color="black", linestyle=":")
    handles.append(
        Line2D(
            [],
            [],
            color="black",
            linestyle=":",
            label=f"target p95: {format_duration(plan.target_p95_s)}",
        )
    )
    handles.append(Line2D([], [], color="gray", linestyle="--", label="mean wait"))
    all_sizes = np.concatenate([p.points["size"].to_numpy() for p in plan.plans])
    if all_sizes.max() / all_sizes.min() > 8:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_y:
        ax.set_yscale("log")
        high = float(waits.max()) * 1.5
        ax.set_yticks(*wait_ticks(high))
        ax.set_ylim(bottom=0.7)  # the points drawn at 1 s stay visible
        ax.text(
            0.98,
            0.02,
            "waits < 1 s drawn at 1 s",
            ha="right",
            va="bottom",
            transform=ax.transAxes,
            fontsize=7,
        )
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_duration(v)))
        top = float(waits.max()) if waits.size else 1.0
        ax.set_ylim(0.0, max(top, 1.0) * 1.25)  # headroom for the legend
    node = plan.node
    ax.set_xlabel(f"{kind} (nodes of {node.cores} core{'s' if node.cores != 1 else ''})")
    ax.set_ylabel("wait: p95 (solid), mean (dashed)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------- command


def parse_sizes(text: str) -> list[int]:
    """Fleet sizes from a comma list ("300,400,500"), each an integer >= 1."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(_size(int(part)))
        except ValueError as exc:
            raise ValueError(
                f"--sizes: {part!r} is not a fleet size (an integer >= 1); give e.g. 300,400,500"
            ) from exc
    if not out:
        raise ValueError("--sizes is empty; give e.g. 300,400,500")
    return out


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

    from htcsim.cli import _fail, _print_loading, console, err_console
    from htcsim.metrics import format_duration
    from htcsim.policy import PolicyError, load_policy
    from htcsim.workload.loader import load_workload
    from htcsim.workload.swf import SWFError

    try:
        target_s = parse_duration(target_wait_p95)
        wanted = parse_sizes(sizes) if sizes is not None else None
        policy = load_policy(policy_file) if policy_file is not None else Policy()
    except (ValueError, PolicyError) as exc:
        raise _fail(str(exc)) from exc
    if policy.order == "priority":
        raise _fail(
            "the 'priority' order needs a priority per job, which the command line "
            "cannot give; use multifactor or the Python API"
        )
    try:
        workload = load_workload(trace, max_jobs=max_jobs)
    except (SWFError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    _print_loading(workload)
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
            raise _fail(str(exc)) from exc
    out.mkdir(parents=True, exist_ok=True)
    plan.to_frame().write_csv(out / "plan.csv")
    plot_plan(plan, out / "plan.png")
    console.print(_plan_table(plan))
    console.print(f"[green]wrote[/] plan.csv, plan.png to {out}/")
    if any(p.smallest is None for p in plan.plans):
        raise typer.Exit(code=1)


def _plan_table(plan: PlanResult) -> Table:
    """Growth, answer, its p95 wait and the sizes evaluated, one row per growth factor."""
    from rich.table import Table

    from htcsim.metrics import format_duration as fmt

    kind = "smallest autoscale max" if plan.autoscale else "smallest fleet"
    table = Table(
        title=f"{plan.workload}: p95 wait <= {fmt(plan.target_p95_s)}, "
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
