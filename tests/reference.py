"""A slow, obvious scheduler that the compiled kernel must agree with.

Pure Python, a pool of cores, no incremental tricks: every pass looks at the
whole queue and rebuilds everything from scratch. It implements the
semantics of ARCHITECTURE.md literally:

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

Jobs are killed at their requested time, so one runs min(run, walltime).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

INF = math.inf


@dataclass
class RefJob:
    job_id: int
    submit: int
    cores: int
    walltime: int  # >= 1
    run: int  # recorded; the job runs min(run, walltime)
    priority: float = 0.0
    user: int = -1  # -1: no user, no limit applies


@dataclass
class Limits:
    """Per-user caps (0: none): running jobs, and cores held."""

    jobs: int = 0
    cores: int = 0

    def over(self, job: RefJob, running: list[RefJob]) -> bool:
        """Would starting ``job`` exceed its user's cap, given the jobs running?"""
        if job.user < 0:
            return False
        mine = [r for r in running if r.user == job.user]
        if self.jobs and len(mine) >= self.jobs:
            return True
        return bool(self.cores and sum(r.cores for r in mine) + job.cores > self.cores)


def sort_key(job: RefJob, order: str) -> tuple[float, int, int]:
    if order == "fcfs":
        return (0.0, job.submit, job.job_id)
    if order == "sjf":
        return (float(job.walltime), job.submit, job.job_id)
    return (-job.priority, job.submit, job.job_id)


def simulate(
    jobs: list[RefJob],
    total_cores: int,
    backfill: str,
    order: str = "fcfs",
    limits: Limits | None = None,
) -> tuple[list[int], list[int]]:
    """Start and end time of every job (same order as ``jobs``)."""
    n = len(jobs)
    start = [-1] * n
    end = [-1] * n
    arrivals = sorted(range(n), key=lambda i: (jobs[i].submit, i))
    next_arrival = 0
    pending: list[int] = []
    running: dict[int, int] = {}  # job -> actual end
    free = total_cores
    while next_arrival < n or running:
        t_arr = jobs[arrivals[next_arrival]].submit if next_arrival < n else INF
        t_end = min(running.values()) if running else INF
        now = int(min(t_arr, t_end))
        for j in sorted(i for i, e in running.items() if e <= now):
            del running[j]
            end[j] = now
            free += jobs[j].cores
        while next_arrival < n and jobs[arrivals[next_arrival]].submit <= now:
            pending.append(arrivals[next_arrival])
            next_arrival += 1
        pending.sort(key=lambda i: sort_key(jobs[i], order))
        started = schedule_pass(
            jobs, pending, running, start, free, now, backfill, total_cores, limits or Limits()
        )
        for j in started:
            pending.remove(j)
            start[j] = now
            running[j] = now + min(jobs[j].run, jobs[j].walltime)
            free -= jobs[j].cores
    return start, end


def schedule_pass(
    jobs: list[RefJob],
    queue: list[int],
    running: dict[int, int],
    start: list[int],
    free: int,
    now: int,
    backfill: str,
    total_cores: int,
    limits: Limits,
) -> list[int]:
    """Jobs to start now, in the order the pass starts them.

    A job that would exceed its user's limit is passed over: it starts
    nothing, is never the head and gets no reservation.
    """
    req_end = {j: start[j] + jobs[j].walltime for j in running}

    def held_back(j: int) -> bool:
        return limits.over(jobs[j], [jobs[r] for r in [*running, *started]])

    if backfill == "conservative":
        started: list[int] = []
        return _conservative(jobs, queue, req_end, free, now, held_back, started)
    started = []
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
    breakpoint k when no breakpoint in [t_k, t_k + walltime) has fewer free
    cores than it needs; a start is always at a breakpoint (or now).
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
        window_end = np.searchsorted(times, times + wall, side="left")
        fits = short[window_end] - short[np.arange(len(times))] == 0
        if not fits.any():
            continue
        k = int(np.argmax(fits))
        s, e = int(times[k]), int(times[k]) + wall
        times, avail = _with_breakpoint(times, avail, e)  # s is one already
        b = int(np.searchsorted(times, e))
        avail[k:b] -= need
        if s == now:
            started.append(j)
    return started


def _with_breakpoint(times: np.ndarray, avail: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """The profile with a breakpoint at ``t`` (same free cores as the segment it splits)."""
    pos = int(np.searchsorted(times, t))
    if pos < len(times) and times[pos] == t:
        return times, avail
    times = np.concatenate((times[:pos], [t], times[pos:]))
    avail = np.concatenate((avail[:pos], avail[pos - 1 : pos], avail[pos:]))
    return times, avail
