"""A slow, obvious scheduler that the compiled kernel must agree with.

Pure Python, a pool of cores, no incremental tricks: every step looks at the
whole job list and rebuilds everything from scratch (which jobs have ended,
which dependencies are met, which jobs are queued, in which order, which are
held back by a limit). It implements the semantics of docs/architecture.md and of
the kernel notes literally:

* events at one instant are applied together (completions, then arrivals),
  then one pass runs; a job that ends the instant it starts (run 0) ends in a
  further step at the same instant, followed by another pass;
* ``none``: start jobs in queue order until the first that does not fit;
* ``easy``: the same, then the first job that does not fit (the head) gets a
  reservation at the shadow time (running jobs' requested ends); a later job
  starts now if it fits and either ends by the shadow time or uses no more
  than the extra processors left at the shadow time;
* ``conservative``: every queued job, in order, takes the earliest time it
  fits for its whole requested time given the reservations before it; a
  job whose reservation is now starts now.

Queue order: ``fcfs`` (submit time, job id), ``sjf`` (walltime first),
``priority`` (the given priority, larger first); ties end on (submit, id).

Dependencies (``RefJob.deps``: parent index, kind, think time): a job whose
parents have not all ended is held; ``afterany`` is met by any end (a
cancellation included), ``afterok`` by an end with ``ok``, ``afternotok`` by
an end without it (a cancellation counts as not ok). Once every parent has
ended and every dependency is met, the job is eligible at
max(submit, parent end + think time over its dependencies); a pass runs at
that instant and the job is queued with its *submit time* as its FCFS key.
A job one of whose dependencies can never be met is cancelled (it never
starts) at max(its submit, the end of the first parent that ruled it out); a
cancellation is an end (not ok) for its own dependents, so it spreads.

Limits (``Limits``, 0: none) per user and per group: running jobs and cores
held by running jobs (including the jobs started earlier in the same pass),
and queued jobs: only the first N pending jobs of a user (group) in queue
order are considered, a job that the same pass started no longer counting as
pending. A job held back by a limit is passed over: it starts nothing, is
never the head and gets no reservation.

Jobs are killed at their requested time, so one runs min(run, walltime).
A requested time of 0 is valid: such a job needs its cores free at the instant
it starts (it fits at a breakpoint whose free cores hold it) but takes no time
in the profile, and ends at that instant.

Worked example of a dependency (2 cores, ``none``): A (2 cores, 10 s) and B
(1 core, 10 s, afterok on A, think time 5) submitted at 0; C (2 cores, 10 s)
at 1. t=0: A starts, B is held. t=1: C waits for A's cores. t=10: A ends
well; C starts; B is held until 15. t=15: B is queued (its key is its submit
time 0, ahead of C's) but C holds both cores. t=20: C ends, B starts. Had A
failed, B would have been cancelled at 10.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

INF = math.inf

DEP_KINDS: tuple[str, ...] = ("afterany", "afterok", "afternotok")


@dataclass
class RefJob:
    job_id: int
    submit: int
    cores: int
    walltime: int  # >= 0: a 0 s job needs its cores for the instant it starts
    run: int  # recorded; the job runs min(run, walltime)
    priority: float = 0.0
    user: int = -1  # -1: no user, no user limit applies
    group: int = -1  # -1: no group, no group limit applies
    # (parent index in the job list, kind in DEP_KINDS, think time in seconds)
    deps: list[tuple[int, str, int]] = field(default_factory=list)
    ok: bool = True  # whether it ends well when it ends (afterok / afternotok)


@dataclass
class RefResult:
    start: list[int]  # -1: never started
    end: list[int]  # -1: never ended; a cancelled job's end is its cancellation
    cancelled: list[bool]  # cancelled because a dependency can never be met


@dataclass
class Limits:
    """Caps (0: none) per user and per group.

    ``jobs``/``cores``: running jobs and cores held by a user; ``queued``: only
    the first ``queued`` pending jobs of a user (queue order) are considered.
    The ``group_`` fields are the same caps per group.
    """

    jobs: int = 0
    cores: int = 0
    queued: int = 0
    group_jobs: int = 0
    group_cores: int = 0
    group_queued: int = 0

    def over(self, job: RefJob, running: list[RefJob]) -> bool:
        """Would starting ``job`` exceed a cap of its user or group, given the jobs running?"""
        for who, max_jobs, max_cores in (
            ("user", self.jobs, self.cores),
            ("group", self.group_jobs, self.group_cores),
        ):
            mine = _same_entity(job, running, who)
            if mine is None:
                continue
            if max_jobs and len(mine) >= max_jobs:
                return True
            if max_cores and sum(r.cores for r in mine) + job.cores > max_cores:
                return True
        return False

    def beyond_queue(self, job: RefJob, ahead: list[RefJob]) -> bool:
        """Is ``job`` past the first N pending jobs of its user or group?

        ``ahead``: the jobs before it in queue order still pending (not started
        by this pass).
        """
        for who, max_queued in (("user", self.queued), ("group", self.group_queued)):
            mine = _same_entity(job, ahead, who)
            if mine is not None and max_queued and len(mine) >= max_queued:
                return True
        return False


def _same_entity(job: RefJob, others: list[RefJob], who: str) -> list[RefJob] | None:
    """The jobs of ``others`` with ``job``'s user (group); None when it has none."""
    mine = getattr(job, who)
    if mine < 0:
        return None
    return [o for o in others if getattr(o, who) == mine]


