"""Shadow mode: a candidate policy run on the live agent's events, without acting.

Why a lagging twin: an operator wants to know what a tuned policy would have
done on today's traffic before switching to it. The twin is an exact
discrete-event simulation of the live workload under the candidate policy,
fed by the agent's decision log: jobs arrive, are held, released and
cancelled when they were live; nodes come, go, drain and fail when they did
live; a job the twin starts at s runs for its *real* runtime r (live finish
minus live start) and ends at s + r. The twin makes the simulator's kernel
calls in the simulator's order (at one instant: its own job ends, then the
log's events, then a pass), and it passes when the simulator would: at its
own events and wakeups (a pass the agent logged is the twin's too when
something changed for the twin before it). So with the active policy as
candidate it repeats the agent's decisions exactly (an end that falls on
the agent's own finish is applied where the log has it), and with another
policy it gives what ``htcsim.sim.simulate`` gives for the same event
sequence (without the policy's ``[slurm_compat]`` timing, which only the
simulator's replay applies).

A runtime is known only once the job ended live, so the twin runs ahead of
what it knows only up to a horizon: it never simulates the instant at which
one of its running jobs might end (twin start plus what is known of the
runtime so far: the live run's elapsed time, or nothing if it has not
started live), nor an instant the log may still get rows for. Everything it
decided before the horizon is final; it never goes back in time.

Worked example: one 1-core node; jobs A (walltime 60 s, runs 10 s), B (30 s,
runs 5 s), C (10 s, runs 2 s) submitted at t=100; live order ``fcfs``,
candidate ``sjf``. Live: A 100-110, B 110-115, C 115-117. The twin starts C
at 100, but C has not run live: its runtime could be 0, so the twin waits at
100 until C ends live at 117 (r = 2). It then ends C at 102, starts B (r = 5,
known since 115) until 107, then A (r = 10) from 107. Waits: live A 0, B 10,
C 15; twin C 0, B 2, A 7.

What the twin does not model: the candidate's own autoscaler (node
availability is the live one) and runtimes on other nodes (a job runs as
long as it did live). A job cancelled live ends at the cancel time in the
twin too; after a node failure a job's runtime is that of its final live run
(at least as long as any run the failure cut short).
"""

from __future__ import annotations

import heapq
import tomllib
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

import numpy as np

from htcsim.agent.shadow.log import CANCEL, FINISH, OPEN, RESTART, LiveRuns, ShadowJob
from htcsim.agent.shadow.report import Tally
from htcsim.kernel import JOB_SPEC_DTYPE, JobState, Kernel, NodeState
from htcsim.policy import Policy, policy_from_mapping

Decision = tuple[int, int, str, int | None, dict[str, Any]]
"""(seq, kernel time, op, job id, data): a row of ``AgentStore.decisions``."""
Row = list[Any]
"""A buffered row: [effective time, seq, time, op, job id, data]."""

_NONE, _ROW, _HEAP, _UNKNOWN = 0, 1, 2, 3
"""How the twin's run of a job ends: (not running); at a row of the log (the
live run it mirrors ends there, or a cancel, a node failure or a restart);
at a known time (its own event, in the heap); not known yet (it bounds the
horizon)."""
_PAST = -(1 << 62)
_ENDED = (JobState["ENDED"], JobState["CANCELLED"])


class LateRowError(RuntimeError):
    """A log row arrived for a time the twin has already simulated (the agent's
    turn took longer than the reader's margin): rebuild the twin."""


