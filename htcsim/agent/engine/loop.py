"""The live agent's scheduling loop: one thread owns the kernel, the store's
writer and the executor; everything else sends it commands.

Why one writer: the kernel's state must change in one order that the
decision log can replay, and SQLite commits are cheapest when many changes
share one. Each turn of the loop takes every command and process exit that
arrived, applies them to the store and the kernel, runs one scheduling pass,
commits all of it at once (one fsync for the whole batch), answers the
callers (an accepted job is durable before its submitter hears of it), and
only then starts the processes the pass chose. API handlers never touch the
kernel's state except through the read-only queries under ``kernel_lock``.

The kernel's clock is the wall clock in whole seconds (Unix time).
"""

from __future__ import annotations

import getpass
import heapq
import json
import logging
import os
import queue
import re
import signal as signals
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from htcsim.agent.config import AgentConfig, NodeSpec
from htcsim.agent.engine.principal import Principal
from htcsim.agent.executors.base import (
    JobExecutor,
    JobExit,
    LaunchError,
    LaunchSpec,
    Recovered,
)
from htcsim.agent.executors.local.executor import LocalExecutor
from htcsim.agent.executors.local.monitor import job_usage, node_usage
from htcsim.agent.metrics import AgentMetrics
from htcsim.agent.store.jobs import FINAL_STATES, AgentStore, NewJob, StateChange
from htcsim.kernel import (
    DEPENDENCY_KINDS,
    JOB_SPEC_DTYPE,
    RESOURCES,
    JobState,
    Kernel,
    KernelInputError,
    NodeState,
    check_acyclic,
)
from htcsim.policy import Policy, policy_to_toml

if TYPE_CHECKING:
    from htcsim.agent.executors.dask.cluster_pool import ClusterPool

log = logging.getLogger("htcsim.agent")

LINGER_S = 0.005
"""How long a turn waits for more exits after the first (group commit)."""
ENV_KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL")
"""The agent's variables a job inherits (HTCondor's default: not the whole environment)."""


