"""The live agent's scheduling loop: one thread owns the kernel, the store's
writer and the executor; everything else sends it commands.

Why one writer: the kernel's state must change in one order that the
decision log can replay, and SQLite commits are cheapest when many changes
share one. Each turn of the loop takes every command and process exit that
arrived, applies them to the store and the kernel, runs one scheduling pass,
commits all of it at once (one fsync for the whole batch), answers the
callers (an accepted job is durable before its submitter hears of it), and
only then starts the processes the pass chose. API handlers never touch the
kernel's state except through the read-only queries under ``kernel_lock``,
each bounded: the queue's reasons, priorities and start estimates come from
a copy taken under the lock and computed outside it (``queue_view``).

The kernel's clock is the wall clock in whole seconds (Unix time).

``Engine`` is assembled from one mixin per part: ``admission`` (submissions
and the commands on jobs), ``recovery`` (the kernel rebuilt from the store),
``inventory`` (the nodes, a pool's slots, autoscaling), ``launch`` (a started
job's cores and process); ``state`` declares what they share. This module
holds the loop itself: the engine's construction and public API, the turns,
the passes, the walltime's timers, the processes' exits and launches, and
the sampling of usage.
"""

from __future__ import annotations

import getpass
import heapq
import json
import logging
import os
import queue
import signal as signals
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

from htcsim.agent.config import AgentConfig, NodeSpec, gpu_device_files
from htcsim.agent.engine.admission import Admission
from htcsim.agent.engine.health import Health
from htcsim.agent.engine.inventory import (
    _NODE_NAMES,
    Inventory,
    _node_state_name,
    node_type,
    shown_lost,
)
from htcsim.agent.engine.launch import ENV_KEPT, Launch
from htcsim.agent.engine.principal import Principal
from htcsim.agent.engine.queue_view import QueueViews
from htcsim.agent.engine.recovery import Recovery, _new_job
from htcsim.agent.engine.state import EngineError, Running, _Command, _Timer
from htcsim.agent.executors.base import JobExecutor, JobExit, LaunchError
from htcsim.agent.executors.local.executor import LocalExecutor
from htcsim.agent.executors.local.monitor import job_usage, node_usage
from htcsim.agent.metrics import MIB, AgentMetrics, StoredTotals
from htcsim.agent.store.jobs import AgentStore, JobFilter, Keyed, NewJob, StateChange
from htcsim.kernel import RESOURCES, Kernel, NodeState, QueueSnapshot
from htcsim.policy import Policy, policy_to_toml

if TYPE_CHECKING:
    from htcsim.agent.executors.dask.cluster_pool import ClusterPool

__all__ = ["Engine", "EngineError"]

log = logging.getLogger("htcsim.agent")

LINGER_S = 0.005
"""How long a turn waits for more exits after the first (group commit)."""


