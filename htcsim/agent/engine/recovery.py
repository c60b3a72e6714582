"""Recovery: the kernel rebuilt from the store, reconciled with the processes
that still run.

At the agent's start, a job the store says is running is re-adopted where its
process still runs, ends with the exit the executor recorded while the agent
was down, or, lost (no process of it runs and its status is unknown: it never
started, or a restarted shepherd killed it or found it gone), is requeued or
ends ``node_fail`` as the policy's ``on_node_failure`` says: never ``failed``,
which is a job's own fault. The node inventory rebuilds the same way when
Dask workers come or go, the running jobs of the lost nodes lost, and so does
a running job whose process the executor lost (``_requeue_lost``).

It is separate because it is the one path on which the engine's state is
derived from the store rather than changed by a command: a fresh kernel, the
store's unfinished jobs admitted again with their dependencies, running ones
adopted, and a ``restart`` op in the decision log so that a replay can do
the same.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from htcsim.agent.engine.admission import _edge_met, _never_cause
from htcsim.agent.engine.state import EngineState
from htcsim.agent.executors.base import JobExit, Recovered
from htcsim.agent.store.jobs import NewJob, StateChange
from htcsim.policy import policy_to_toml


class Recovery(EngineState):
    """The start's reconciliation and the rebuild of the kernel from the store."""

    def _recover(self) -> None:
        """Rebuild the kernel from the store; reconcile the jobs it says are running.

        A running job whose process still runs is re-adopted where it runs;
        one whose exit the executor recorded while the agent was down ends
        with that exit; one the executor reports lost (no process of it runs,
        its status unknown) is requeued or ended ``node_fail`` as the policy's
        ``on_node_failure`` says.
        """
        self._now_f = self.clock()
        running = [r["id"] for r in self.store.unfinished() if r["state"] == "running"]
        found = {r.job_id: r for r in self.executor.recover(running)}
        self._rebuild(found, "its process was gone when the agent restarted")
        # the executor may forget what it reported lost: the requeue is committed
        self._recorded_exits.extend(j for j, r in found.items() if r.status == "lost")

    def _requeue_lost(self) -> None:
        """Running jobs whose process the executor lost (``JobExit.lost``: a
        shepherd restart could not keep them) are requeued or end ``node_fail``
        by the policy, as the jobs of a failed node are; the others are adopted
        where they run. The kernel is rebuilt, as for a lost Dask worker."""
        lost, self._lost_runs = self._lost_runs, {}
        found = {
            job_id: Recovered(job_id, "running", run.pid, None)
            for job_id, run in self.running.items()
            if job_id not in lost
        }
        self.store.set_states(self._changes, now=self._now_f)  # the rebuild reads the store
        self._changes = []
        self._rebuild(found, "its process was lost", causes=lost)

    def _rebuild(
        self,
        found: dict[int, Recovered],
        lost_cause: str,
        causes: dict[int, str] | None = None,
    ) -> None:
        """A new kernel on ``self.node_specs`` holding every unfinished job of the
        store: those ``found`` running are adopted where they run (or end, if
        ``found`` says they exited), other running ones are lost (the cause:
        ``causes``, the executor's, else ``lost_cause``)."""
        now_f = self._now_f
        now = int(now_f)
        previous = self.running
        self.kernel = self._new_kernel(self.policy)
        self.slot_of, self.job_of, self.children, self.running = {}, [], {}, {}
        self.users, self.groups = {}, {}
        self.free_cores = [list(range(n.cores)) for n in self.node_specs]
        self.free_gpus = [list(n.devices) for n in self.node_specs]  # adopted jobs retake theirs
        self._log.append(
            (
                now,
                "restart",
                None,
                json.dumps(
                    {
                        "nodes": [[n.name, n.cores, n.mem_mib, n.gpus] for n in self.node_specs],
                        "policy": policy_to_toml(self.policy),
                    }
                    | ({"pool": self._pool_log} if self._pool_log is not None else {})
                ),
            )
        )
        self.store.set_meta(
            "nodes",
            json.dumps(
                [
                    {"name": n.name, "cores": n.cores, "mem_mib": n.mem_mib, "gpus": n.gpus}
                    for n in self.node_specs
                ]
            ),
        )
        rows = self.store.unfinished()
        running_rows = [r for r in rows if r["state"] == "running"]
        requeue = self.policy.on_node_failure == "requeue"
        exits: list[JobExit] = []
        for row in running_rows:
            rec = found.get(row["id"])
            node = self.node_index.get(row["node"] or "")
            if rec is not None and rec.status != "lost" and node is not None:
                continue
            retries_left = (
                self.policy.max_retries == 0 or int(row["requeues"]) < self.policy.max_retries
            )
            requeued = requeue and retries_left
            row["state"] = "pending" if requeued else "node_fail"
            cause = (causes or {}).get(row["id"]) or (rec.cause if rec is not None else "")
            cause = cause or lost_cause
            change = _lost_run(row["id"], int(row["requeues"]), requeued, cause, now_f)
            self._changes.append(change)
        rows = [r for r in rows if r["state"] != "node_fail"]
        ids = [r["id"] for r in rows]
        deps = self.store.all_dependencies(ids)
        by_child: dict[int, list[tuple[int, str, int]]] = {}
        for c, p, kind, d in deps:
            by_child.setdefault(c, []).append((p, kind, d))
        parent_states = self.store.states_of(sorted({p for _, p, _, _ in deps}))
        jobs = [_new_job(r, by_child.get(r["id"], ())) for r in rows]
        with self.store.batch(), self.kernel_lock:
            doomed: set[int] = set()
            if rows:
                specs = self._specs(jobs)
                doomed = self._admit(ids, jobs, specs, parent_states, now, submit=False)
            for row, job in zip(rows, jobs, strict=True):
                job_id = row["id"]
                slot = self.slot_of[job_id]
                if job_id in doomed and row["state"] != "running":
                    self._cancel_pending(
                        job_id, now, _never_met(by_child.get(job_id, ()), parent_states)
                    )
                    continue
                rec = found.get(job_id)
                if row["state"] == "running" and rec is not None:
                    node = self.node_index[row["node"]]
                    start = int(row["start_time"])
                    self.kernel.adopt(slot, start, np.array([node]), np.array([1]))
                    self._log.append(
                        (now, "adopt", job_id, json.dumps({"node": node, "start": start}))
                    )
                    start_f = float(row["start_time"])
                    run = self._place(job_id, slot, node, start_f, job, row["gpu_ids"])
                    run.pid = rec.pid
                    before = previous.get(job_id)
                    if before is not None:  # a rebuild while it runs: keep what it was doing
                        run.phase, run.peak_rss_mib = before.phase, before.peak_rss_mib
                    self.running[job_id] = run
                    self._arm_timers(run)
                    if rec.status == "exited" and rec.exit is not None:
                        exits.append(rec.exit)
                    continue
                self.kernel.submit(slot, now)
                self._log.append((now, "submit", job_id, "{}"))
                if row["state"] == "held":
                    self.kernel.hold(slot)
                    self._log.append((now, "hold", job_id, "{}"))
            for exit in exits:
                self._apply_exit(exit, now)
            self.store.set_states(self._changes, now=now_f)
            self._changes = []
            self.store.log_decisions(self._log)
            self._log = []
        self._dirty = True