class EngineError(ValueError):
    """A command the agent refuses: ``status`` is the HTTP status, ``field``
    the request field at fault (None: the request as a whole)."""

    def __init__(self, message: str, *, status: int = 422, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass
class Running:
    """A job whose process the agent carries out (the kernel knows it as running)."""

    job_id: int
    slot: int
    node: int
    cores: list[int]
    start: float
    walltime_s: int
    signal: int
    signal_before_s: int
    user: str
    pid: int | None = None
    phase: str = ""  # "" | "cancelling" | "timeout"
    peak_rss_mib: float = -1.0
    spec: LaunchSpec | None = None


@dataclass(order=True)
class _Timer:
    due: float
    seq: int
    kind: str = field(compare=False)  # "signal" | "term" | "kill"
    run: Running = field(compare=False)


@dataclass
class _Command:
    kind: str
    args: tuple[Any, ...]
    future: Future[Any] | None = None


def _signal_number(name: str) -> int:
    return int(signals.Signals[name if name.startswith("SIG") else f"SIG{name}"])


class Engine:
    """The scheduling loop of one agent (see the module docstring).

    ``store`` is the loop's own connection: once the loop runs, no other
    thread may use it (readers open their own connections)."""

    def __init__(
        self,
        config: AgentConfig,
        policy: Policy,
        nodes: Sequence[NodeSpec],
        *,
        store: AgentStore | None = None,
        metrics: AgentMetrics | None = None,
        clock: Callable[[], float] = time.time,
        executor: Callable[[Callable[[JobExit], None]], JobExecutor] | None = None,
        pool: ClusterPool | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self.pool = pool  # a cluster manager's pool: ``nodes`` are its slots
        self.node_specs = list(nodes)
        self.node_index = {n.name: k for k, n in enumerate(self.node_specs)}
        self.store = store or AgentStore(config.db_path)
        self.metrics = metrics or AgentMetrics()
        self.clock = clock
        self.kernel_lock = threading.RLock()
        self._now_f = clock()  # the current turn's time
        self._pool_log: dict[str, Any] | None = None  # the pool's setup, for the restart op
        self.kernel = self._new_kernel(policy)
        self.executor: JobExecutor = (
            executor(self._on_exit)
            if executor is not None
            else LocalExecutor(config.run_dir, self._on_exit, config.memory_limit)
        )
        self.slot_of: dict[int, int] = {}
        self.job_of: list[int] = []
        self.children: dict[int, list[int]] = {}
        self.running: dict[int, Running] = {}
        self.users: dict[str, int] = {}
        self.groups: dict[str, int] = {}
        self.free_cores = [list(range(n.cores)) for n in self.node_specs]
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._timers: list[_Timer] = []
        self._timer_seq = 0
        self._log: list[tuple[int, str, int | None, str]] = []
        self._changes: list[StateChange] = []
        self._recorded_exits: list[int] = []  # exits in this turn's commit
        self._pids: list[tuple[int, int]] = []  # (pid, job) launched since the last commit
        self._base_env = {k: os.environ[k] for k in ENV_KEPT if k in os.environ}
        self._launch_failures: list[tuple[int, str]] = []
        self._ended: set[int] = set()  # ended while this engine ran (no double record)
        self._retiring: set[str] = set()  # drained nodes to retire once empty
        self._dirty = True
        self._next_sample = 0.0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.last_pass_s = 0.0
        self.passes = 0
        self.started_at = self.clock()

    # ------------------------------------------------------------------ life

    def _new_kernel(self, policy: Policy) -> Kernel:
        capacity = np.array(
            [(n.cores, n.mem_mib, n.gpus, 0) for n in self.node_specs], dtype=np.int64
        )
        kernel = Kernel(capacity, policy)
        self._pool_log = None
        if self.pool is not None:
            self._pool_log = self._configure_pool(kernel, policy)
        return kernel

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

    def start(self) -> None:
        """Reload what the store holds (reconciling processes that survived the
        previous agent), then run the loop in its own thread."""
        self._recover()
        self.store.audit_policy(getpass.getuser(), policy_to_toml(self.policy), "agent start")
        self._thread = threading.Thread(target=self._run, name="htcsim-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0, *, kill_jobs: bool = False) -> None:
        """Stop the loop; running jobs keep running (a restart re-adopts them),
        unless ``kill_jobs`` (then the executor kills them and stops)."""
        if self._thread is None:
            return
        self._stopping.set()
        self._commands.put(_Command("stop", ()))
        self._thread.join(timeout)
        self._thread = None
        if kill_jobs:
            self.executor.shutdown(kill_jobs=True)
        else:
            self.executor.close()

    def read_log(self, row: dict[str, Any], stream: str, tail: int) -> bytes:
        """The end of a job's stdout or stderr, from the node that ran it."""
        path = row[stream]
        node = self.node_index.get(row["node"] or "")
        address = self.node_specs[node].address if node is not None else ""
        reader = getattr(self.executor, "read_log", None)
        if address and reader is not None:
            return bytes(reader(row["id"], address, path, tail))
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - tail, 0))
            return f.read()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ commands (any thread)

    def _send(self, kind: str, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        if not self.alive:
            future.set_exception(EngineError("the scheduling loop is not running", status=503))
            return future
        self._commands.put(_Command(kind, args, future))
        return future

    def submit(
        self, principal: Principal, jobs: Sequence[NewJob], workflow: str | None = None
    ) -> Future[Any]:
        """Accept jobs (one batch, all or none); the future gives their ids once durable."""
        return self._send("submit", principal, list(jobs), workflow)

    def cancel(self, principal: Principal, job_ids: Sequence[int]) -> Future[Any]:
        return self._send("cancel", principal, list(job_ids))

    def hold(self, principal: Principal, job_ids: Sequence[int]) -> Future[Any]:
        return self._send("hold", principal, list(job_ids))

    def release(self, principal: Principal, job_ids: Sequence[int]) -> Future[Any]:
        return self._send("release", principal, list(job_ids))

    def drain(self, node: str) -> Future[Any]:
        return self._send("drain", node)

    def resume(self, node: str) -> Future[Any]:
        return self._send("resume", node)

    def set_nodes(self, nodes: Sequence[NodeSpec]) -> Future[Any]:
        """The node inventory changed (the Dask backend's watcher calls it)."""
        return self._send("nodes", list(nodes))

    def set_policy(self, principal: Principal, policy: Policy, note: str = "") -> Future[Any]:
        return self._send("policy", principal, policy, note)

    # ------------------------------------------------------------------ queries (any thread)

    def live(self, job_ids: Sequence[int], *, estimate: bool = False) -> dict[int, dict[str, Any]]:
        """Reason, priority (and its factors) and estimated start of jobs the kernel holds."""
        now = int(self.clock())
        out: dict[int, dict[str, Any]] = {}
        with self.kernel_lock:
            kernel = self.kernel
            for job_id in job_ids:
                slot = self.slot_of.get(job_id)
                if slot is None:
                    continue
                state = kernel.state_of(slot)
                info: dict[str, Any] = {"kernel_state": state.name.lower()}
                if state in (JobState["PENDING"], JobState["HELD"]):
                    info["reason"] = kernel.why_pending(slot).name
                    priority, factors = kernel.priority_factors(slot, now)
                    info["priority"] = priority
                    info["factors"] = factors
                    if estimate and state == JobState["PENDING"]:
                        t = kernel.estimate_start(slot, now)
                        info["estimated_start"] = None if t < 0 else float(t)
                out[job_id] = info
        return out

    def nodes(self) -> list[dict[str, Any]]:
        """Every node: type, state (as sinfo: idle, mixed, allocated, draining,
        drained, down, booting; ``off`` for a pool's slot without a worker),
        capacity, free resources, running jobs."""
        on_node: dict[int, list[int]] = {}
        with self.kernel_lock:
            states = self.kernel.node_states()
            free = self.kernel.free_per_node()
            for run in list(self.running.values()):
                on_node.setdefault(run.node, []).append(run.job_id)
        out = []
        pool = self.pool
        for k, spec in enumerate(self.node_specs):
            state = NodeState(int(states[k]))
            capacity = {"cores": spec.cores, "mem_mib": spec.mem_mib, "gpus": spec.gpus}
            free_k = {r: int(free[k][i]) for i, r in enumerate(RESOURCES) if r in capacity}
            worker = pool.workers[k] if pool is not None else None
            out.append(
                {
                    "name": spec.name,
                    "type": pool.config.node_type if pool is not None else node_type(spec.name),
                    "worker": worker.name if worker is not None else "",
                    "state": _node_state_name(state, free_k["cores"], spec.cores, pool is not None),
                    "capacity": capacity,
                    "free": free_k,
                    "jobs": sorted(on_node.get(k, [])),
                    "cpus": list(spec.cpus),
                    "address": spec.address,
                }
            )
        return out

    def summary(self, counts: dict[str, int]) -> dict[str, Any]:
        nodes = self.nodes()
        up = [n for n in nodes if n["state"] in ("idle", "mixed", "allocated")]
        total = sum(n["capacity"]["cores"] for n in up)
        used = sum(n["capacity"]["cores"] - n["free"]["cores"] for n in nodes)
        return {
            "jobs": counts,
            "nodes": {s: sum(1 for n in nodes if n["state"] == s) for s in _NODE_NAMES},
            "cores": {"total": total, "allocated": used},
            "utilization": used / total if total else 0.0,
            "passes": self.passes,
            "last_pass_seconds": self.last_pass_s,
            "memory_limit": self.executor.memory_limit_mode,
            "policy": self.policy.label,
            "uptime_s": self.clock() - self.started_at,
        } | ({"pool": self.pool.summary()} if self.pool is not None else {})

    def refresh_metrics(self, counts: dict[str, int]) -> None:
        """Set the gauges that describe the present (called at scrape time)."""
        m = self.metrics
        for state, n in counts.items():
            m.jobs.labels(state).set(n)
        summary = self.summary(counts)
        for state, n in summary["nodes"].items():
            m.nodes.labels(state).set(n)
        m.cores.labels("total").set(summary["cores"]["total"])
        m.cores.labels("allocated").set(summary["cores"]["allocated"])
        m.utilization.set(summary["utilization"])

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                commands = self._take(self._wait_time())
                if any(c.kind == "stop" for c in commands):
                    commands = [c for c in commands if c.kind != "stop"]
                    self._turn(commands)
                    break
                self._turn(commands)
        except BaseException:
            log.exception("the scheduling loop stopped on an error")
            self._fail_waiting()
            raise

    def _fail_waiting(self) -> None:
        """Answer every command still queued: the loop will not."""
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command.future is not None and not command.future.done():
                command.future.set_exception(
                    EngineError("the scheduling loop stopped; see the agent's log", status=503)
                )

    def _wait_time(self) -> float:
        now = self.clock()
        wait = 1.0
        if self._dirty or self._launch_failures or self._pids:
            return 0.0
        if self._timers:
            wait = min(wait, self._timers[0].due - now)
        wakeup = self.kernel.next_wakeup()
        if wakeup >= 0:
            wait = min(wait, wakeup - now)
        wait = min(wait, self._next_sample - now)
        return max(wait, 0.0)

    def _take(self, wait: float) -> list[_Command]:
        """Every command that arrived, waiting up to ``wait`` for the first.

        Group commit: when the first is a process exit, the loop lingers a
        few milliseconds for more, so that exits trickling in one by one (as
        remote nodes report them) share one commit instead of one fsync each.
        """
        out: list[_Command] = []
        try:
            out.append(
                self._commands.get(timeout=wait) if wait > 0 else self._commands.get_nowait()
            )
        except queue.Empty:
            return out
        linger_until = time.monotonic() + LINGER_S if out[0].kind == "exit" else 0.0
        while True:
            try:
                out.append(self._commands.get_nowait())
                continue
            except queue.Empty:
                pass
            left = linger_until - time.monotonic()
            if left <= 0:
                return out
            try:
                out.append(self._commands.get(timeout=left))
            except queue.Empty:
                return out

    def _turn(self, commands: list[_Command]) -> None:
        """One turn: apply, schedule, commit, answer, launch."""
        now_f = self._now_f = self.clock()
        now = int(now_f)
        answers: list[tuple[Future[Any], Any]] = []
        to_launch: list[Running] = []
        with self.store.batch():
            with self.kernel_lock:
                if self._pids:
                    self.store.set_pids(self._pids)
                    self._pids.clear()
                for command in commands:
                    if command.kind == "exit":
                        self._apply_exit(command.args[0], now)
                failures, self._launch_failures = self._launch_failures, []
                for job_id, why in failures:
                    self._end_failed_launch(job_id, why, now)
                for command in commands:
                    if command.kind == "exit":
                        continue
                    assert command.future is not None
                    try:
                        with self.store.batch():
                            result = getattr(self, f"_do_{command.kind}")(now, *command.args)
                    except EngineError as exc:
                        command.future.set_exception(exc)
                        continue
                    except KeyError as exc:
                        command.future.set_exception(EngineError(str(exc.args[0])))
                        continue
                    except ValueError as exc:
                        command.future.set_exception(EngineError(str(exc)))
                        continue
                    except Exception as exc:  # one bad command must not stop the loop
                        log.exception("command %s failed", command.kind)
                        command.future.set_exception(
                            EngineError(f"internal error: {exc!r}", status=500)
                        )
                        continue
                    answers.append((command.future, result))
                self._fire_timers(now_f)
                if self._pass_due(now_f):
                    to_launch = self._pass(now, now_f)
                    if self.pool is not None:
                        self._autoscale(now)
                if self._retiring:
                    self._retire_drained()
            if self._changes:
                self.store.set_states(self._changes, now=now_f)
                self._changes = []
            if self._log:
                self.store.log_decisions(self._log)
                self._log = []
        if self._recorded_exits:  # their ends are durable: the shepherd may forget them
            self.executor.release_many(self._recorded_exits)
            self._recorded_exits = []
        for future, result in answers:
            future.set_result(result)
        if to_launch:
            self._launch(to_launch)
        if now_f >= self._next_sample:
            self._sample(now_f)

    def _pass_due(self, now_f: float) -> bool:
        """A pass when something changed, or when the kernel asks for one (a
        begin time, a reservation window, an autoscaler rule): exactly when
        the simulator passes, so that time-dependent rules (priorities that
        age, starvation limits) act at the same instants live and replayed."""
        if self._dirty:
            return True
        wakeup = self.kernel.next_wakeup()
        return 0 <= wakeup <= now_f

    def _pass(self, now: int, now_f: float) -> list[Running]:
        t0 = time.perf_counter()
        self.kernel.schedule(now)
        elapsed = time.perf_counter() - t0
        self.metrics.pass_seconds.observe(elapsed)
        self.last_pass_s = elapsed
        self.passes += 1
        self._dirty = False
        self._log.append((now, "pass", None, "{}"))
        slots = self.kernel.started_jobs().tolist()
        if not slots:
            return []
        rows = self.store.jobs_by_id([self.job_of[slot] for slot in slots])
        out = []
        for slot in slots:
            job_id = self.job_of[slot]
            nodes, _ = self.kernel.job_allocation(slot)
            node = int(nodes[0])
            row = rows[job_id]
            run = self._place(job_id, slot, node, now_f, _new_job(row, ()))
            fields: dict[str, Any] = {
                "start_time": now_f,
                "node": self.node_specs[node].name,
                "reason": "",
            }
            try:
                run.spec = self._launch_spec(run, row)
                fields["stdout"], fields["stderr"] = run.spec.stdout, run.spec.stderr
            except (KeyError, ValueError) as exc:
                self._launch_failures.append((job_id, f"bad command or paths: {exc}"))
            self.running[job_id] = run
            self._log.append((now, "start", job_id, json.dumps({"node": node})))
            self._changes.append(
                StateChange(job_id, "running", f"started on {self.node_specs[node].name}", fields)
            )
            self._arm_timers(run)
            self.metrics.started.inc()
            self.metrics.wait.observe(max(now_f - float(row["submit_time"]), 0.0))
            if run.spec is not None:
                out.append(run)
        return out

    # ------------------------------------------------------------------ timers

    def _arm_timers(self, run: Running) -> None:
        end = run.start + run.walltime_s
        if run.signal and run.signal_before_s > 0:
            self._push_timer(end - run.signal_before_s, "signal", run)
        self._push_timer(end, "term", run)

    def _push_timer(self, due: float, kind: str, run: Running) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, _Timer(due, self._timer_seq, kind, run))

    def _fire_timers(self, now_f: float) -> None:
        while self._timers and self._timers[0].due <= now_f:
            timer = heapq.heappop(self._timers)
            run = timer.run
            if self.running.get(run.job_id) is not run:
                continue  # it ended already
            if timer.kind == "signal":
                self.executor.signal(run.job_id, run.signal)
            elif timer.kind == "term":
                if not run.phase:
                    run.phase = "timeout"
                self.executor.signal(run.job_id, signals.SIGTERM)
                self._push_timer(now_f + self.config.kill_grace_s, "kill", run)
            else:
                self.executor.signal(run.job_id, signals.SIGKILL)

    # ------------------------------------------------------------------ exits

    def _on_exit(self, exit: JobExit) -> None:
        """Called by the executor's threads: hand the exit to the loop."""
        self._commands.put(_Command("exit", (exit,)))

    def _apply_exit(self, exit: JobExit, now: int) -> None:
        run = self.running.pop(exit.job_id, None)
        if run is None:
            return
        self.free_cores[run.node].extend(run.cores)
        self.free_cores[run.node].sort()
        if run.phase == "cancelling":
            state, cause = "cancelled", "cancelled while running"
        elif run.phase == "timeout":
            state, cause = "timeout", f"killed at its walltime ({run.walltime_s} s)"
        elif exit.exit_code == 0:
            state, cause = "completed", "exited 0"
        elif exit.exit_code < 0:
            state, cause = "failed", "ended while the agent was down; exit code unknown"
        else:
            state, cause = (
                "failed",
                f"exited {exit.exit_code}" + (f" (signal {exit.signal})" if exit.signal else ""),
            )
        ok = state == "completed"
        self.kernel.finish(run.slot, now, int(ok))
        done = {"ok": int(ok)} | ({"cancelled": 1} if state == "cancelled" else {})
        self._log.append((now, "finish", run.job_id, json.dumps(done)))
        rss = max(exit.max_rss_mib, run.peak_rss_mib)
        fields: dict[str, Any] = {"end_time": exit.end_time, "exit_code": exit.exit_code}
        if exit.cpu_time_s >= 0:
            fields["cpu_time_s"] = exit.cpu_time_s
            self.metrics.job_cpu.labels(run.user).inc(exit.cpu_time_s)
        if rss >= 0:
            fields["max_rss_mib"] = rss
            self.metrics.job_rss.observe(rss)
        self._changes.append(StateChange(run.job_id, state, cause, fields))
        self._recorded_exits.append(run.job_id)
        self._ended.add(run.job_id)
        self.metrics.finished.labels(state).inc()
        self._dirty = True
        if not ok:
            self._cascade(run.job_id, now)

    def _end_failed_launch(self, job_id: int, why: str, now: int) -> None:
        run = self.running.pop(job_id, None)
        if run is None:
            return
        self.free_cores[run.node].extend(run.cores)
        self.kernel.finish(run.slot, now, 0)
        self._log.append((now, "finish", job_id, json.dumps({"ok": 0})))
        self._changes.append(
            StateChange(job_id, "failed", f"could not start: {why}", {"end_time": self._now_f})
        )
        self.metrics.finished.labels("failed").inc()
        self._dirty = True
        self._cascade(job_id, now)

    def _cascade(self, job_id: int, now: int) -> None:
        """Dependents the kernel cancelled because ``job_id`` ended as they exclude."""
        todo = list(self.children.get(job_id, ()))
        while todo:
            child = todo.pop()
            slot = self.slot_of.get(child)
            if slot is None or self.kernel.state_of(slot) != JobState["CANCELLED"]:
                continue
            if child in self._ended:
                continue
            self._record_dependency_cancel(child, now)
            todo.extend(self.children.get(child, ()))

    def _record_dependency_cancel(self, job_id: int, now: int) -> None:
        self._ended.add(job_id)
        self._changes.append(
            StateChange(
                job_id,
                "cancelled",
                "a dependency can never be satisfied",
                {"end_time": self._now_f, "reason": "DependencyNeverSatisfied"},
            )
        )
        self.metrics.finished.labels("cancelled").inc()

    # ------------------------------------------------------------------ launch

    def _place(self, job_id: int, slot: int, node: int, start: float, job: NewJob) -> Running:
        """The record of a job running on ``node`` since ``start``, with its cores
        taken from the node's free ones (for pinning)."""
        return Running(
            job_id=job_id,
            slot=slot,
            node=node,
            cores=[self.free_cores[node].pop(0) for _ in range(job.cores)],
            start=start,
            walltime_s=job.walltime_s,
            signal=_signal_number(job.signal) if job.signal else 0,
            signal_before_s=job.signal_before_s,
            user=job.user,
        )

    def _launch_spec(self, run: Running, row: dict[str, Any]) -> LaunchSpec:
        """What the executor needs to start the job: placeholders expanded, the
        environment (the agent's basic variables, the job's, HTCSIM_*), logs, CPUs."""
        node = self.node_specs[run.node]
        index = "" if row["array_index"] is None else str(row["array_index"])
        values = {
            "id": str(run.job_id),
            "index": index,
            "array_id": "" if row["array_id"] is None else str(row["array_id"]),
        }
        env = dict(self._base_env)
        env.update(row["env"])
        env.update(
            HTCSIM_JOB_ID=values["id"],
            HTCSIM_ARRAY_INDEX=index,
            HTCSIM_ARRAY_ID=values["array_id"],
            HTCSIM_NODE=node.name,
            HTCSIM_CORES=str(row["cores"]),
        )
        return LaunchSpec(
            job_id=run.job_id,
            argv=[_expand(a, values) for a in row["command"]],
            cwd=row["cwd"],
            env=env,
            stdout=_log_path(row["stdout"] or "htcsim-{id}.out", row["cwd"], values),
            stderr=_log_path(row["stderr"] or "htcsim-{id}.err", row["cwd"], values),
            cpus=tuple(sorted({node.cpus[c % len(node.cpus)] for c in run.cores}))
            if node.cpus
            else (),
            mem_limit_mib=int(row["mem_mib"]),
            node=node.address,
        )

    def _launch(self, runs: list[Running]) -> None:
        """Start the processes of a pass (one message to the shepherd)."""
        specs = [run.spec for run in runs if run.spec is not None]
        try:
            results = self.executor.launch_many(specs)
        except (LaunchError, OSError) as exc:
            self._launch_failures.extend((spec.job_id, str(exc)) for spec in specs)
            return
        for spec, result in zip(specs, results, strict=True):
            if isinstance(result, LaunchError):
                self._launch_failures.append((spec.job_id, str(result)))
            else:
                run = self.running.get(spec.job_id)
                if run is not None:
                    run.pid = result
                self._pids.append((result, spec.job_id))

    # ------------------------------------------------------------------ sampling

    def _sample(self, now_f: float) -> None:
        self._next_sample = now_f + self.config.sample_interval_s
        rows = []
        for spec in self.node_specs:
            cpu, mem = node_usage(spec.cpus)
            rows.append((now_f, spec.name, cpu, mem))
            self.metrics.node_cpu.labels(spec.name).set(cpu)
            self.metrics.node_mem.labels(spec.name).set(mem)
        pids = {r.job_id: r.pid for r in list(self.running.values()) if r.pid}
        for job_id, (_, rss) in job_usage(pids).items():
            run = self.running.get(job_id)
            if run is not None:
                run.peak_rss_mib = max(run.peak_rss_mib, rss)
        self.store.add_node_samples(rows)

    # ------------------------------------------------------------------ command handlers

    def _account(self, user: str, group: str) -> tuple[int, int]:
        new = False
        if user not in self.users:
            self.users[user] = len(self.users)
            new = True
        if group not in self.groups:
            self.groups[group] = len(self.groups)
            new = True
        if new:
            self.kernel.set_account_names(list(self.users), list(self.groups))
            self._log.append(
                (
                    int(self.clock()),
                    "accounts",
                    None,
                    json.dumps({"users": list(self.users), "groups": list(self.groups)}),
                )
            )
        return self.users[user], self.groups[group]

    def _specs(self, jobs: Sequence[NewJob]) -> np.ndarray:
        specs = np.zeros(len(jobs), dtype=JOB_SPEC_DTYPE)
        qos_index = {q.name: k for k, q in enumerate(self.policy.qos)}
        for k, job in enumerate(jobs):
            if job.qos and job.qos not in qos_index:
                known = ", ".join(qos_index) or "none defined"
                raise EngineError(f"unknown qos {job.qos!r} (known: {known})", field="qos")
            specs[k]["job_id"] = k
            specs[k]["walltime_s"] = job.walltime_s
            specs[k]["n_tasks"] = 1
            specs[k]["per_task"][:3] = (job.cores, job.mem_mib, job.gpus)
            specs[k]["qos_idx"] = qos_index.get(job.qos, -1)
            specs[k]["user_idx"] = -1
            specs[k]["group_idx"] = -1
        try:
            self.kernel._validate(specs)
        except KernelInputError as exc:
            k = exc.row if exc.row is not None else 0
            who = "" if len(jobs) == 1 else f"job {k} of the request: "
            if exc.resource is None:
                raise EngineError(f"{who}{exc}", field="resources") from exc
            asked = int(specs[k]["per_task"][RESOURCES.index(exc.resource)])
            most = int(self.kernel.capacity[:, RESOURCES.index(exc.resource)].max())
            raise EngineError(
                f"{who}{exc.resource}: {asked} asked, more than any node of the cluster has "
                f"(at most {most}; a job runs on one node)",
                field=exc.resource,
            ) from exc
        return specs

    def _do_submit(
        self, now: int, principal: Principal, jobs: list[NewJob], workflow: str | None
    ) -> list[int]:
        if not jobs:
            raise EngineError("no job in the request", field="jobs")
        specs = self._specs(jobs)
        local = [(c, p) for c, job in enumerate(jobs) for p, _, _ in job.after]
        for child, parent in local:
            if not 0 <= parent < len(jobs) or parent == child:
                raise EngineError(
                    f"job {child} of the request depends on batch index {parent}", field="after"
                )
        if local:
            try:
                check_acyclic(
                    np.array([c for c, _ in local]), np.array([p for _, p in local]), len(jobs)
                )
            except KernelInputError as exc:
                raise EngineError(
                    str(exc).replace("job slots", "jobs of the request"), field="after"
                ) from exc
        parents = {p for job in jobs for p, _, _ in job.depends_on}
        states = self.store.states_of(sorted(parents))
        for p in parents:
            if p not in states:
                raise EngineError(f"dependency on unknown job {p}", field="depends_on")
        ids = self.store.add_jobs(jobs, now=self._now_f, workflow=workflow)
        self._admit(ids, jobs, specs, states, now)
        self.metrics.submitted.inc(len(ids))
        return ids

    def _admit(
        self,
        ids: list[int],
        jobs: Sequence[NewJob],
        specs: np.ndarray,
        parent_states: dict[int, str],
        now: int,
        *,
        submit: bool = True,
    ) -> set[int]:
        """Hand accepted jobs to the kernel (dependencies included) and log it;
        the jobs whose dependency on an earlier job can never be met are
        returned (and cancelled when ``submit``)."""
        for k, job in enumerate(jobs):
            specs[k]["job_id"] = ids[k]
            specs[k]["submit_s"] = now
            specs[k]["user_idx"], specs[k]["group_idx"] = self._account(job.user, job.group)
        first = self.kernel.add_jobs(specs)
        for k, job_id in enumerate(ids):
            self.slot_of[job_id] = first + k
            self.job_of.append(job_id)
        self._log.extend(
            (
                now,
                "add",
                job_id,
                json.dumps(
                    {
                        "cores": job.cores,
                        "mem_mib": job.mem_mib,
                        "gpus": job.gpus,
                        "walltime_s": job.walltime_s,
                        "user": int(specs[k]["user_idx"]),
                        "group": int(specs[k]["group_idx"]),
                        "qos": int(specs[k]["qos_idx"]),
                    }
                ),
            )
            for k, (job_id, job) in enumerate(zip(ids, jobs, strict=True))
        )
        child, parent, kind, delay, doomed = [], [], [], [], set()
        for k, job in enumerate(jobs):
            edges = list(job.depends_on) + [(ids[p], kd, d) for p, kd, d in job.after]
            for p, kd, d in edges:
                self.children.setdefault(p, []).append(ids[k])
                if p in self.slot_of:  # the kernel knows the parent, ended or not
                    child.append(self.slot_of[ids[k]])
                    parent.append(self.slot_of[p])
                    kind.append(DEPENDENCY_KINDS[kd])
                    delay.append(d)
                elif not _edge_met(kd, parent_states.get(p, "")):
                    doomed.add(ids[k])
        if child:
            self.kernel.add_dependencies(
                np.array(child), np.array(parent), np.array(kind, dtype=np.int32), np.array(delay)
            )
            self._log.append(
                (
                    now,
                    "deps",
                    None,
                    json.dumps(
                        [
                            [self.job_of[c], self.job_of[p], k, d]
                            for c, p, k, d in zip(child, parent, kind, delay, strict=True)
                        ]
                    ),
                )
            )
        if not submit:
            return doomed
        for k, job_id in enumerate(ids):
            if job_id in doomed:
                self._cancel_pending(job_id, now, "a dependency can never be satisfied")
                continue
            self.kernel.submit(self.slot_of[job_id], now)
            self._log.append((now, "submit", job_id, "{}"))
            if self.kernel.state_of(self.slot_of[job_id]) == JobState["CANCELLED"]:
                # its parent, known to the kernel, already ended as the edge excludes
                self._record_dependency_cancel(job_id, now)
                continue
            if jobs[k].hold:
                self.kernel.hold(self.slot_of[job_id])
                self._log.append((now, "hold", job_id, "{}"))
        self._dirty = True
        return doomed

    def _owned(self, principal: Principal, job_id: int) -> dict[str, Any]:
        try:
            row = self.store.job(job_id)
        except KeyError:
            raise EngineError(f"no job {job_id}", status=404, field="job_id") from None
        if not principal.is_admin and row["user"] != principal.user:
            raise EngineError(f"no job {job_id}", status=404, field="job_id")
        return row

    def _cancel_pending(self, job_id: int, now: int, cause: str) -> None:
        slot = self.slot_of[job_id]
        self.kernel.cancel(slot, now)
        self._log.append((now, "cancel", job_id, "{}"))
        self._ended.add(job_id)
        self._changes.append(StateChange(job_id, "cancelled", cause, {"end_time": self._now_f}))
        self.metrics.finished.labels("cancelled").inc()
        self._dirty = True
        self._cascade(job_id, now)

    def _do_cancel(self, now: int, principal: Principal, job_ids: list[int]) -> list[int]:
        rows = [self._owned(principal, j) for j in job_ids]
        for row in rows:  # all checked before any is cancelled
            if row["id"] not in self.running and (
                row["state"] in FINAL_STATES or row["id"] in self._ended
            ):
                raise EngineError(f"job {row['id']} already ended ({row['state']})", status=409)
        done = []
        for row in rows:
            job_id = row["id"]
            run = self.running.get(job_id)
            if run is not None:
                if run.phase != "cancelling":
                    run.phase = "cancelling"
                    self.executor.signal(job_id, signals.SIGTERM)
                    self._push_timer(self.clock() + self.config.kill_grace_s, "kill", run)
                    self.store.update(job_id, reason=f"cancelled by {principal.user}")
                done.append(job_id)
            else:
                self._cancel_pending(job_id, now, f"cancelled by {principal.user}")
                done.append(job_id)
        return done

    def _do_hold(self, now: int, principal: Principal, job_ids: list[int]) -> list[int]:
        for job_id in job_ids:  # all checked before any is held
            row = self._owned(principal, job_id)
            slot = self.slot_of.get(job_id)
            if slot is None or self.kernel.state_of(slot) != JobState["PENDING"]:
                waits = slot is not None and self.kernel.state_of(slot) == JobState["HELD"]
                raise EngineError(
                    f"job {job_id} is not pending ({row['state']}"
                    + (", waiting for a dependency" if waits else "")
                    + "): only a pending job can be held",
                    status=409,
                )
        for job_id in job_ids:
            slot = self.slot_of[job_id]
            self.kernel.hold(slot)
            self._log.append((now, "hold", job_id, "{}"))
            self._changes.append(
                StateChange(job_id, "held", f"held by {principal.user}", {"reason": "Held"})
            )
        self._dirty = True
        return job_ids

    def _do_release(self, now: int, principal: Principal, job_ids: list[int]) -> list[int]:
        for job_id in job_ids:  # all checked before any is released
            row = self._owned(principal, job_id)
            if job_id not in self.slot_of or row["state"] != "held":
                raise EngineError(f"job {job_id} is not held ({row['state']})", status=409)
        for job_id in job_ids:
            slot = self.slot_of[job_id]
            self.kernel.release(slot, now)
            self._log.append((now, "release", job_id, "{}"))
            self._changes.append(
                StateChange(job_id, "pending", f"released by {principal.user}", {"reason": ""})
            )
        self._dirty = True
        return job_ids

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

    def _do_policy(self, now: int, principal: Principal, policy: Policy, note: str) -> int:
        if self.pool is not None and _autoscale_knobs(policy) != _autoscale_knobs(self.policy):
            raise EngineError(
                "the [autoscale] section applies from the agent's start: restart the agent "
                "with the new policy to change it",
                status=409,
                field="autoscale",
            )
        text = policy_to_toml(policy)
        self.kernel.configure(policy)
        self.kernel.set_account_names(list(self.users), list(self.groups))
        self.policy = policy
        self._log.append((now, "policy", None, json.dumps({"toml": text})))
        self._dirty = True
        return self.store.audit_policy(principal.user, text, note)

    # ------------------------------------------------------------------ restart

    def _recover(self) -> None:
        """Rebuild the kernel from the store; reconcile the jobs it says are running.

        A running job whose process still runs is re-adopted where it runs;
        one whose exit the executor recorded while the agent was down ends
        with that exit; one that left no trace is requeued or ended
        ``node_fail`` as the policy's ``on_node_failure`` says.
        """
        self._now_f = self.clock()
        running = [r["id"] for r in self.store.unfinished() if r["state"] == "running"]
        found = {r.job_id: r for r in self.executor.recover(running)}
        self._rebuild(found, "its process was gone when the agent restarted")

    def _do_nodes(self, now: int, nodes: list[NodeSpec]) -> list[str]:
        """The node inventory changed (Dask workers came or went): jobs of a lost
        node are requeued (or end ``node_fail``) by the policy, and the kernel is
        rebuilt on the new nodes with every job it held (running ones adopted
        where they run). Returns the names of the lost nodes. With a cluster
        manager's pool the slots stay and the workers move (``_do_pool``)."""
        if self.pool is not None:
            return self._do_pool(now, nodes)
        old = {n.name: n for n in self.node_specs}
        new = {n.name: n for n in nodes}
        lost = [
            name for name, n in old.items() if name not in new or new[name].address != n.address
        ]
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
        where = ", ".join(lost)
        self._rebuild(found, f"node {where} was lost" if lost else "node lost")
        log.info("nodes now: %s (lost: %s)", ", ".join(new) or "none", where or "none")
        return lost

    # ------------------------------------------------------------------ a cluster manager's pool

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
                self._cascade(job_id, now)
        self.free_cores[k] = list(range(self.node_specs[k].cores))

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

    def _rebuild(self, found: dict[int, Recovered], lost_cause: str) -> None:
        """A new kernel on ``self.node_specs`` holding every unfinished job of the
        store: those ``found`` running are adopted where they run (or end, if
        ``found`` says they exited), other running ones are lost."""
        now_f = self._now_f
        now = int(now_f)
        previous = self.running
        self.kernel = self._new_kernel(self.policy)
        self.slot_of, self.job_of, self.children, self.running = {}, [], {}, {}
        self.users, self.groups = {}, {}
        self.free_cores = [list(range(n.cores)) for n in self.node_specs]
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
            change = _lost_run(row["id"], int(row["requeues"]), requeued, lost_cause, now_f)
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
                    self._cancel_pending(job_id, now, "a dependency can never be satisfied")
                    continue
                rec = found.get(job_id)
                if row["state"] == "running" and rec is not None:
                    node = self.node_index[row["node"]]
                    start = int(row["start_time"])
                    self.kernel.adopt(slot, start, np.array([node]), np.array([1]))
                    self._log.append(
                        (now, "adopt", job_id, json.dumps({"node": node, "start": start}))
                    )
                    run = self._place(job_id, slot, node, float(row["start_time"]), job)
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


_NODE_NAMES = ("idle", "mixed", "allocated", "draining", "drained", "down", "booting", "off")


def node_type(name: str) -> str:
    """A node's type by its name: the name without its trailing number
    (a Dask worker ``--name gpu-3`` is of type ``gpu``; ``node0`` of ``node``)."""
    return re.sub(r"[-_.]?\d+$", "", name) or "worker"


def _node_state_name(state: NodeState, free_cores: int, cores: int, pooled: bool = False) -> str:
    if state == NodeState["UP"]:
        return "idle" if free_cores == cores else "allocated" if free_cores == 0 else "mixed"
    return {
        NodeState["DRAINING"]: "draining",
        NodeState["OFF"]: "off" if pooled else "drained",
        NodeState["DOWN"]: "down",
        NodeState["BOOTING"]: "booting",
    }[state]


def _lost_run(job_id: int, requeues: int, requeued: bool, cause: str, now_f: float) -> StateChange:
    """The record of a running job whose node was lost: back in the queue
    (``requeued``, by the policy's ``[failures]``), or ended ``node_fail``."""
    if requeued:
        fields_ = {"requeues": requeues + 1, "start_time": None, "node": None, "reason": ""}
        return StateChange(job_id, "pending", f"requeued: {cause}", fields_)
    return StateChange(job_id, "node_fail", cause, {"end_time": now_f})


def _autoscale_knobs(policy: Policy) -> tuple[Any, ...]:
    return tuple(getattr(policy, f.name) for f in fields(policy) if f.name.startswith("autoscale"))


def _edge_met(kind: str, parent_state: str) -> bool:
    """Whether a dependency on a job that already ended is satisfied."""
    if kind == "afterany":
        return True
    if kind == "afterok":
        return parent_state == "completed"
    return parent_state in ("failed", "cancelled", "timeout", "node_fail")


def _expand(text: str, values: dict[str, str]) -> str:
    """``{id}``, ``{index}``, ``{array_id}`` in a command or path; other braces stay."""
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _log_path(pattern: str, cwd: str, values: dict[str, str]) -> str:
    path = _expand(pattern, values)
    return path if os.path.isabs(path) else os.path.join(cwd, path)


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