class ShadowTwin:
    """The candidate policy's kernel, fed the decision log by ``feed`` and run
    forward by ``advance``; ``horizon_s`` is the last instant it has decided."""

    def __init__(self, candidate: Policy) -> None:
        self.candidate = candidate
        self.active_label = ""  # the live policy's, from the log
        self.rows = 0
        self.horizon_s: int | None = None
        self.live = LiveRuns()
        self.tally = Tally()
        self._kernel: Kernel | None = None
        self._nodes: list[str] = []  # the twin kernel's node names
        self._qos_map: list[int] = []  # the active policy's qos index -> the candidate's
        self._by_slot: list[ShadowJob] = []
        self._buffer: deque[Row] = deque()
        self._latest = _PAST
        self._now = _PAST  # the instant being (or last) simulated
        self._done = _PAST  # the last instant simulated to the end
        self._seq_done = 0  # the last row applied
        self._heap: list[tuple[int, int, int]] = []  # (end time, slot, token)
        self._unknown: set[int] = set()  # ids of the jobs whose twin run ends unknown
        self._floor = _PAST
        self._limit: int | None = None  # the unknown ends' bound (None: recompute)
        self._stale = False  # a run left the unknown ones: _limit may be too low
        self._changed = False  # something changed for the twin since its last pass
        self._tentative: deque[ShadowJob] = deque()  # first starts not yet final
        self._handlers: dict[str, Callable[[int, ShadowJob | None, Row], None]] = {
            name.removeprefix("_op_"): getattr(self, name)
            for name in dir(self)
            if name.startswith("_op_")
        }

    # ------------------------------------------------------------------ input

    @property
    def latest_s(self) -> int:
        """The latest time the log has recorded: rows still to come are no earlier."""
        return self._latest

    def feed(self, rows: Iterable[Decision]) -> None:
        """Take new log rows (in seq order): learn the live facts they tell at once,
        keep the rows for ``advance``. LateRowError if one is for a simulated time."""
        new: list[Row] = [[t, seq, t, op, job, data] for seq, t, op, job, data in rows]
        if not new:
            return
        # a row logged with a later clock than the rows after it (accounts) belongs
        # with them: effective times never decrease
        for k in range(len(new) - 2, -1, -1):
            new[k][0] = min(new[k][0], new[k + 1][0])
        first = new[0][0]
        for old in reversed(self._buffer):
            if old[0] <= first:
                break
            old[0] = first
        if first <= self._done:
            raise LateRowError(
                f"decision-log row {new[0][1]} is for t={first}; the twin is at {self._done}"
            )
        live, tally = self.live, self.tally
        for row in new:
            _, seq, t, op, job_id, data = row
            first_start = op == "start" and live.job(job_id).live_start < 0
            for job in live.learn(seq, t, op, job_id, data):
                self._plan(job)
                if op == "adopt" and job.adopted:
                    tally.adopted(job)
            if first_start:
                tally.live_started(live.jobs[job_id])
            self._latest = max(self._latest, t)
        self._buffer.extend(new)
        self.rows += len(new)

    # ------------------------------------------------------------------ how a twin run ends

    def _plan(self, job: ShadowJob) -> None:
        """Decide how the twin's current run of ``job`` ends, from what is known."""
        if job.run_start < 0:
            return
        plan, end = self._end_of(job)
        if plan == job.plan and plan != _HEAP:
            return
        if job.plan == _UNKNOWN:
            self._unknown.discard(job.job_id)
            self._stale = True
        job.plan = plan
        job.token += 1
        if plan == _HEAP:
            heapq.heappush(self._heap, (max(end, self._now), job.slot, job.token))
        elif plan == _UNKNOWN:
            self._unknown.add(job.job_id)
            if self._limit is not None:
                self._limit = min(self._limit, self._bound(job))

    def _end_of(self, job: ShadowJob) -> tuple[int, int]:
        start = job.run_start
        mirror = next((r for r in reversed(job.runs) if r.start == start), None)
        if mirror is not None:
            if mirror.how == OPEN:
                return _UNKNOWN, 0
            row_ahead = mirror.end_seq > self._seq_done
            if mirror.how in (FINISH, CANCEL):
                # the live run it mirrors ends at a row still to apply: end it there,
                # so that the calls come in the agent's order
                return (_ROW, 0) if row_ahead else (_HEAP, mirror.end)
            if row_ahead and (mirror.how == RESTART or mirror.node == job.run_node):
                return _ROW, 0  # the same node failure (or restart) ends it
        if job.cancel_s >= 0:
            return _ROW, 0
        if job.final_s >= 0:
            return _HEAP, start + job.runtime()
        return _UNKNOWN, 0

    def _bound(self, job: ShadowJob) -> int:
        """The earliest time the twin's run of ``job``, end unknown, could end."""
        need = job.runtime_floor()
        run = self.live.open.get(job.job_id)
        if run is not None:
            need = max(need, self._floor - run.start)
        return job.run_start + need

    def _horizon_limit(self, exact: bool = False) -> int:
        """The first instant the twin may not simulate yet. A run whose end became
        known only raises it, so it is recomputed when it would stop the twin."""
        if self._limit is None or (exact and self._stale):
            jobs = self.live.jobs
            self._limit = min((self._bound(jobs[j]) for j in self._unknown), default=self._floor)
            self._stale = False
        return min(self._limit, self._floor)

    # ------------------------------------------------------------------ simulation

    def advance(self, floor: int) -> None:
        """Simulate every instant before ``floor`` (the log will get no row for an
        earlier time) that no unknown runtime holds back."""
        if floor > self._floor:
            self._floor = floor
            self._limit = None
        while True:
            t, wake = self._next_instant()
            if t is None or (t >= self._horizon_limit() and t >= self._horizon_limit(True)):
                break
            self._instant(t, wake)
        if self._kernel is None:
            return
        horizon = self._horizon_limit(exact=True) - 1
        if self.horizon_s is None or horizon > self.horizon_s:
            self.horizon_s = horizon
        while self._tentative and self._tentative[0].twin_start <= horizon:
            self.tally.twin_decided(self._tentative.popleft())

    def _next_instant(self) -> tuple[int | None, bool]:
        heap = self._heap
        while heap and self._by_slot[heap[0][1]].token != heap[0][2]:
            heapq.heappop(heap)
        t = heap[0][0] if heap else None
        if self._buffer and (t is None or self._buffer[0][0] < t):
            t = self._buffer[0][0]
        wake = int(self._kernel.next_wakeup()) if self._kernel is not None else -1
        if wake >= 0 and wake > self._done and (t is None or wake <= t):
            return wake, True
        return t, False

    def _instant(self, t: int, wake: bool) -> None:
        """Own job ends due at ``t``, then the log's rows at ``t`` in order (a
        logged pass is a pass of the twin's if something changed for the twin
        since its last one), then a pass if something changed after that: the
        twin passes when the simulator would, at its own events and wakeups."""
        self._now = t
        self._changed = self._changed or wake
        heap = self._heap
        while heap and heap[0][0] <= t:
            _, slot, token = heapq.heappop(heap)
            job = self._by_slot[slot]
            if job.token == token:
                self._end_run(job, t, job.ok)
        buffer = self._buffer
        while buffer and buffer[0][0] == t:
            row = buffer.popleft()
            handler = self._handlers.get(row[3])
            if handler is None:
                raise ValueError(f"decision log row {row[1]}: unknown op {row[3]!r}")
            handler(t, self.live.jobs.get(row[4]) if row[4] is not None else None, row)
            self._seq_done = row[1]
        if self._changed:
            self._pass(t)
        self._done = t

    def _need(self, op: str) -> Kernel:
        if self._kernel is None:
            raise ValueError(f"decision log: {op} before the agent's start (no restart row)")
        return self._kernel

    def _pass(self, t: int) -> None:
        kernel = self._need("pass")
        kernel.schedule(t)
        self._changed = False
        for slot in kernel.started_jobs().tolist():
            job = self._by_slot[slot]
            node = int(kernel.job_allocation(slot)[0][0])
            if job.twin_start < 0:
                job.twin_start, job.twin_node = t, self._nodes[node]
                self._tentative.append(job)
            self._begin_run(job, t, node)

    def _begin_run(self, job: ShadowJob, t: int, node: int) -> None:
        job.run_start, job.run_node, job.plan = t, node, _NONE
        self._plan(job)

    def _end_run(self, job: ShadowJob, t: int, ok: int) -> None:
        self._need("finish").finish(job.slot, t, ok)
        self._stop_run(job)
        self._changed = True

    def _stop_run(self, job: ShadowJob) -> None:
        if job.plan == _UNKNOWN:
            self._unknown.discard(job.job_id)
            self._stale = True
        job.run_start, job.plan = -1, _NONE
        job.token += 1

    def _cancel(self, job: ShadowJob, t: int) -> None:
        kernel = self._need("cancel")
        if kernel.state_of(job.slot) in _ENDED:
            return
        kernel.cancel(job.slot, t)
        self._changed = True
        if job.run_start >= 0:
            self._stop_run(job)

    # ------------------------------------------------------------------ the log's ops

    def _op_restart(self, t: int, job: ShadowJob | None, row: Row) -> None:
        """A new live kernel: so a new twin, on the same nodes in the same states."""
        data = row[5]
        capacity = np.array([[c, m, g, 0] for _, c, m, g in data["nodes"]], dtype=np.int64)
        self._kernel = kernel = Kernel(capacity, self.candidate)
        self._nodes = [str(n[0]) for n in data["nodes"]]
        states = data["pool"]["states"] if "pool" in data else []  # a cluster manager's slots
        for k, state in enumerate(states):
            if int(kernel.node_states()[k]) != int(state):
                kernel.set_node_state(k, NodeState(int(state)), t)
        self._set_active(data["policy"])
        for old in self._by_slot:
            old.slot, old.run_start, old.plan = -1, -1, _NONE
            old.token += 1
        self._by_slot = []
        self._heap = []
        self._unknown = set()
        self._limit = None
        self._changed = True

    def _set_active(self, policy_toml: str) -> None:
        """The active policy names the QoS of the jobs it admits; the candidate
        may list others, or the same in another order."""
        active = policy_from_mapping(tomllib.loads(policy_toml), source="decision log")
        mine = {q.name: k for k, q in enumerate(self.candidate.qos)}
        self._qos_map = [mine.get(q.name, -1) for q in active.qos]
        self.active_label = active.label

    def _op_policy(self, t: int, job: ShadowJob | None, row: Row) -> None:
        self._set_active(row[5]["toml"])  # the twin keeps its candidate

    def _op_accounts(self, t: int, job: ShadowJob | None, row: Row) -> None:
        self._need("accounts").set_account_names(row[5]["users"], row[5]["groups"])

    def _op_pass(self, t: int, job: ShadowJob | None, row: Row) -> None:
        if self._changed:  # (a live pass after events of the live policy only: none)
            self._pass(t)

    def _op_start(self, t: int, job: ShadowJob | None, row: Row) -> None:
        pass  # the active policy's decision; the twin makes its own

    def _op_add(self, t: int, job: ShadowJob | None, row: Row) -> None:
        """Add the job, and every job the rows read so far add after it: a job
        added early is only known, not submitted (the simulator adds them all
        first), and one call checks them all."""
        assert job is not None
        if job.slot >= 0:
            return  # added with an earlier one
        batch = [row]
        for later in self._buffer:
            if later[3] in ("restart", "policy"):  # a new kernel, or other QoS names
                break
            if later[3] == "add":
                batch.append(later)
        self._add(batch)

    def _add(self, rows: list[Row]) -> None:
        kernel = self._need("add")
        specs = np.zeros(len(rows), dtype=JOB_SPEC_DTYPE)
        qos_map = self._qos_map
        for k, row in enumerate(rows):
            data = row[5]
            qos = int(data["qos"])
            spec = specs[k]
            spec["job_id"] = row[4]
            spec["submit_s"] = row[2]
            spec["walltime_s"] = data["walltime_s"]
            spec["n_tasks"] = 1
            spec["per_task"][:3] = (data["cores"], data["mem_mib"], data["gpus"])
            spec["user_idx"], spec["group_idx"] = data["user"], data["group"]
            spec["qos_idx"] = qos_map[qos] if 0 <= qos < len(qos_map) else -1
        first = kernel.add_jobs(specs)
        for k, row in enumerate(rows):
            job = self.live.job(row[4])
            job.slot = first + k
            self._by_slot.append(job)

    def _op_deps(self, t: int, job: ShadowJob | None, row: Row) -> None:
        jobs = self.live.jobs
        child, parent, kind, delay = zip(*row[5], strict=True)
        self._need("deps").add_dependencies(
            np.array([jobs[c].slot for c in child]),
            np.array([jobs[p].slot for p in parent]),
            np.array(kind, dtype=np.int32),
            np.array(delay),
        )

    def _op_submit(self, t: int, job: ShadowJob | None, row: Row) -> None:
        assert job is not None
        self._need("submit").submit(job.slot, t)
        self._changed = True

    def _op_hold(self, t: int, job: ShadowJob | None, row: Row) -> None:
        assert job is not None
        kernel = self._need("hold")
        if kernel.state_of(job.slot) == JobState["PENDING"]:  # (not if the twin started it)
            kernel.hold(job.slot)
            self._changed = True

    def _op_release(self, t: int, job: ShadowJob | None, row: Row) -> None:
        assert job is not None
        with suppress(ValueError):  # not held in the twin: started, or waiting for a parent
            self._need("release").release(job.slot, t)
            self._changed = True

    def _op_cancel(self, t: int, job: ShadowJob | None, row: Row) -> None:
        assert job is not None
        self._cancel(job, t)

    def _op_finish(self, t: int, job: ShadowJob | None, row: Row) -> None:
        """A live run ended: the twin's run that mirrors it ends here too; a cancel
        ends the twin's job whatever it is doing."""
        assert job is not None
        data = row[5]
        cancelled = bool(data.get("cancelled"))
        if job.run_start >= 0 and (cancelled or job.run_start == data.get("run_start")):
            self._end_run(job, t, int(data["ok"]))
        elif cancelled:
            self._cancel(job, t)

    def _op_adopt(self, t: int, job: ShadowJob | None, row: Row) -> None:
        assert job is not None
        data = row[5]
        start, node = int(data["start"]), int(data["node"])
        self._need("adopt").adopt(job.slot, start, np.array([node]), np.array([1]))
        if job.twin_start < 0 and not job.adopted:
            self.tally.adopted(job)  # the twin never decided it
        self._begin_run(job, start, node)
        self._changed = True

    def _op_drain(self, t: int, job: ShadowJob | None, row: Row) -> None:
        self._need("drain").drain_node(int(row[5]["node"]), t)
        self._changed = True

    def _op_node(self, t: int, job: ShadowJob | None, row: Row) -> None:
        k, state = int(row[5]["node"]), NodeState(int(row[5]["state"]))
        kernel = self._need("node")
        if state == NodeState["OFF"] and self._busy(k):
            kernel.drain_node(k, t)  # off once the twin's own tasks there end
        else:
            kernel.set_node_state(k, state, t)
        self._changed = True

    def _busy(self, k: int) -> bool:
        kernel = self._need("node")
        return bool((kernel.free_per_node()[k] < kernel.capacity[k]).any())

    def _op_fail(self, t: int, job: ShadowJob | None, row: Row) -> None:
        for slot in self._need("fail").fail_node(int(row[5]["node"]), t).tolist():
            self._stop_run(self._by_slot[slot])  # requeued or ended, as the candidate says
        self._changed = True

    def _op_autoscale(self, t: int, job: ShadowJob | None, row: Row) -> None:
        """The live autoscaler's decision, as node availability (the twin runs no
        autoscaler of its own)."""
        kernel = self._need("autoscale")
        for k in row[5].get("booted", []):
            if int(kernel.node_states()[k]) == NodeState["OFF"]:
                kernel.set_node_state(k, NodeState["BOOTING"], t)
        for k in row[5].get("stopped", []):
            kernel.drain_node(k, t)  # at once if the twin has no task there
        # (no pass for it: the simulator's autoscaler decides after a pass, and
        # the next pass is at the next event)