def _lost_run(job_id: int, requeues: int, requeued: bool, cause: str, now_f: float) -> StateChange:
    """The record of a running job whose node was lost: back in the queue
    (``requeued``, by the policy's ``[failures]``), or ended ``node_fail``."""
    if requeued:
        fields_ = {
            "requeues": requeues + 1,
            "start_time": None,
            "node": None,
            "reason": "",
            "gpu_ids": None,
        }
        return StateChange(job_id, "pending", f"requeued: {cause}", fields_)
    return StateChange(job_id, "node_fail", cause, {"end_time": now_f})


def _new_job(row: dict[str, Any], edges: Sequence[tuple[int, str, int]]) -> NewJob:
    """A stored job as the submission it was (to hand it to a new kernel)."""
    return NewJob(
        user=row["user"],
        command=row["command"],
        cwd=row["cwd"],
        cores=int(row["cores"]),
        walltime_s=int(row["walltime_s"]),
        mem_mib=int(row["mem_mib"]),
        gpus=int(row["gpus"]),
        name=row["name"],
        env=row["env"],
        qos=row["qos"],
        hold=row["state"] == "held",
        array_index=row["array_index"],
        depends_on=tuple(edges),
        group=row["grp"],
        signal=row["signal"],
        signal_before_s=int(row["signal_before_s"]),
    )


def _never_met(edges: Sequence[tuple[int, str, int]], parent_states: dict[int, str]) -> str:
    """The cause of a recovered job whose dependency on an ended job can never be met."""
    for p, kind, _ in edges:
        state = parent_states.get(p, "")
        if not _edge_met(kind, state):
            return _never_cause(p, kind, state or "before the agent restarted")
    return "a dependency can never be satisfied"