def sort_key(job: RefJob, order: str) -> tuple[float, int, int]:
    if order == "fcfs":
        return (0.0, job.submit, job.job_id)
    if order == "sjf":
        return (float(job.walltime), job.submit, job.job_id)
    return (-job.priority, job.submit, job.job_id)


def dependency_met(kind: str, ok: bool) -> bool:
    """Does a parent's end (``ok``: it ended well) meet a dependency of ``kind``?"""
    return kind == "afterany" or (kind == "afterok") == ok


def simulate(
    jobs: list[RefJob],
    total_cores: int,
    backfill: str,
    order: str = "fcfs",
    limits: Limits | None = None,
) -> tuple[list[int], list[int]]:
    """Start and end time of every job (same order as ``jobs``); -1: never."""
    result = simulate_detailed(jobs, total_cores, backfill, order, limits)
    return result.start, result.end


def simulate_detailed(
    jobs: list[RefJob],
    total_cores: int,
    backfill: str,
    order: str = "fcfs",
    limits: Limits | None = None,
) -> RefResult:
    """Start, end and dependency cancellation of every job (same order as ``jobs``).

    Each step is one instant: completions, then arrivals and everything the
    dependencies imply (recomputed from scratch), then one pass. Steps happen
    at every submit time, every completion and every time a held job's think
    time ends (where the kernel's driver wakes up).
    """
    limits = limits or Limits()
    n = len(jobs)
    start = [-1] * n
    end = [-1] * n
    running: dict[int, int] = {}  # job -> actual end
    if not any(job.deps for job in jobs):
        return _without_dependencies(jobs, total_cores, backfill, order, limits)
    now: float = min((job.submit for job in jobs), default=INF)
    while now < INF:
        t = int(now)
        for j in sorted(i for i, e in running.items() if e <= t):
            del running[j]
            end[j] = t
        status = dependency_status(jobs, start, end, t)
        queue = [j for j in range(n) if status[j][0] == "eligible" and status[j][1] <= t]
        queue.sort(key=lambda i: sort_key(jobs[i], order))
        free = total_cores - sum(jobs[j].cores for j in running)
        for j in schedule_pass(jobs, queue, running, start, free, t, backfill, limits):
            start[j] = t
            running[j] = t + min(jobs[j].run, jobs[j].walltime)
        later = [job.submit for job in jobs if job.submit > t]
        later += list(running.values())  # a run-0 job started now ends now: another step
        later += [s[1] for s in status if s[0] == "eligible" and s[1] > t]
        now = min(later, default=INF)
    status = dependency_status(jobs, start, end, INF)
    cancelled = [s[0] == "cancelled" for s in status]
    for j, s in enumerate(status):
        if s[0] == "cancelled":
            end[j] = int(s[1])
    return RefResult(start, end, cancelled)


