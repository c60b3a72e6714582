"""The agent's Prometheus metrics, in a registry of its own.

Why a registry per agent: tests (and a process hosting a shadow agent) run
several agents in one process; the global default registry would mix them.
Gauges that describe the present (queue by state, node states, utilization)
are set by the scheduling loop after each pass; counters and histograms are
fed as events happen.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from htcsim.agent.store.jobs import JOB_STATES

WAIT_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 7 * 86400)
MIB = 2**20
RSS_BUCKETS = tuple(float(m * MIB) for m in (16, 64, 256, 1024, 4096, 16384, 65536))
"""Peak resident memory buckets, in bytes (16 MiB to 64 GiB)."""
PASS_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
NODE_STATE_NAMES = ("idle", "allocated", "mixed", "draining", "drained", "down", "booting", "off")

METRIC_NAMES = (
    "htcsim_jobs",
    "htcsim_jobs_submitted_total",
    "htcsim_jobs_started_total",
    "htcsim_jobs_finished_total",
    "htcsim_job_wait_seconds",
    "htcsim_scheduling_pass_seconds",
    "htcsim_queue_snapshot_seconds",
    "htcsim_queue_estimate_seconds",
    "htcsim_queue_estimate_loop_turns_total",
    "htcsim_nodes",
    "htcsim_cores",
    "htcsim_utilization",
    "htcsim_node_cpu_ratio",
    "htcsim_node_memory_used_bytes",
    "htcsim_job_cpu_seconds_total",
    "htcsim_job_max_rss_bytes",
    "htcsim_shadow_jobs_compared",
    "htcsim_shadow_differences",
    "htcsim_shadow_wait_seconds",
    "htcsim_shadow_lag_seconds",
    "htcsim_shepherd_up",
    "htcsim_shepherd_restarts_total",
    "htcsim_dask_scheduler_up",
    "htcsim_dask_scheduler_losses_total",
)
"""Every metric the agent exports (the Grafana dashboard may only use these)."""


@dataclass(frozen=True)
class StoredTotals:
    """What the counters had counted before this agent started (from the store)."""

    submitted: int = 0
    started: int = 0
    finished: dict[str, int] = field(default_factory=dict)  # final state -> jobs
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # user -> CPU seconds
    shepherd_restarts: int = 0


class AgentMetrics:
    """The agent's metrics; ``render`` gives the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Gauge("htcsim_jobs", "Jobs known to the agent, by state", ["state"], registry=r)
        self.submitted = Counter("htcsim_jobs_submitted", "Jobs accepted (durable)", registry=r)
        self.started = Counter("htcsim_jobs_started", "Jobs started", registry=r)
        self.finished = Counter(
            "htcsim_jobs_finished", "Jobs ended, by final state", ["state"], registry=r
        )
        self.wait = Histogram(
            "htcsim_job_wait_seconds",
            "Wait from submit to start",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.pass_seconds = Histogram(
            "htcsim_scheduling_pass_seconds",
            "Duration of one kernel scheduling pass",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        # the queue as `queue` and `show` see it (engine/queue_view.py): copied under the
        # kernel lock, its start estimates computed off the scheduling loop
        self.queue_snapshot = Histogram(
            "htcsim_queue_snapshot_seconds",
            "Time the kernel is held to copy the queue for reasons, priorities and estimates",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.queue_estimate = Histogram(
            "htcsim_queue_estimate_seconds",
            "Time to estimate every pending job's start, outside the kernel lock",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.queue_estimate_turns = Counter(
            "htcsim_queue_estimate_loop_turns",
            "Scheduling loop turns that took the kernel lock while start estimates were computed",
            registry=r,
        )
        self.nodes = Gauge("htcsim_nodes", "Nodes by state", ["state"], registry=r)
        self.cores = Gauge("htcsim_cores", "Cores by use", ["use"], registry=r)
        self.utilization = Gauge(
            "htcsim_utilization", "Allocated cores / cores of usable nodes", registry=r
        )
        self.node_cpu = Gauge(
            "htcsim_node_cpu_ratio",
            "Sampled CPU use of a node (0-1: busy share of its CPUs)",
            ["node"],
            registry=r,
        )
        self.node_mem = Gauge(
            "htcsim_node_memory_used_bytes",
            "Sampled memory in use on a node, bytes",
            ["node"],
            registry=r,
        )
        self.job_cpu = Counter(
            "htcsim_job_cpu_seconds", "CPU time of ended jobs", ["user"], registry=r
        )
        self.job_rss = Histogram(
            "htcsim_job_max_rss_bytes",
            "Peak resident memory of ended jobs, bytes",
            buckets=RSS_BUCKETS,
            registry=r,
        )
        # shadow mode (--shadow-policy): the candidate policy's twin against the live one
        self.shadow_compared = Gauge(
            "htcsim_shadow_jobs_compared",
            "Jobs both the active and the shadow policy have started",
            registry=r,
        )
        self.shadow_differences = Gauge(
            "htcsim_shadow_differences",
            "Compared jobs the shadow policy started at another time or on another node",
            registry=r,
        )
        self.shadow_wait = Histogram(
            "htcsim_shadow_wait_seconds",
            "Simulated wait from submit to start under the shadow policy",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.shadow_lag = Gauge(
            "htcsim_shadow_lag_seconds",
            "How far the shadow policy's decided horizon is behind the present",
            registry=r,
        )
        self.shepherd_up = Gauge(
            "htcsim_shepherd_up",
            "1 if the executor can run jobs (the shepherd reachable and this agent's), else 0",
            registry=r,
        )
        self.shepherd_restarts = Counter(
            "htcsim_shepherd_restarts",
            "Restarts of the local shepherd (its worker died or hung, or a new one "
            "replaced a killed one); running jobs are adopted or requeued, never failed",
            registry=r,
        )
        self.dask_scheduler_up = Gauge(
            "htcsim_dask_scheduler_up",
            "1 while the agent is connected to the Dask scheduler it was given, 0 while "
            "that connection is lost and being made again (absent on other backends)",
            ["scheduler"],
            registry=r,
        )
        self.dask_scheduler_losses = Counter(
            "htcsim_dask_scheduler_losses",
            "Times the connection to the Dask scheduler was lost (closed, or no answer "
            "within heartbeat_timeout_s); every node is lost then, its jobs requeued once fenced",
            registry=r,
        )
        self.pool_replaced = Counter(
            "htcsim_pool_boots_replaced",
            "Workers of a cluster manager's pool given up and asked for again: job_ended "
            "(the worker left and its batch job or pod ended), boot_timeout (no worker "
            "within [cluster] boot_timeout_s)",
            ["reason"],
            registry=r,
        )
        for reason in ("job_ended", "boot_timeout"):
            self.pool_replaced.labels(reason)
        for state in JOB_STATES:
            self.jobs.labels(state)
        for state in ("completed", "failed", "cancelled", "timeout", "node_fail"):
            self.finished.labels(state)
        for state in NODE_STATE_NAMES:
            self.nodes.labels(state)

        self._node_names: set[str] = set()
        self._restored = False

    def restore_totals(self, totals: StoredTotals) -> None:
        """Start the counters at what the store says happened before this agent
        (once: a second call is ignored), so that a restart does not reset them
        (Prometheus' ``rate`` would read a reset as a restart, not a loss, but
        ``htcsim_jobs_submitted_total`` itself would lie)."""
        if self._restored:
            return
        self._restored = True
        if totals.submitted:
            self.submitted.inc(totals.submitted)
        if totals.started:
            self.started.inc(totals.started)
        for state, n in totals.finished.items():
            if n:
                self.finished.labels(state).inc(n)
        for user, seconds in totals.cpu_seconds.items():
            if seconds > 0:
                self.job_cpu.labels(user).inc(seconds)
        if totals.shepherd_restarts:
            self.shepherd_restarts.inc(totals.shepherd_restarts)

    def dask_scheduler_changed(self, scheduler: str, connected: bool) -> None:
        """The connection to the Dask ``scheduler`` was lost (False), or made
        (again)."""
        self.dask_scheduler_up.labels(scheduler).set(1 if connected else 0)
        if not connected:
            self.dask_scheduler_losses.inc()

    def set_node_usage(self, node: str, cpu_ratio: float, memory_bytes: float) -> None:
        """The sampled use of one node (CPU as 0-1, memory in bytes)."""
        self.node_cpu.labels(node).set(cpu_ratio)
        self.node_mem.labels(node).set(memory_bytes)
        self._node_names.add(node)

    def keep_nodes(self, names: Iterable[str]) -> None:
        """Stop exporting the per-node series of every node not in ``names``
        (a node that left the inventory must not stay with frozen values)."""
        keep = set(names)
        for gone in self._node_names - keep:
            for gauge in (self.node_cpu, self.node_mem):
                with suppress(KeyError):
                    gauge.remove(gone)
        self._node_names &= keep

    def render(self) -> bytes:
        return generate_latest(self.registry)