class Engine(Admission, Recovery, Inventory, Launch, Health):
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
        self.pool = pool
        self.node_specs = list(nodes)
        self.node_index = {n.name: k for k, n in enumerate(self.node_specs)}
        self.store = store or AgentStore(config.db_path)
        self.metrics = metrics or AgentMetrics()
        self.clock = clock
        self.kernel_lock = threading.RLock()
        self._now_f = clock()
        self._pool_log = None
        self.kernel = self._new_kernel(policy)
        self.executor = (
            executor(self._on_exit)
            if executor is not None
            else LocalExecutor(
                config.run_dir,
                self._on_exit,
                config.memory_limit,
                containment=config.containment,
                on_restart=self._on_shepherd_restart,
            )
        )
        self.slot_of = {}
        self.job_of = []
        self.children = {}
        self.running = {}
        self.users = {}
        self.groups = {}
        self.free_cores = [list(range(n.cores)) for n in self.node_specs]
        self.free_gpus = [list(n.devices) for n in self.node_specs]
        # the local nodes are slices of this machine: a job is denied every GPU
        # of the machine that is not its own (a Dask worker's are not here)
        self.gpu_files = (
            gpu_device_files(config, sorted({g for n in self.node_specs for g in n.devices}))
            if config.backend == "local"
            else {}
        )
        self.run_as = config.jobs_run_as()
        self._commands = queue.SimpleQueue()
        self._timers = []
        self._timer_seq = 0
        self._log = []
        self._changes = []
        self._recorded_exits = []
        self._lost_runs = {}
        self._pids = []
        self._base_env = {k: os.environ[k] for k in ENV_KEPT if k in os.environ}
        self._launch_failures = []
        self._ended = set()
        self._retiring = set()
        self._lost = {}
        self._dirty = True
        self._next_sample = 0.0
        self._thread = None
        self._stopping = threading.Event()
        self._shepherd_restarts = 0
        self._shepherd_last_restart = None
        self.last_pass_s = 0.0
        self.passes = 0
        self.turns = 0
        self.started_at = self.clock()
        self.queue_views = QueueViews(self._snapshot_queue, lambda: self.turns, self._estimated)

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

    def start(self) -> None:
        """Reload what the store holds (reconciling processes that survived the
        previous agent), then run the loop in its own thread. The counters start
        at the totals of the store, before recovery ends jobs of its own."""
        submitted, started, finished, cpu = self.store.totals()
        restarts = int(self.store.meta("shepherd_restarts") or 0)
        self.metrics.restore_totals(StoredTotals(submitted, started, finished, cpu, restarts))
        self._shepherd_at_start()
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
        self,
        principal: Principal,
        jobs: Sequence[NewJob],
        workflow: str | None = None,
        *,
        keyed: Keyed | None = None,
        answer: Callable[[list[int]], Any] = list,
    ) -> Future[Any]:
        """Accept jobs (one batch, all or none); the future gives ``answer(ids)``
        once durable (by default the ids). ``keyed``: the request's
        Idempotency-Key, recorded with the answer in the jobs' own transaction;
        a key already recorded for this request gives its recorded answer and
        creates nothing (see ``Admission._do_submit``)."""
        return self._send("submit", principal, list(jobs), workflow, keyed, answer)

    def cancel(self, principal: Principal, job_ids: Sequence[int]) -> Future[Any]:
        return self._send("cancel", principal, list(job_ids))

    def hold(self, principal: Principal, job_ids: Sequence[int]) -> Future[Any]:
        return self._send("hold", principal, list(job_ids))

    def release(self, principal: Principal, job_ids: Sequence[int]) -> Future[Any]:
        return self._send("release", principal, list(job_ids))

    def bulk(
        self, principal: Principal, action: str, job_ids: Sequence[int], where: JobFilter
    ) -> Future[Any]:
        """Cancel, hold or release the named and the filtered jobs in one turn
        (see ``Admission._do_bulk``); the future gives {"ids", "errors"}."""
        return self._send("bulk", principal, action, list(job_ids), where)

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

    def live(
        self, job_ids: Sequence[int], states: Sequence[str], *, estimate: bool = False
    ) -> dict[int, dict[str, Any]]:
        """Reason, priority (and its factors) and estimated start of pending and held
        jobs (``states``: each one's state in the store), from a view of the queue
        that holds the kernel lock only to copy it (see ``queue_view``)."""
        if not job_ids:
            return {}
        return self.queue_views.live(job_ids, states, estimate=estimate)

    def _snapshot_queue(self) -> QueueSnapshot:
        """The queue copied for ``queue_views``: the kernel is held for this only."""
        with self.kernel_lock:
            t0 = time.perf_counter()
            snapshot = self.kernel.snapshot_queue(int(self.clock()))
            held = time.perf_counter() - t0
        self.metrics.queue_snapshot.observe(held)
        return snapshot

    def _estimated(self, seconds: float, turns: int) -> None:
        """One computation of the queue's start estimates, and the loop's turns meanwhile."""
        self.metrics.queue_estimate.observe(seconds)
        self.metrics.queue_estimate_turns.inc(turns)

    def nodes(self) -> list[dict[str, Any]]:
        """Every node: type, state (as sinfo: idle, mixed, allocated, draining,
        drained, down, booting; ``off`` for a pool's slot without a worker),
        capacity, free resources, running jobs, GPU device ids (all, free)."""
        on_node: dict[int, list[int]] = {}
        with self.kernel_lock:
            states = self.kernel.node_states()
            free = self.kernel.free_per_node()
            for run in list(self.running.values()):
                on_node.setdefault(run.node, []).append(run.job_id)
            free_gpus = [list(ids) for ids in self.free_gpus]
            lost = shown_lost(self._lost, self.clock())
        out = []
        pool = self.pool
        for k, spec in enumerate(self.node_specs):
            state = NodeState(int(states[k]))
            capacity = {"cores": spec.cores, "mem_mib": spec.mem_mib, "gpus": spec.gpus}
            free_k = {r: int(free[k][i]) for i, r in enumerate(RESOURCES) if r in capacity}
            worker = pool.workers[k] if pool is not None else None
            name = _node_state_name(state, free_k["cores"], spec.cores, pool is not None)
            if worker is None and spec.name in lost and name == "booting":
                name = "down"  # a pool's slot whose worker was lost, not yet replaced
            out.append(
                {
                    "name": spec.name,
                    "type": pool.config.node_type if pool is not None else node_type(spec),
                    "worker": worker.name if worker is not None else "",
                    "state": name,
                    "capacity": capacity,
                    "free": free_k,
                    "jobs": sorted(on_node.get(k, [])),
                    "cpus": list(spec.cpus),
                    "gpu_ids": list(spec.devices),
                    "free_gpu_ids": free_gpus[k] if k < len(free_gpus) else [],
                    "address": spec.address,
                }
            )
        listed = {spec.name for spec in self.node_specs}
        for spec in (s for s in lost.values() if s.name not in listed):
            capacity = {"cores": spec.cores, "mem_mib": spec.mem_mib, "gpus": spec.gpus}
            out.append(
                {
                    "name": spec.name,
                    "type": node_type(spec),
                    "worker": "",
                    "state": "down",  # a lost Dask worker: gone from the kernel, listed a while
                    "capacity": capacity,
                    "free": dict(capacity),
                    "jobs": [],
                    "cpus": [],
                    "gpu_ids": [],
                    "free_gpu_ids": [],
                    "address": "",
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
            "containment": getattr(self.executor, "containment_mode", "none"),
            "gpu_isolation": self.gpu_isolation_mode(),
            "executor": dict(zip(("ok", "reason"), self.executor_health(), strict=True)),
            "policy": self.policy.label,
            "uptime_s": self.clock() - self.started_at,
        } | ({"pool": self.pool.summary()} if self.pool is not None else {})

    def gpu_isolation_mode(self) -> str:
        """``devices-cgroup-v1`` when jobs are denied other GPUs' device files, else ``off``."""
        on = getattr(self.executor, "devices_mode", "off") == "cgroup-v1" and self.gpu_files
        return "devices-cgroup-v1" if on else "off"

    def gpu_isolation_note(self) -> str:
        """The start line's words on GPU device isolation: how, or why it is off."""
        note = str(getattr(self.executor, "devices_note", "")) or "off: not with this backend"
        if note.startswith("off"):
            return note
        if not self.gpu_files:
            return f"off: no GPU device files known (gpu_device_files, /dev/nvidia<id>); {note}"
        files = ", ".join(f"{g}={f}" for g, f in sorted(self.gpu_files.items()))
        return f"{note} ({files})"

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
        m.shepherd_up.set(1.0 if summary["executor"]["ok"] else 0.0)

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
        # no pass while the executor cannot launch (a restart of the local
        # shepherd): its end sends a command, which wakes the loop
        ready = self._executor_ready()
        if self._launch_failures or self._pids or (self._dirty and ready):
            return 0.0
        if self._timers:
            wait = min(wait, self._timers[0].due - now)
        wakeup = self.kernel.next_wakeup()
        if wakeup >= 0 and ready:
            wait = min(wait, wakeup - now)
        wait = min(wait, self._next_sample - now)
        return max(wait, 0.0)

    def _take(self, wait: float) -> list[_Command]:
        """Every command that arrived, waiting up to ``wait`` for the first.

        Group commit: when the first is a process exit, the loop lingers a
        few milliseconds for more, so that exits trickling in one by one (as
        remote nodes report them) share one commit instead of one fsync each.
        It stops lingering as soon as a command someone waits on arrives (a
        submission, a cancel): nobody waits on an exit, but a caller would
        wait out the linger. Commands that arrive together (concurrent
        submissions) share the turn, and so its one commit, without lingering.
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
                command = self._commands.get_nowait()
            except queue.Empty:
                left = linger_until - time.monotonic()
                if left <= 0:
                    return out
                try:
                    command = self._commands.get(timeout=left)
                except queue.Empty:
                    return out
            out.append(command)
            if command.future is not None:
                linger_until = 0.0

    def _turn(self, commands: list[_Command]) -> None:
        """One turn: apply, schedule, commit, answer, launch."""
        now_f = self._now_f = self.clock()
        now = int(now_f)
        answers: list[tuple[Future[Any], Any]] = []
        to_launch: list[Running] = []
        with self.store.batch():
            with self.kernel_lock:
                self.turns += 1  # (counted once the kernel is ours: see queue_view)
                if self._pids:
                    self.store.set_pids(self._pids)
                    self._pids.clear()
                for command in commands:
                    if command.kind == "exit":
                        self._apply_exit(command.args[0], now)
                    elif command.kind == "shepherd":
                        self._shepherd_restarted(command.args[0])
                if self._lost_runs:
                    self._requeue_lost()
                failures, self._launch_failures = self._launch_failures, []
                for job_id, why in failures:
                    self._end_failed_launch(job_id, why, now)
                for command in commands:
                    if command.kind in ("exit", "shepherd"):
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
        if not self._executor_ready():
            return False  # what the pass starts could not be launched: after the restart
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
                "gpu_ids": run.gpu_ids,
            }
            try:
                run.spec = self._launch_spec(run, row)
                fields["stdout"], fields["stderr"] = run.spec.stdout, run.spec.stderr
            except LaunchError as exc:  # its account is gone or changed
                self._launch_failures.append((job_id, str(exc)))
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
        run = self.running.get(exit.job_id)
        if run is None:
            return
        if (exit.lost or exit.exit_code < 0) and not run.phase:
            # lost through no fault of its own (a shepherd restart could not keep
            # it; its processes are gone): requeued by the policy, after this
            # turn's exits (``_requeue_lost``), never failed
            self._lost_runs[exit.job_id] = exit.lost or "its process was lost"
            self._recorded_exits.append(exit.job_id)
            return
        del self.running[exit.job_id]
        self._free_devices(run)
        if run.phase == "cancelling":
            state, cause = "cancelled", "cancelled while running"
        elif run.phase == "timeout":
            state, cause = "timeout", f"killed at its walltime ({run.walltime_s} s)"
        elif exit.exit_code == 0:
            state, cause = "completed", "exited 0"
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
            self.metrics.job_rss.observe(rss * MIB)
        self._changes.append(StateChange(run.job_id, state, cause, fields))
        self._recorded_exits.append(run.job_id)
        self._ended.add(run.job_id)
        self.metrics.finished.labels(state).inc()
        self._dirty = True
        # every end settles the dependents: afterok ones on a failure, afternotok
        # ones on a success, are cancelled by the kernel and recorded here
        self._cascade(run.job_id, now, state)

    def _end_failed_launch(self, job_id: int, why: str, now: int) -> None:
        run = self.running.pop(job_id, None)
        if run is None:
            return
        self._free_devices(run)
        self.kernel.finish(run.slot, now, 0)
        self._log.append((now, "finish", job_id, json.dumps({"ok": 0})))
        self._changes.append(
            StateChange(job_id, "failed", f"could not start: {why}", {"end_time": self._now_f})
        )
        self.metrics.finished.labels("failed").inc()
        self._dirty = True
        self._cascade(job_id, now, "failed")

    # ------------------------------------------------------------------ launch

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
        pool = self.pool
        present = [  # a pool's slot without a worker has nothing to sample
            spec
            for k, spec in enumerate(self.node_specs)
            if pool is None or pool.workers[k] is not None
        ]
        # a remote backend's nodes: their own figures (those it has), not this machine's
        remote = getattr(self.executor, "node_usage", None)
        figures = remote(present) if remote is not None else None
        if figures is not None:
            present = [spec for spec in present if spec.name in figures]
        self.metrics.keep_nodes(spec.name for spec in present)
        rows = []
        for spec in present:
            cpu, mem = figures[spec.name] if figures is not None else node_usage(spec.cpus)
            rows.append((now_f, spec.name, cpu, mem))
            self.metrics.set_node_usage(spec.name, cpu / 100.0, mem * MIB)
        pids = {r.job_id: r.pid for r in list(self.running.values()) if r.pid}
        for job_id, (_, rss) in job_usage(pids).items():
            run = self.running.get(job_id)
            if run is not None:
                run.peak_rss_mib = max(run.peak_rss_mib, rss)
        with self.store.batch():
            self.store.add_node_samples(rows)
            # housekeeping: the Idempotency-Keys whose time to live is over
            self.store.forget_idempotent(now_f - self.config.idempotency_ttl_s)
