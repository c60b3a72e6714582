"""A plain-Python FCFS + EASY replay of an SWF log: the yardstick for the whole-process figures.

Standard library only (no numpy, no htcsim), written the way one would
write a quick EASY simulator, so that ``htcsim simulate`` is measured
against what a person could run instead: Python's start, reading the gzip'd
log line by line, a replay with a heap of completions, a summary line.
``benchmarks/test_whole_process.py`` times it next to htcsim in the same run
and checks that it gives the same start for every job.

It applies the log conventions htcsim applies (docs/architecture.md, "SWF
conventions") and the kernel's semantics on a pool of processors: the
events of one instant are applied together, completions first, then
arrivals, then one pass; the pass starts jobs in FCFS order until the first
that does not fit (the head), which gets a reservation at the shadow time
computed from requested ends; a later job starts if it fits and ends by the
shadow time or uses no more than the extra processors. A job that ends the
instant it starts ends in a further step at that instant. Jobs run
min(run, requested time).

    python benchmarks/reference_easy.py LOG [--starts FILE]
"""

from __future__ import annotations

import bisect
import gzip
import heapq
import sys
import time


def read_jobs(path: str) -> tuple[int, list[tuple[int, int, int, int, int]]]:
    """(machine processors, jobs as (submit, job id, processors, walltime, run))."""
    opener = gzip.open if path.endswith(".gz") else open
    max_procs = 0
    jobs = []
    with opener(path, "rt", encoding="latin-1") as lines:
        for line in lines:
            if line.startswith(";"):
                key, _, value = line[1:].partition(":")
                if key.strip() == "MaxProcs" and value.split():
                    max_procs = int(value.split()[0])
                continue
            f = line.split()
            if len(f) != 18:
                continue
            run, alloc, req, wall = int(f[3]), int(float(f[4])), int(f[7]), int(f[8])
            size = req if req > 0 else alloc
            wall = wall if wall > 0 else run
            if run < 0 or size <= 0 or size > max_procs:
                continue
            jobs.append((int(f[1]), int(f[0]), size, wall, min(run, wall)))
    jobs.sort()
    return max_procs, jobs


def replay(total: int, jobs: list[tuple[int, int, int, int, int]]) -> list[int]:
    """Start time of every job (in ``jobs`` order) under FCFS + EASY.

    A step with arrivals only, after a pass that left the head waiting, looks
    at the arrivals alone: nothing ended, so the free processors, the shadow
    time and the extra processors are what the last pass left, and the jobs
    it passed over still do not fit (the kernel does the same).
    """
    n = len(jobs)
    start = [-1] * n
    done: list[tuple[int, int]] = []  # (actual end, job)
    running: list[tuple[int, int]] = []  # (requested end, job), sorted
    queue: list[int] = []
    free = total
    nxt = 0
    now = jobs[0][0] if n else 0
    waiting = False  # the last pass left a head waiting, with ``shadow`` and ``extra``
    shadow: float = 0.0
    extra = 0
    while True:
        ended = False
        while done and done[0][0] <= now:
            j = heapq.heappop(done)[1]
            free += jobs[j][2]
            del running[bisect.bisect_left(running, (start[j] + jobs[j][3], j))]
            ended = True
        seen = len(queue)
        while nxt < n and jobs[nxt][0] <= now:
            queue.append(nxt)
            nxt += 1
        if waiting and not ended:
            free, extra = _backfill(
                jobs, queue, seen, running, start, done, free, extra, shadow, now
            )
        else:
            started = 0
            while started < len(queue) and jobs[queue[started]][2] <= free:
                j = queue[started]
                free -= jobs[j][2]
                start[j] = now
                bisect.insort(running, (now + jobs[j][3], j))
                heapq.heappush(done, (now + jobs[j][4], j))
                started += 1
            del queue[:started]
            waiting = bool(queue)
            if waiting:
                shadow, extra = _shadow(jobs, running, free, jobs[queue[0]][2], now)
                free, extra = _backfill(
                    jobs, queue, 1, running, start, done, free, extra, shadow, now
                )
        if nxt < n:
            now = jobs[nxt][0] if not done or jobs[nxt][0] < done[0][0] else done[0][0]
        elif done:
            now = done[0][0]
        else:
            return start


def _shadow(
    jobs: list[tuple[int, int, int, int, int]],
    running: list[tuple[int, int]],
    free: int,
    need: int,
    now: int,
) -> tuple[float, int]:
    """(shadow time, extra processors) of a head needing ``need``: when the
    running jobs' requested ends free enough, and what is left over then."""
    avail = free
    for k, (end, j) in enumerate(running):
        avail += jobs[j][2]
        if avail >= need and (k + 1 == len(running) or running[k + 1][0] != end):
            return max(end, now), avail - need
    return float("inf"), 0  # (never: the head can never run, so nothing delays it)


def _backfill(
    jobs: list[tuple[int, int, int, int, int]],
    queue: list[int],
    first: int,
    running: list[tuple[int, int]],
    start: list[int],
    done: list[tuple[int, int]],
    free: int,
    extra: int,
    shadow: float,
    now: int,
) -> tuple[int, int]:
    """EASY: start the jobs from ``queue[first]`` on that do not delay the head;
    the processors and extra processors left."""
    kept = queue[:first]
    for k in range(first, len(queue)):
        if free == 0:  # nothing more can start
            kept.extend(queue[k:])
            break
        j = queue[k]
        size, wall = jobs[j][2], jobs[j][3]
        in_time = now + wall <= shadow
        if size <= free and (in_time or size <= extra):
            free -= size
            if not in_time:
                extra -= size
            start[j] = now
            bisect.insort(running, (now + wall, j))
            heapq.heappush(done, (now + jobs[j][4], j))
        else:
            kept.append(j)
    queue[:] = kept
    return free, extra


def main(argv: list[str]) -> None:
    began = time.perf_counter()
    total, jobs = read_jobs(argv[0])
    start = replay(total, jobs)
    mean_wait_h = (
        sum(s - job[0] for s, job in zip(start, jobs, strict=True)) / max(len(jobs), 1) / 3600
    )
    took = time.perf_counter() - began
    print(f"{len(jobs):,} jobs on {total} processors: mean wait {mean_wait_h:.2f} h ({took:.2f} s)")
    if len(argv) == 3 and argv[1] == "--starts":
        with open(argv[2], "w") as out:
            out.writelines(f"{job[1]} {s}\n" for job, s in zip(jobs, start, strict=True))


if __name__ == "__main__":
    main(sys.argv[1:])
