"""Decision logs as the live agent writes them, made without an agent.

Why: the shadow twin's tests and benchmark need logs of known workloads (a
thousand jobs, a policy) in seconds, and they need to know the answer. This
driver makes the agent's kernel calls, at the agent's times, in the order the
agent logs them (at each instant: the jobs that ended, the jobs submitted, one
pass and the jobs it started), and logs each one as ``AgentStore.log_decisions``
does. For one workload it starts the same jobs at the same times as
``htcsim.sim.simulate``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from htcsim.kernel import JOB_SPEC_DTYPE, Kernel, NodeState
from htcsim.model import JOB_DTYPE, Machine, Workload, empty_jobs
from htcsim.policy import Policy, policy_to_toml

Decision = tuple[int, int, str, int | None, dict[str, Any]]


def workload(
    submit_s: list[int],
    run_s: list[int],
    walltime_s: list[int],
    machine: Machine,
    *,
    users: list[int] | None = None,
    cores: list[int] | None = None,
) -> Workload:
    """A workload of one-task jobs numbered from 1, in submit order."""
    n = len(submit_s)
    jobs = empty_jobs(n)
    jobs["job_id"] = np.arange(1, n + 1)
    jobs["submit_s"] = submit_s
    jobs["run_s"] = run_s
    jobs["walltime_s"] = walltime_s
    jobs["n_tasks"] = 1
    jobs["cores_per_task"] = cores if cores is not None else 1
    jobs["mem_mib_per_task"] = 0
    jobs["gpus_per_task"] = 0
    jobs["user_id"] = users if users is not None else 0
    jobs["group_id"] = 0
    jobs["status"] = 1
    return Workload(name="shadow", jobs=jobs, machine=machine)


def random_workload(n: int, machine: Machine, seed: int) -> Workload:
    """``n`` jobs of 1..cores cores, Poisson arrivals keeping the machine busy,
    runtimes of a few seconds to minutes, walltimes above them, three users."""
    rng = np.random.default_rng(seed)
    cores = rng.integers(1, machine.cores_per_node + 1, n)
    run = rng.integers(0, 300, n)
    gap = rng.exponential(float(run.mean() * cores.mean()) / machine.total_cores / 0.95, n)
    submit = (1_700_000_000 + np.cumsum(gap)).astype(np.int64)
    walltime = run + rng.integers(1, 600, n)
    return workload(
        submit.tolist(),
        run.tolist(),
        walltime.tolist(),
        machine,
        users=rng.integers(0, 3, n).tolist(),
        cores=cores.tolist(),
    )


def record_agent_log(load: Workload, policy: Policy) -> list[Decision]:
    """The decision log an agent running ``load`` under ``policy`` would write."""
    jobs = load.jobs
    assert jobs.dtype == JOB_DTYPE
    machine = load.machine
    node = [machine.cores_per_node, machine.mem_mib_per_node, machine.gpus_per_node]
    nodes = [[f"node{k}", *node] for k in range(machine.n_nodes)]
    kernel = Kernel(np.array([[*node, 0]] * machine.n_nodes, dtype=np.int64), policy)
    users = sorted({int(u) for u in jobs["user_id"]})
    rows: list[Decision] = []

    def log(t: int, op: str, job: int | None = None, data: Any = None) -> None:
        rows.append((len(rows) + 1, t, op, job, data if data is not None else {}))

    t0 = int(jobs["submit_s"][0])
    log(t0, "restart", None, {"nodes": nodes, "policy": policy_to_toml(policy)})
    kernel.set_account_names([str(u) for u in users], ["0"])
    log(t0, "accounts", None, {"users": [str(u) for u in users], "groups": ["0"]})
    ends: list[tuple[int, int]] = []  # (end time, slot)
    duration = np.minimum(jobs["run_s"], np.maximum(jobs["walltime_s"], 1))
    k = 0
    while k < len(jobs) or ends:
        next_submit = [int(jobs["submit_s"][k])] if k < len(jobs) else []
        t = min(next_submit + [end for end, _ in ends[:1]])
        while ends and ends[0][0] == t:
            _, slot = heapq.heappop(ends)
            kernel.finish(slot, t, 1)
            log(t, "finish", int(jobs["job_id"][slot]), {"ok": 1})
        first = k
        while k < len(jobs) and jobs["submit_s"][k] == t:
            k += 1
        if k > first:
            _submit(kernel, jobs[first:k], first, users, log, t)
        kernel.schedule(t)
        log(t, "pass")
        for slot in kernel.started_jobs().tolist():
            where = int(kernel.job_allocation(slot)[0][0])
            log(t, "start", int(jobs["job_id"][slot]), {"node": where})
            heapq.heappush(ends, (t + int(duration[slot]), slot))
    return rows


def _submit(
    kernel: Kernel,
    batch: np.ndarray,
    first: int,
    users: list[int],
    log: Callable[..., None],
    t: int,
) -> None:
    specs = np.zeros(len(batch), dtype=JOB_SPEC_DTYPE)
    specs["job_id"] = batch["job_id"]
    specs["submit_s"] = t
    specs["walltime_s"] = np.maximum(batch["walltime_s"], 1)
    specs["n_tasks"] = 1
    specs["per_task"][:, 0] = batch["cores_per_task"]
    specs["user_idx"] = [users.index(int(u)) for u in batch["user_id"]]
    specs["group_idx"] = 0
    specs["qos_idx"] = -1
    assert kernel.add_jobs(specs) == first
    for spec in specs:
        log(
            t,
            "add",
            int(spec["job_id"]),
            {
                "cores": int(spec["per_task"][0]),
                "mem_mib": 0,
                "gpus": 0,
                "walltime_s": int(spec["walltime_s"]),
                "user": int(spec["user_idx"]),
                "group": 0,
                "qos": -1,
            },
        )
    for offset, spec in enumerate(specs):
        kernel.submit(first + offset, t)
        log(t, "submit", int(spec["job_id"]), {})


class LogWriter:
    """A hand-driven agent: each method makes the agent's kernel call at ``t``
    and logs it as the agent does (``pass_`` logs the starts of the pass)."""

    def __init__(
        self,
        t: int,
        nodes: list[tuple[str, int]],
        policy: Policy,
        *,
        states: list[int] | None = None,
    ) -> None:
        self.rows: list[Decision] = []
        self.slot: dict[int, int] = {}
        self.job: list[int] = []
        self.restart(t, nodes, policy, states=states)

    def log(self, t: int, op: str, job: int | None = None, data: Any = None) -> None:
        self.rows.append((len(self.rows) + 1, t, op, job, data if data is not None else {}))

    def restart(
        self,
        t: int,
        nodes: list[tuple[str, int]],
        policy: Policy,
        *,
        states: list[int] | None = None,
        running: Sequence[tuple[int, int, int]] = (),
        pending: Sequence[tuple[int, int]] = (),
    ) -> None:
        """A (re)started agent: a new kernel; ``running`` (job, node, start) are
        adopted, ``pending`` (job, walltime) submitted again."""
        capacity = np.array([[cores, 0, 0, 0] for _, cores in nodes], dtype=np.int64)
        self.kernel = Kernel(capacity, policy)
        self.slot, self.job = {}, []
        data: dict[str, Any] = {
            "nodes": [[name, cores, 0, 0] for name, cores in nodes],
            "policy": policy_to_toml(policy),
        }
        if states is not None:  # as the agent logs a cluster manager's pool
            data["pool"] = {"price": 0.0, "autoscale": None, "states": states}
            for k, state in enumerate(states):
                if state != 0:
                    self.kernel.set_node_state(k, NodeState(state), t)
        self.log(t, "restart", None, data)
        self.kernel.set_account_names(["0"], ["0"])
        self.log(t, "accounts", None, {"users": ["0"], "groups": ["0"]})
        for job, node, start in running:
            self._add(t, job, 3600)
            self.kernel.adopt(self.slot[job], start, np.array([node]), np.array([1]))
            self.log(t, "adopt", job, {"node": node, "start": start})
        for job, walltime in pending:
            self.submit(t, job, walltime)

    def _add(self, t: int, job: int, walltime_s: int) -> None:
        spec = np.zeros(1, dtype=JOB_SPEC_DTYPE)
        spec["job_id"], spec["submit_s"], spec["walltime_s"], spec["n_tasks"] = (
            job,
            t,
            walltime_s,
            1,
        )
        spec["per_task"][0, 0] = 1
        spec["qos_idx"] = -1
        self.slot[job] = self.kernel.add_jobs(spec)
        self.job.append(job)
        data = {"cores": 1, "mem_mib": 0, "gpus": 0, "walltime_s": walltime_s}
        self.log(t, "add", job, data | {"user": 0, "group": 0, "qos": -1})

    def submit(self, t: int, job: int, walltime_s: int) -> None:
        self._add(t, job, walltime_s)
        self.kernel.submit(self.slot[job], t)
        self.log(t, "submit", job)

    def pass_(self, t: int) -> list[tuple[int, int]]:
        self.kernel.schedule(t)
        self.log(t, "pass")
        started = []
        for slot in self.kernel.started_jobs().tolist():
            node = int(self.kernel.job_allocation(slot)[0][0])
            started.append((self.job[slot], node))
            self.log(t, "start", self.job[slot], {"node": node})
        return started

    def finish(self, t: int, job: int, ok: int = 1, *, cancelled: bool = False) -> None:
        self.kernel.finish(self.slot[job], t, ok)
        self.log(t, "finish", job, {"ok": ok} | ({"cancelled": 1} if cancelled else {}))

    def cancel(self, t: int, job: int) -> None:
        self.kernel.cancel(self.slot[job], t)
        self.log(t, "cancel", job)

    def fail(self, t: int, node: int) -> None:
        self.kernel.fail_node(node, t)
        self.log(t, "fail", None, {"node": node})

    def node(self, t: int, node: int, state: int) -> None:
        self.kernel.set_node_state(node, NodeState(state), t)
        self.log(t, "node", None, {"node": node, "state": state})

    def autoscale(self, t: int, booted: list[int], stopped: list[int]) -> None:
        for k in booted:
            self.kernel.set_node_state(k, NodeState["BOOTING"], t)
        for k in stopped:
            self.kernel.set_node_state(k, NodeState["OFF"], t)
        self.log(t, "autoscale", None, {"booted": booted, "stopped": stopped})
