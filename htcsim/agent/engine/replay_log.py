"""Replay an agent's decision log through a fresh kernel: the same calls in the
same order must give the same decisions.

Why: the promise of htcsim is that the policy the simulator evaluated is the
policy the agent applied. The agent logs every call it makes on the kernel
(jobs added, submitted, held, released, cancelled, finished, adopted, node
changes and failures, policy changes, passes, autoscaler decisions) with the
kernel time; this module makes those calls on a new kernel, as the simulator
would, and compares each pass's starts (job and node), and each autoscaler
decision, with what the agent recorded.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from htcsim.kernel import JOB_SPEC_DTYPE, Kernel, NodeState
from htcsim.policy import policy_from_mapping

Decision = tuple[int, int, str, int | None, dict[str, Any]]


@dataclass
class ReplayResult:
    passes: int = 0
    starts: int = 0
    restarts: int = 0
    differences: list[str] = field(default_factory=list)


class _Replayer:
    def __init__(self) -> None:
        self.kernel: Kernel | None = None
        self.autoscaled = False  # the agent's autoscaler decides after every pass
        self.slot: dict[int, int] = {}
        self.job: list[int] = []
        self.result = ReplayResult()

    def restart(self, t: int, data: dict[str, Any]) -> None:
        capacity = np.array([[c, m, g, 0] for _, c, m, g in data["nodes"]], dtype=np.int64)
        policy = policy_from_mapping(tomllib.loads(data["policy"]), source="decision log")
        self.kernel = kernel = Kernel(capacity, policy)
        self.autoscaled = False
        pool = data.get("pool")
        if pool is not None:  # a cluster manager's pool: one node type, live boots
            kernel.set_node_types(
                np.zeros(len(capacity), dtype=np.int32), np.array([pool["price"]])
            )
            self.autoscaled = pool["autoscale"] is not None
            if self.autoscaled:
                kernel.configure_autoscale([tuple(pool["autoscale"])], policy, t, live=True)
            for k, state in enumerate(pool["states"]):
                if int(kernel.node_states()[k]) != state:
                    kernel.set_node_state(k, NodeState(state), t)
        self.slot, self.job = {}, []
        self.result.restarts += 1

    def apply(self, t: int, op: str, job_id: int | None, data: Any) -> None:
        kernel = self.kernel
        if kernel is None:
            raise ValueError("the decision log does not begin with an agent start")
        slot = self.slot.get(job_id) if job_id is not None else None
        if op == "add":
            assert job_id is not None
            spec = np.zeros(1, dtype=JOB_SPEC_DTYPE)
            spec["job_id"] = job_id
            spec["submit_s"] = t
            spec["walltime_s"] = data["walltime_s"]
            spec["n_tasks"] = 1
            spec["per_task"][0, :3] = (data["cores"], data["mem_mib"], data["gpus"])
            spec["user_idx"], spec["group_idx"], spec["qos_idx"] = (
                data["user"],
                data["group"],
                data["qos"],
            )
            self.slot[job_id] = kernel.add_jobs(spec)
            self.job.append(job_id)
        elif op == "accounts":
            kernel.set_account_names(data["users"], data["groups"])
        elif op == "deps":
            child, parent, kind, delay = zip(*data, strict=True)
            kernel.add_dependencies(
                np.array([self.slot[c] for c in child]),
                np.array([self.slot[p] for p in parent]),
                np.array(kind, dtype=np.int32),
                np.array(delay),
            )
        elif op == "submit":
            kernel.submit(_known(slot, job_id, op), t)
        elif op == "hold":
            kernel.hold(_known(slot, job_id, op))
        elif op == "release":
            kernel.release(_known(slot, job_id, op), t)
        elif op == "cancel":
            kernel.cancel(_known(slot, job_id, op), t)
        elif op == "finish":
            kernel.finish(_known(slot, job_id, op), t, int(data["ok"]))
        elif op == "adopt":
            kernel.adopt(
                _known(slot, job_id, op), data["start"], np.array([data["node"]]), np.array([1])
            )
        elif op == "drain":
            kernel.drain_node(data["node"], t)
        elif op == "node":
            kernel.set_node_state(data["node"], NodeState(data["state"]), t)
        elif op == "fail":
            kernel.fail_node(data["node"], t)

        elif op == "policy":
            kernel.configure(policy_from_mapping(tomllib.loads(data["toml"]), source="policy"))
        else:
            raise ValueError(f"unknown decision log op {op!r}")


def _known(slot: int | None, job_id: int | None, op: str) -> int:
    if slot is None:
        raise ValueError(f"decision log: {op} of job {job_id}, which was never added")
    return slot


def replay_decision_log(rows: Sequence[Decision]) -> ReplayResult:
    """Replay ``rows`` (``AgentStore.decisions()``) and compare every pass."""
    replayer = _Replayer()
    result = replayer.result
    k = 0
    users_groups: dict[str, Any] | None = None
    while k < len(rows):
        seq, t, op, job_id, data = rows[k]
        k += 1
        if op == "restart":
            replayer.restart(t, data)
            continue
        if op in ("start", "autoscale"):
            result.differences.append(f"seq {seq}: {op} outside a pass")
            continue
        if op == "accounts":
            users_groups = data
        if op == "policy":
            replayer.apply(t, op, job_id, data)
            if users_groups is not None and replayer.kernel is not None:
                replayer.kernel.set_account_names(users_groups["users"], users_groups["groups"])
            continue
        if op != "pass":
            replayer.apply(t, op, job_id, data)
            continue
        kernel = replayer.kernel
        assert kernel is not None
        kernel.schedule(t)
        result.passes += 1
        got = []
        for slot in kernel.started_jobs().tolist():
            nodes, _ = kernel.job_allocation(slot)
            got.append((replayer.job[slot], int(nodes[0])))
        logged = []
        while k < len(rows) and rows[k][2] == "start":
            logged.append((int(rows[k][3] or 0), int(rows[k][4]["node"])))
            k += 1
        result.starts += len(logged)
        if got != logged:
            result.differences.append(
                f"seq {seq} (t={t}): the agent started {logged}, the replay {got}"
            )
        if replayer.autoscaled:
            booted, stopped = kernel.autoscale(t)
            decided = {"booted": booted.tolist(), "stopped": stopped.tolist()}
            agent: dict[str, list[int]] = {"booted": [], "stopped": []}
            if k < len(rows) and rows[k][2] == "autoscale":
                agent = {key: rows[k][4][key] for key in agent}
                k += 1
            if decided != agent:
                result.differences.append(
                    f"seq {seq} (t={t}): the agent's autoscaler decided {agent}, the replay's "
                    f"{decided}"
                )
    return result
