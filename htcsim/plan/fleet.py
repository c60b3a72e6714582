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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from htcsim.cluster import Cluster, NodeType
from htcsim.model import Workload
from htcsim.plan.defaults import DEFAULT_CAP_FACTOR, DEFAULT_GRID
from htcsim.policy import Policy
from htcsim.sim.worker_pool import WorkerPool

if TYPE_CHECKING:
    # imported where used: the command line imports this module for every
    # command, and most never build a frame or a figure
    import polars as pl

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


# --------------------------------------------------------------------------- sizes


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
