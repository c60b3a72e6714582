"""Placement on real node tables, against a plain node-by-node walk.

The kernel finds candidate nodes through its free-capacity tree; whatever
the nodes (cores, memory, GPUs differing per node), the jobs (tasks of
several resources), the node states and the order of starts and ends, the
node each task goes to must be the one a walk over every node in index order
gives: first fit takes nodes in order, best fit the node left with the fewest
free cores, spread the node with the most free cores, ties to the lowest
index (cons_tres: Slurm's rule, ``cons_tres_place``); and a job fits now
exactly when that walk can place all its tasks.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htcsim.kernel import JOB_SPEC_DTYPE, JobState, Kernel, NodeState
from htcsim.policy import Policy


def walk_fits(free: np.ndarray, up: np.ndarray, per: np.ndarray, n_tasks: int) -> bool:
    return sum(tasks_on(free[n], per, n_tasks) for n in range(len(free)) if up[n]) >= n_tasks


def tasks_on(free: np.ndarray, per: np.ndarray, most: int) -> int:
    k = most
    for r in range(len(per)):
        if per[r] > 0:
            k = min(k, int(free[r] // per[r]))
    return max(k, 0)


def walk_place(
    free: np.ndarray, up: np.ndarray, per: np.ndarray, n_tasks: int, placement: str
) -> list[tuple[int, int]]:
    """(node, tasks) in the order the walk takes them; ``free`` is updated."""
    if placement == "cons_tres":
        return cons_tres_place(free, up, per, n_tasks)
    taken: list[tuple[int, int]] = []
    rem = n_tasks
    while rem > 0:
        best, best_score, best_k = -1, 0, 0
        for n in range(len(free)):
            k = tasks_on(free[n], per, rem) if up[n] else 0
            if k <= 0:
                continue
            if placement == "first_fit":
                best, best_k = n, k
                break
            if placement == "best_fit":
                score = -(int(free[n][0]) - k * int(per[0]))
            else:
                score = int(free[n][0])
            if best < 0 or score > best_score:
                best, best_score, best_k = n, score, k
        assert best >= 0, "the walk ran out of nodes for a job that fit"
        free[best] -= best_k * per
        taken.append((best, best_k))
        rem -= best_k
    return taken


def cons_tres_place(
    free: np.ndarray, up: np.ndarray, per: np.ndarray, n_tasks: int
) -> list[tuple[int, int]]:
    """Slurm's cons_tres as its source reads (equal weights, no topology):
    split the nodes that can take a task into runs of consecutive ones; take
    the first run that holds the rest with the fewest tasks' room (or, if none
    holds it, the first with the most room); in it, the node with the fewest
    free cores that holds the rest (the first of equal ones), else its nodes
    in order; repeat while tasks are left."""
    taken: list[tuple[int, int]] = []
    rem = n_tasks
    while rem > 0:
        runs: list[list[int]] = []
        for n in range(len(free)):
            if up[n] and tasks_on(free[n], per, 1) > 0:
                if runs and runs[-1][-1] == n - 1:
                    runs[-1].append(n)
                else:
                    runs.append([n])
        assert runs, "the walk ran out of nodes for a job that fit"
        room = [sum(tasks_on(free[n], per, 10**9) for n in run) for run in runs]
        holding = [k for k in range(len(runs)) if room[k] >= rem]
        if holding:
            pick = min(holding, key=lambda k: (room[k], k))
        else:
            pick = max(range(len(runs)), key=lambda k: (room[k], -k))
        whole = [n for n in runs[pick] if tasks_on(free[n], per, rem) >= rem]
        if whole:
            n = min(whole, key=lambda m: (int(free[m][0]), m))
            free[n] -= rem * per
            taken.append((n, rem))
            return taken
        for n in runs[pick]:
            k = tasks_on(free[n], per, rem)
            if k > 0 and rem > 0:
                free[n] -= k * per
                taken.append((n, k))
                rem -= k
    return taken


node_rows = st.tuples(st.integers(1, 8), st.integers(0, 6), st.integers(0, 2))
job_rows = st.tuples(
    st.integers(1, 4), st.integers(0, 3), st.integers(0, 1), st.integers(1, 6)
)  # cores, mem, gpus per task; tasks
events = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), job_rows),
        st.tuples(st.just("end"), st.integers(0, 50)),
        st.tuples(st.just("down"), st.integers(0, 11)),
        st.tuples(st.just("up"), st.integers(0, 11)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(node_rows, min_size=1, max_size=12),
    events,
    st.sampled_from(["first_fit", "best_fit", "spread", "cons_tres"]),
)
def test_placement_is_the_node_by_node_walk(
    nodes: list[tuple[int, int, int]],
    script: list[tuple[str, object]],
    placement: str,
) -> None:
    capacity = np.array([(c, m, g, 0) for c, m, g in nodes], dtype=np.int64)
    kernel = Kernel(capacity, Policy(backfill="none", placement=placement))  # type: ignore[arg-type]
    free = capacity.copy()
    up = np.ones(len(nodes), dtype=bool)
    per_of: dict[int, np.ndarray] = {}
    tasks_of: dict[int, int] = {}
    held: dict[int, list[tuple[int, int]]] = {}
    queue: list[int] = []
    for now, (kind, arg) in enumerate(script):
        if kind == "submit":
            cores, mem, gpus, n_tasks = arg  # type: ignore[misc]
            per = np.array([cores, mem, gpus, 0], dtype=np.int64)
            if (per > capacity.max(axis=0)).any() or (per * n_tasks > capacity.sum(axis=0)).any():
                continue  # refused at the boundary: not a placement question
            spec = np.zeros(1, dtype=JOB_SPEC_DTYPE)
            spec["job_id"] = kernel.n_jobs + 1
            spec["submit_s"] = now
            spec["walltime_s"] = 100
            spec["n_tasks"] = n_tasks
            spec["per_task"][0] = per
            spec["user_idx"] = spec["group_idx"] = spec["qos_idx"] = -1
            slot = kernel.add_jobs(spec)
            per_of[slot] = per
            tasks_of[slot] = n_tasks
            kernel.submit(slot, now)
            queue.append(slot)
        elif kind == "end" and held:
            slot = sorted(held)[int(arg) % len(held)]  # type: ignore[call-overload]
            kernel.finish(slot, now)
            for n, k in held.pop(slot):
                free[n] += k * per_of[slot]
        elif kind in ("down", "up"):
            n = int(arg) % len(nodes)  # type: ignore[call-overload]
            if kind == "down" and up[n] and not any(n == m for a in held.values() for m, _ in a):
                kernel.set_node_state(n, NodeState.DOWN, now)
                up[n] = False
            elif kind == "up" and not up[n]:
                kernel.set_node_state(n, NodeState.UP, now)
                up[n] = True
        kernel.schedule(now)
        started = [int(s) for s in kernel.started_jobs()]
        # strict order: the queue's head jobs start while they fit, the first misfit stops it
        expected_started = []
        for slot in queue:
            if not walk_fits(free, up, per_of[slot], tasks_of[slot]):
                break
            taken = walk_place(free, up, per_of[slot], tasks_of[slot], placement)
            expected_started.append(slot)
            held[slot] = taken
        assert started == expected_started
        for slot in started:
            got_nodes, got_tasks = kernel.job_allocation(slot)
            assert list(zip(got_nodes.tolist(), got_tasks.tolist(), strict=True)) == held[slot]
            assert kernel.state_of(slot) == JobState.RUNNING
            queue.remove(slot)
        np.testing.assert_array_equal(kernel.free_per_node(), free)
