"""The node inventory: which nodes the kernel schedules on, and in which state.

Nodes are drained (retired once empty when a node manager runs them) and
resumed; Dask workers come and go (the kernel rebuilt on the new nodes, the
jobs of a lost one requeued or ended by the policy); a cluster manager's
pool keeps a fixed set of slots whose workers come and go, booted and
powered off by the kernel's autoscaler. ``nodes`` names the states as sinfo
does.

It is separate from the turn loop because it is the one part that changes
the cluster under the kernel rather than the jobs on it, and the only one
that asks the pool for workers, binds them to slots and retires them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from typing import Any

import numpy as np

from htcsim.agent.config import NodeSpec
from htcsim.agent.engine.recovery import _lost_run
from htcsim.agent.engine.state import EngineError, EngineState
from htcsim.agent.executors.base import Recovered
from htcsim.kernel import JobState, Kernel, NodeState
from htcsim.policy import Policy

log = logging.getLogger("htcsim.agent")

LOST_SHOWN_S = 900.0
"""How long a lost Dask node is listed as ``down`` (``nodes``, the
``htcsim_nodes{state="down"}`` gauge) unless a worker of its name replaces it
first. A lost worker leaves the kernel at once (its jobs requeued), so
without this a node that died would simply vanish and no alert on down
nodes could fire; 15 minutes outlast the shipped alert's ``for: 5m`` and a
few scrapes, and pods replaced under new names do not pile up."""


class Inventory(EngineState):
    """Drain and resume, the node inventory's changes, a pool's slots and autoscaling."""

    def _node(self, name: str) -> int:
        if name not in self.node_index:
            raise EngineError(
                f"no node {name!r} (nodes: {', '.join(self.node_index)})", status=404, field="node"
            )
        return self.node_index[name]

    def _node_state(self, k: int) -> str:
        """The node's state as ``nodes`` names it (sinfo's words)."""
        state = NodeState(int(self.kernel.node_states()[k]))
        free = int(self.kernel.free_per_node()[k][0])
        return _node_state_name(state, free, self.node_specs[k].cores, self.pool is not None)

    def _do_drain(self, now: int, name: str) -> str:
        k = self._node(name)
        self.kernel.drain_node(k, now)
        self._log.append((now, "drain", None, json.dumps({"node": k})))
        self._dirty = True
        if self.node_specs[k].address or self.pool is not None:
            self._retiring.add(name)
        return self._node_state(k)

    def _retire_drained(self) -> None:
        """A drained node of a backend with a node manager (a Dask worker) is
        retired once its last job ended: the worker leaves gracefully."""
        for name in list(self._retiring):
            k = self.node_index.get(name)
            if k is None:
                self._retiring.discard(name)
            elif self._kernel_state(k) == NodeState["OFF"]:
                self._retiring.discard(name)
                if self.pool is not None:
                    self._release_slot(k)
                    self._scale_pool()
                else:
                    self.executor.retire(self.node_specs[k].address)

    def _do_resume(self, now: int, name: str) -> str:
        k = self._node(name)
        self._retiring.discard(name)
        if self.pool is not None and self.pool.workers[k] is None:
            if self._kernel_state(k) == NodeState["OFF"]:  # ask for a worker again
                self._set_slot(k, NodeState["BOOTING"], now)
                self._scale_pool()
        else:
            self._set_slot(k, NodeState["UP"], now)
        self._dirty = True
        return self._node_state(k)

    def _do_nodes(self, now: int, nodes: list[NodeSpec]) -> list[str]:
        """The node inventory changed (Dask workers came or went): jobs of a lost
        node are requeued (or end ``node_fail``) by the policy, and the kernel is
        rebuilt on the new nodes with every job it held (running ones adopted
        where they run); a node without a worker (no address: every worker or
        the scheduler was lost) is kept down, so that jobs are still checked
        against it and wait for it. Returns the names of the lost nodes. With a cluster
        manager's pool the slots stay and the workers move (``_do_pool``)."""
        if self.pool is not None:
            return self._do_pool(now, nodes)
        nodes = self._keep_needed(nodes)
        old = {n.name: n for n in self.node_specs}
        new = {n.name: n for n in nodes}
        lost = [
            name for name, n in old.items() if name not in new or new[name].address != n.address
        ]
        for name in lost:  # a drained node retired on purpose (OFF) is not down
            if name not in new and self._kernel_state(self.node_index[name]) != NodeState["OFF"]:
                self._lost[name] = (old[name], self._now_f)
        for name in new:
            self._lost.pop(name, None)  # replaced
        gone_jobs: set[int] = set()
        for name in lost:
            if old[name].address:
                gone_jobs.update(self.executor.node_lost(old[name].address))
        for name, n in new.items():
            if n.address and (name not in old or old[name].address != n.address):
                self.executor.kill_strays(n.address)
        found = {
            job_id: Recovered(job_id, "running", run.pid, None)
            for job_id, run in self.running.items()
            if job_id not in gone_jobs and self.node_specs[run.node].name not in lost
        }
        self.store.set_states(self._changes, now=self._now_f)  # the rebuild reads the store
        self._changes = []
        self.node_specs = list(nodes)
        self.node_index = {n.name: k for k, n in enumerate(self.node_specs)}
        self.metrics.keep_nodes(new)  # a gone node's samples are not exported frozen
        where = ", ".join(lost)
        self._rebuild(found, f"node {where} was lost" if lost else "node lost")
        for k, n in enumerate(self.node_specs):  # a node without its worker: nothing lands there
            if not n.address:
                self._set_slot(k, NodeState["DOWN"], now)
        down = [n.name for n in nodes if not n.address]
        log.info(
            "nodes now: %s (lost: %s%s)",
            ", ".join(new) or "none",
            where or "none",
            f"; without a worker, down: {', '.join(down)}" if down else "",
        )
        return lost

    def _keep_needed(self, nodes: list[NodeSpec]) -> list[NodeSpec]:
        """``nodes``, and a placeholder (no worker, held down) for each node that
        leaves although a job not yet finished fits no other: a lost node may
        be the only one of its shape, and the jobs that need it wait for its
        worker to come back instead of having no node at all."""
        there = {n.name for n in nodes}
        gone = [n for n in self.node_specs if n.name not in there]
        if not gone:
            return nodes
        kept: list[NodeSpec] = []
        for row in self.store.unfinished():
            need = (int(row["cores"]), int(row["mem_mib"]), int(row["gpus"]))
            if any(_fits(need, n) for n in nodes) or any(_fits(need, n) for n in kept):
                continue
            spare = next((n for n in gone if _fits(need, n) and n not in kept), None)
            if spare is not None:
                kept.append(spare)
        if kept:
            log.warning(
                "node(s) %s kept down without a worker: waiting jobs fit no other node",
                ", ".join(n.name for n in kept),
            )
        placeholders = [dataclasses.replace(n, address="") for n in kept]
        return sorted([*nodes, *placeholders], key=lambda n: n.name)

    # ------------------------------------------------------------------ a cluster manager's pool

    def _configure_pool(self, kernel: Kernel, policy: Policy) -> dict[str, Any]:
        """The pool's slots are one node type; with ``[autoscale]`` the kernel's
        autoscaler manages them (live boots: a slot is BOOTING until a worker
        joins), without it every slot is asked for. A slot with a worker is UP.
        Returns what the decision log's restart needs to do the same."""
        assert self.pool is not None
        now = int(self._now_f)
        n = len(self.node_specs)
        price = self.pool.config.price_per_hour
        kernel.set_node_types(np.zeros(n, dtype=np.int32), np.array([price]))
        bounds = None
        if policy.autoscale:
            bounds = policy.autoscale_bounds(self.pool.config.node_type, n)
            kernel.configure_autoscale([bounds], policy, now, live=True)
        off = NodeState["OFF"]
        for k, state in enumerate(kernel.node_states().tolist()):
            if self.pool.workers[k] is not None:
                kernel.set_node_state(k, NodeState["UP"], now)
            elif state != off:
                kernel.set_node_state(k, NodeState["BOOTING"], now)
        return {
            "price": price,
            "autoscale": bounds,
            "states": kernel.node_states().tolist(),
        }

    def _do_pool(self, now: int, workers: list[NodeSpec]) -> list[str]:
        """Workers came or went: a lost worker's slot fails in the kernel (its
        jobs requeued or ended by the policy) and asks for a replacement
        (BOOTING; OFF if it was being drained); a new worker takes a booting
        slot (one asked for) and comes UP. A worker nobody asked for stays
        unused until the manager, asked for fewer, lets it go. Returns the
        slots lost."""
        pool = self.pool
        assert pool is not None
        lost, joined = pool.changes(workers)
        names = []
        for k in lost:
            worker = pool.unbind(k)
            assert worker is not None
            names.append(self.node_specs[k].name)
            self.executor.node_lost(worker.address)
            draining = self._kernel_state(k) == NodeState["DRAINING"]
            self._lost[self.node_specs[k].name] = (self.node_specs[k], self._now_f)
            if self._kernel_state(k) in (NodeState["UP"], NodeState["DRAINING"]):
                self._fail_slot(k, now, f"node {self.node_specs[k].name} ({worker.name}) was lost")
            self._set_slot(k, NodeState["OFF"] if draining else NodeState["BOOTING"], now)
            self.node_specs[k] = pool.slots[k]
            log.warning("node %s lost its worker %s", self.node_specs[k].name, worker.address)
        for worker in joined:
            states = self.kernel.node_states().tolist()
            free = [k for k, w in enumerate(pool.workers) if w is None]
            booting = [k for k in free if states[k] == NodeState["BOOTING"]]
            if not booting:
                log.info("worker %s joined, not asked for: not used", worker.address)
                continue
            slot = booting[0]
            self.executor.kill_strays(worker.address)
            self.node_specs[slot] = pool.bind(slot, worker)
            self._lost.pop(self.node_specs[slot].name, None)  # replaced
            self._set_slot(slot, NodeState["UP"], now)
            log.info("node %s is worker %s", self.node_specs[slot].name, worker.address)
        self._scale_pool()
        self._dirty = True
        return names

    def _kernel_state(self, k: int) -> NodeState:
        return NodeState(int(self.kernel.node_states()[k]))

    def _set_slot(self, k: int, state: NodeState, now: int) -> None:
        self.kernel.set_node_state(k, state, now)
        self._log.append((now, "node", None, json.dumps({"node": k, "state": int(state)})))

    def _fail_slot(self, k: int, now: int, cause: str) -> None:
        """The kernel fails node ``k``: each job on it is requeued or ends
        ``node_fail``, as the kernel decided by the policy."""
        hit = self.kernel.fail_node(k, now).tolist()
        self._log.append((now, "fail", None, json.dumps({"node": k})))
        rows = self.store.jobs_by_id([self.job_of[slot] for slot in hit])
        for slot in hit:
            job_id = self.job_of[slot]
            self.running.pop(job_id, None)
            requeued = self.kernel.state_of(slot) == JobState["PENDING"]
            requeues = int(rows[job_id]["requeues"])
            self._changes.append(_lost_run(job_id, requeues, requeued, cause, self._now_f))
            if not requeued:
                self._ended.add(job_id)
                self.metrics.finished.labels("node_fail").inc()
                self._cascade(job_id, now, "node_fail")
        self.free_cores[k] = list(range(self.node_specs[k].cores))
        self.free_gpus[k] = list(self.node_specs[k].devices)

    def _autoscale(self, now: int) -> None:
        """The kernel's autoscaler decision after a pass, carried out: booted
        slots ask the manager for workers, powered-off slots retire theirs
        (the kernel powers off idle nodes only)."""
        booted, stopped = self.kernel.autoscale(now)
        if len(booted) or len(stopped):
            data = {"booted": booted.tolist(), "stopped": stopped.tolist()}
            self._log.append((now, "autoscale", None, json.dumps(data)))
            log.info("autoscale: boot %s, power off %s", data["booted"], data["stopped"])
        for k in stopped.tolist():
            self._release_slot(k)
        self._scale_pool()

    def _release_slot(self, k: int) -> None:
        """Slot ``k`` went OFF: its worker (if any) is retired."""
        assert self.pool is not None
        worker = self.pool.unbind(k)
        self.node_specs[k] = self.pool.slots[k]
        if worker is not None:
            self.pool.retire(worker)

    def _scale_pool(self) -> None:
        """Ask the manager for as many workers as slots are not OFF."""
        assert self.pool is not None
        states = self.kernel.node_states()
        self.pool.scale(int((states != int(NodeState["OFF"])).sum()))