def _without_dependencies(
    jobs: list[RefJob], total_cores: int, backfill: str, order: str, limits: Limits
) -> RefResult:
    """The same steps when no job has a dependency: the queue is simply the jobs
    submitted and not started (so long real logs replay in reasonable time)."""
    n = len(jobs)
    start = [-1] * n
    end = [-1] * n
    running: dict[int, int] = {}
    arrivals = sorted(range(n), key=lambda i: (jobs[i].submit, i))
    nxt = 0
    pending: list[int] = []
    now: float = jobs[arrivals[0]].submit if n else INF
    while now < INF:
        t = int(now)
        for j in sorted(i for i, e in running.items() if e <= t):
            del running[j]
            end[j] = t
        while nxt < n and jobs[arrivals[nxt]].submit <= t:
            pending.append(arrivals[nxt])
            nxt += 1
        queue = sorted(pending, key=lambda i: sort_key(jobs[i], order))
        free = total_cores - sum(jobs[j].cores for j in running)
        started = schedule_pass(jobs, queue, running, start, free, t, backfill, limits)
        for j in started:
            start[j] = t
            running[j] = t + min(jobs[j].run, jobs[j].walltime)
        if started:
            done = set(started)
            pending = [j for j in pending if j not in done]
        later = list(running.values())
        if nxt < n:
            later.append(jobs[arrivals[nxt]].submit)
        now = min(later, default=INF)
    return RefResult(start, end, [False] * n)


def dependency_status(
    jobs: list[RefJob], start: list[int], end: list[int], now: float
) -> list[tuple[str, float]]:
    """Per job, as of ``now``: ("started", start), ("cancelled", when),
    ("eligible", from when: possibly later than now), ("held", inf) while a
    parent has not ended, or ("future", submit) when not submitted yet.

    Computed from scratch from the start and end times recorded so far; a
    cancelled job's end is its cancellation (not ok), so cancellation spreads.
    """
    if not any(job.deps for job in jobs):  # no dependency anywhere: the plain states
        return [
            ("started", start[j])
            if start[j] >= 0
            else (("future", job.submit) if job.submit > now else ("eligible", job.submit))
            for j, job in enumerate(jobs)
        ]
    memo: dict[int, tuple[str, float]] = {}

    def outcome(j: int) -> tuple[float, bool] | None:
        """(end time, ok) of job ``j`` if it ended or was cancelled by ``now``."""
        if start[j] >= 0:
            return (end[j], jobs[j].ok) if end[j] >= 0 else None
        state, when = status_of(j)
        return (when, False) if state == "cancelled" else None

    def status_of(j: int) -> tuple[str, float]:
        if j in memo:
            return memo[j]
        job = jobs[j]
        if start[j] >= 0:
            memo[j] = ("started", start[j])
        elif job.submit > now:
            memo[j] = ("future", job.submit)
        else:
            ends = [(outcome(p), kind, delay) for p, kind, delay in job.deps]
            ruled_out = [
                o[0] for o, kind, _ in ends if o is not None and not dependency_met(kind, o[1])
            ]
            if ruled_out:
                memo[j] = ("cancelled", max(job.submit, min(ruled_out)))
            elif any(o is None for o, _, _ in ends):
                memo[j] = ("held", INF)
            else:
                ready = [o[0] + delay for o, _, delay in ends if o is not None]
                memo[j] = ("eligible", max([job.submit, *ready]))
        return memo[j]

    return [status_of(j) for j in range(len(jobs))]


def schedule_pass(
    jobs: list[RefJob],
    queue: list[int],
    running: dict[int, int],
    start: list[int],
    free: int,
    now: int,
    backfill: str,
    limits: Limits,
) -> list[int]:
    """Jobs to start now, in the order the pass starts them.

    A job that would exceed a limit of its user or group is passed over: it
    starts nothing, is never the head and gets no reservation.
    """
    req_end = {j: start[j] + jobs[j].walltime for j in running}
    started: list[int] = []

    def held_back(j: int) -> bool:
        ahead = [jobs[i] for i in queue[: queue.index(j)] if i not in started]
        return limits.beyond_queue(jobs[j], ahead) or limits.over(
            jobs[j], [jobs[r] for r in [*running, *started]]
        )

    if backfill == "conservative":
        return _conservative(jobs, queue, req_end, free, now, held_back, started)
    pos = 0
    head = None
    while pos < len(queue):
        j = queue[pos]
        pos += 1
        if held_back(j):
            continue
        if jobs[j].cores > free:
            head = j
            break
        started.append(j)
        free -= jobs[j].cores
    if head is None or backfill == "none":
        return started
    ends = dict(req_end)
    for j in started:
        ends[j] = now + jobs[j].walltime
    shadow, extra = shadow_time(jobs, ends, free, jobs[head].cores, now)
    for j in queue[pos:]:
        if jobs[j].cores > free or held_back(j):
            continue
        ends_in_time = now + jobs[j].walltime <= shadow
        if ends_in_time or jobs[j].cores <= extra:
            started.append(j)
            free -= jobs[j].cores
            if not ends_in_time:
                extra -= jobs[j].cores
    return started