_NODE_NAMES = ("idle", "mixed", "allocated", "draining", "drained", "down", "booting", "off")


def node_type(spec: NodeSpec) -> str:
    """A node's type by its name. A Dask worker's is its ``--name`` up to the
    first ``-`` (``gpu-3`` and ``gpu-<pod name>`` are of type ``gpu``: a pod's
    name ends in a random suffix, not a number, so the type is the prefix the
    worker was given); any other node's is its name without its trailing
    number (``node0`` is of type ``node``)."""
    if spec.address and "-" in spec.name.strip("-"):
        return spec.name.strip("-").split("-", 1)[0]
    return re.sub(r"[-_.]?\d+$", "", spec.name) or "worker"


def _fits(need: tuple[int, int, int], node: NodeSpec) -> bool:
    cores, mem_mib, gpus = need
    return cores <= node.cores and mem_mib <= node.mem_mib and gpus <= node.gpus


def shown_lost(lost: dict[str, tuple[NodeSpec, float]], now: float) -> dict[str, NodeSpec]:
    """The lost nodes still listed as down at ``now`` (older ones dropped)."""
    for name, (_, when) in list(lost.items()):
        if now - when > LOST_SHOWN_S:
            lost.pop(name, None)
    return {name: spec for name, (spec, _) in list(lost.items())}


def _node_state_name(state: NodeState, free_cores: int, cores: int, pooled: bool = False) -> str:
    if state == NodeState["UP"]:
        return "idle" if free_cores == cores else "allocated" if free_cores == 0 else "mixed"
    return {
        NodeState["DRAINING"]: "draining",
        NodeState["OFF"]: "off" if pooled else "drained",
        NodeState["DOWN"]: "down",
        NodeState["BOOTING"]: "booting",
    }[state]