def shadow_time(
    jobs: list[RefJob], req_end: dict[int, int], free: int, need: int, now: int
) -> tuple[float, int]:
    """(shadow time, extra cores) for a head job needing ``need`` cores."""
    if free >= need:
        return now, free - need
    avail = free
    for t in sorted(set(req_end.values())):
        avail += sum(jobs[j].cores for j, e in req_end.items() if e == t)
        if avail >= need:
            return max(t, now), avail - need
    return INF, 0


def _conservative(
    jobs: list[RefJob],
    queue: list[int],
    req_end: dict[int, int],
    free: int,
    now: int,
    held_back: Callable[[int], bool],
    started: list[int],
) -> list[int]:
    """Each queued job, in order, takes the first breakpoint where it fits for its walltime.

    The profile is two arrays: breakpoint times and the free cores from each
    breakpoint to the next (the last one lasts forever). A job fits at
    breakpoint k when neither breakpoint k nor any in [t_k, t_k + walltime)
    has fewer free cores than it needs (breakpoint k alone for a 0 s job); a
    start is always at a breakpoint (or now), and a job whose slot is now
    starts if its cores are free now.
    """
    ends = np.array(sorted(req_end.values()), dtype=np.int64)
    sizes = np.array([jobs[j].cores for j in sorted(req_end, key=req_end.get)], dtype=np.int64)
    times = np.unique(np.concatenate(([now], ends[ends > now])))
    # cores released by the running jobs whose requested end is <= each breakpoint
    released = np.concatenate(([0], np.cumsum(sizes)))[np.searchsorted(ends, times, "right")]
    avail = free + released
    for j in queue:
        if held_back(j):
            continue
        need, wall = jobs[j].cores, jobs[j].walltime
        short = np.concatenate(([0], np.cumsum(avail < need)))
        window_end = np.maximum(
            np.searchsorted(times, times + wall, side="left"), np.arange(1, len(times) + 1)
        )
        fits = short[window_end] - short[np.arange(len(times))] == 0
        if not fits.any():
            continue
        k = int(np.argmax(fits))
        s, e = int(times[k]), int(times[k]) + wall
        times, avail = _with_breakpoint(times, avail, e)  # s is one already
        b = int(np.searchsorted(times, e))
        avail[k:b] -= need
        if s == now and need <= free:
            # (a 0 s job started earlier in the pass holds its cores for the
            # instant: then the job keeps its slot and starts at the next pass)
            started.append(j)
            free -= need
    return started


def _with_breakpoint(times: np.ndarray, avail: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """The profile with a breakpoint at ``t`` (same free cores as the segment it splits)."""
    pos = int(np.searchsorted(times, t))
    if pos < len(times) and times[pos] == t:
        return times, avail
    times = np.concatenate((times[:pos], [t], times[pos:]))
    avail = np.concatenate((avail[:pos], avail[pos - 1 : pos], avail[pos:]))
    return times, avail


# ------------------------------------------------------------------ advance reservations
#
# A reservation holds some nodes over [start, end) for one owner (a user or a
# group). Inside that window, a job of the owner that ends (by its requested
# time) by the window's end runs on those nodes only; any other job may use a
# reserved node only if it ends (by its requested time) by the window's start.
# Which cores a job holds now matters (a node is reserved, not a count of
# cores), so this scheduler keeps nodes and places tasks first fit, one core
# per task, in node index order. While a window has not ended:
#
# * ``easy`` gives the head its earliest slot in the availability profile
#   (below) instead of the shadow time, and a later job starts now if it fits
#   now and its whole requested time fits in the profile at now (then takes
#   it); an owner's job inside its window starts whenever it fits now;
# * ``conservative`` gives each job in queue order its earliest slot in the
#   profile; it starts when that slot is now and it fits now (a 0 s job
#   started earlier in the pass holds its cores for the instant: the job
#   keeps its slot and starts at the next pass, at the same instant); an
#   owner's job inside its window starts whenever it fits now and takes no slot.
#
# The profile: cores free now, plus each running job's cores from its
# requested end on; less, over each window still open or to come (from
# max(start, now) to its end), what is free on its nodes now and what running
# jobs release there before the window ends (from their requested end).


@dataclass(frozen=True)
class Reservation:
    start: int
    end: int  # > start
    nodes: frozenset[int]
    owner: int  # a user index (``owner_kind`` "user") or a group index
    owner_kind: str = "user"


class _Profile:
    """Free cores over time: breakpoints ``times`` (increasing, the first is now)
    and the cores free from each one to the next (the last lasts forever)."""

    def __init__(self, now: int, free: int) -> None:
        self.times = [now]
        self.free = [free]

    def _split(self, t: int) -> int:
        """Index of the breakpoint at ``t`` (made if missing; t >= times[0])."""
        k = 0
        while k + 1 < len(self.times) and self.times[k + 1] <= t:
            k += 1
        if self.times[k] != t:
            self.times.insert(k + 1, t)
            self.free.insert(k + 1, self.free[k])
            k += 1
        return k

    def take(self, start: int, end: int, cores: int) -> None:
        """``cores`` fewer free over [start, end) (a negative amount gives back)."""
        if end <= start:
            return
        a, b = self._split(start), self._split(end)
        for k in range(a, b):
            self.free[k] -= cores

    def earliest(self, cores: int, wall: int) -> float:
        """First breakpoint from which ``cores`` are free for ``wall`` seconds."""
        for k, t in enumerate(self.times):
            if all(
                self.free[i] >= cores
                for i in range(k, len(self.times))
                if self.times[i] < t + wall or i == k
            ):
                return t
        return INF


class _Machine:
    """Nodes of one-core slots, the jobs placed on them, and the reservations."""

    def __init__(self, n_nodes: int, cores_per_node: int, reservations: list[Reservation]):
        self.free = [cores_per_node] * n_nodes
        self.held: dict[int, dict[int, int]] = {}  # job -> node -> cores
        self.reservations = reservations

    def window_of(self, job: RefJob, now: int) -> Reservation | None:
        """The first reservation whose window ``job`` runs in if it starts now."""
        for r in self.reservations:
            if r.start <= now < r.end and now + job.walltime <= r.end:
                mine = job.user if r.owner_kind == "user" else job.group
                if mine >= 0 and mine == r.owner:
                    return r
        return None

    def usable(self, job: RefJob, now: int) -> list[int]:
        """The nodes ``job`` may put tasks on if it starts now, in index order."""
        own = self.window_of(job, now)
        if own is not None:
            return sorted(own.nodes)
        blocked = {
            n
            for r in self.reservations
            if r.end > now and now + job.walltime > r.start
            for n in r.nodes
        }
        return [n for n in range(len(self.free)) if n not in blocked]

    def fits(self, job: RefJob, now: int) -> bool:
        return sum(self.free[n] for n in self.usable(job, now)) >= job.cores

    def place(self, j: int, job: RefJob, now: int) -> None:
        """First fit over the usable nodes (the caller checked ``fits``)."""
        rem, held = job.cores, {}
        for n in self.usable(job, now):
            k = min(rem, self.free[n])
            if k:
                held[n] = k
                self.free[n] -= k
                rem -= k
        self.held[j] = held

    def release(self, j: int) -> None:
        for n, k in self.held.pop(j).items():
            self.free[n] += k

    def profile(self, jobs: list[RefJob], req_end: dict[int, int], now: int) -> _Profile:
        prof = _Profile(now, sum(self.free))
        for j, e in req_end.items():
            prof.take(max(e, now), INF_TIME, -jobs[j].cores)
        for r in self.reservations:
            if r.end <= now:
                continue
            opens = max(r.start, now)
            prof.take(opens, r.end, sum(self.free[n] for n in r.nodes))
            for j, e in req_end.items():
                if e < r.end:
                    there = sum(k for n, k in self.held[j].items() if n in r.nodes)
                    prof.take(max(e, opens), r.end, there)
        return prof


INF_TIME = 2**62  # "forever" as a breakpoint time


def simulate_reserved(
    jobs: list[RefJob],
    n_nodes: int,
    cores_per_node: int,
    backfill: str,
    reservations: list[Reservation],
    order: str = "fcfs",
) -> tuple[list[int], list[int]]:
    """Start and end of every job with advance reservations (no dependencies,
    no limits). Steps at every submit, completion, and window start and end."""
    n = len(jobs)
    start = [-1] * n
    end = [-1] * n
    machine = _Machine(n_nodes, cores_per_node, reservations)
    running: dict[int, int] = {}  # job -> actual end
    bounds = sorted({t for r in reservations for t in (r.start, r.end)})
    pending: list[int] = []
    arrivals = sorted(range(n), key=lambda i: (jobs[i].submit, i))
    nxt = 0
    now: float = jobs[arrivals[0]].submit if n else INF
    while now < INF:
        t = int(now)
        for j in sorted(i for i, e in running.items() if e <= t):
            del running[j]
            machine.release(j)
            end[j] = t
        while nxt < n and jobs[arrivals[nxt]].submit <= t:
            pending.append(arrivals[nxt])
            nxt += 1
        queue = sorted(pending, key=lambda i: sort_key(jobs[i], order))
        req_end = {j: start[j] + jobs[j].walltime for j in running}
        started = _reserved_pass(jobs, queue, req_end, machine, t, backfill)
        for j in started:
            start[j] = t
            running[j] = t + min(jobs[j].run, jobs[j].walltime)
        pending = [j for j in pending if start[j] < 0]
        later = [*running.values(), *(b for b in bounds if b > t)]
        if nxt < n:
            later.append(jobs[arrivals[nxt]].submit)
        now = min(later, default=INF)
    return start, end


def _reserved_pass(
    jobs: list[RefJob],
    queue: list[int],
    req_end: dict[int, int],
    machine: _Machine,
    now: int,
    backfill: str,
) -> list[int]:
    """One pass with reservations; starts are placed on ``machine``."""
    started: list[int] = []
    live = any(r.end > now for r in machine.reservations)

    def start(j: int) -> None:
        machine.place(j, jobs[j], now)
        req_end[j] = now + jobs[j].walltime
        started.append(j)

    if backfill == "conservative":
        prof = machine.profile(jobs, req_end, now)
        for j in queue:
            job = jobs[j]
            if machine.window_of(job, now) is not None:
                if machine.fits(job, now):
                    start(j)
                continue
            s = prof.earliest(job.cores, job.walltime)
            if s == INF:
                continue
            if s == now and machine.fits(job, now):
                start(j)
            prof.take(int(s), int(s) + job.walltime, job.cores)
        return started
    pos, head = 0, None
    while pos < len(queue):
        j = queue[pos]
        pos += 1
        if not machine.fits(jobs[j], now):
            head = j
            break
        start(j)
    if head is None or backfill == "none":
        return started
    if not live:  # no window left: the shadow time and the extra cores
        free = sum(machine.free)
        for j in _easy_backfill(jobs, queue[pos:], req_end, free, jobs[head].cores, now):
            start(j)
        return started
    prof = machine.profile(jobs, req_end, now)
    if machine.window_of(jobs[head], now) is None:
        s = prof.earliest(jobs[head].cores, jobs[head].walltime)
        if s < INF:
            prof.take(int(s), int(s) + jobs[head].walltime, jobs[head].cores)
    for j in queue[pos:]:
        job = jobs[j]
        if machine.window_of(job, now) is not None:
            if machine.fits(job, now):
                start(j)
        elif machine.fits(job, now) and prof.earliest(job.cores, job.walltime) == now:
            start(j)
            prof.take(now, now + job.walltime, job.cores)
    return started


def _easy_backfill(
    jobs: list[RefJob], rest: list[int], req_end: dict[int, int], free: int, need: int, now: int
) -> list[int]:
    """The EASY rule for the jobs behind the head (``need``: its cores)."""
    shadow, extra = shadow_time(jobs, req_end, free, need, now)
    out = []
    for j in rest:
        if jobs[j].cores > free:
            continue
        ends_in_time = now + jobs[j].walltime <= shadow
        if ends_in_time or jobs[j].cores <= extra:
            out.append(j)
            free -= jobs[j].cores
            if not ends_in_time:
                extra -= jobs[j].cores
    return out
