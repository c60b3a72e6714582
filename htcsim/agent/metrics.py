"""The agent's Prometheus metrics, in a registry of its own.

Why a registry per agent: tests (and a process hosting a shadow agent) run
several agents in one process; the global default registry would mix them.
Gauges that describe the present (queue by state, node states, utilization)
are set by the scheduling loop after each pass; counters and histograms are
fed as events happen.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from htcsim.agent.store.jobs import JOB_STATES

WAIT_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 7 * 86400)
PASS_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
NODE_STATE_NAMES = ("idle", "allocated", "mixed", "draining", "drained", "down", "booting", "off")

METRIC_NAMES = (
    "htcsim_jobs",
    "htcsim_jobs_submitted_total",
    "htcsim_jobs_started_total",
    "htcsim_jobs_finished_total",
    "htcsim_job_wait_seconds",
    "htcsim_scheduling_pass_seconds",
    "htcsim_nodes",
    "htcsim_cores",
    "htcsim_utilization",
    "htcsim_node_cpu_percent",
    "htcsim_node_memory_used_mib",
    "htcsim_job_cpu_seconds_total",
    "htcsim_job_max_rss_mib",
    "htcsim_shadow_jobs_compared",
    "htcsim_shadow_differences",
    "htcsim_shadow_wait_seconds",
    "htcsim_shadow_lag_seconds",
    "htcsim_shepherd_up",
)
"""Every metric the agent exports (the Grafana dashboard may only use these)."""


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
        self.nodes = Gauge("htcsim_nodes", "Nodes by state", ["state"], registry=r)
        self.cores = Gauge("htcsim_cores", "Cores by use", ["use"], registry=r)
        self.utilization = Gauge(
            "htcsim_utilization", "Allocated cores / cores of usable nodes", registry=r
        )
        self.node_cpu = Gauge(
            "htcsim_node_cpu_percent", "Sampled CPU use of a node", ["node"], registry=r
        )
        self.node_mem = Gauge(
            "htcsim_node_memory_used_mib", "Sampled memory in use on a node", ["node"], registry=r
        )
        self.job_cpu = Counter(
            "htcsim_job_cpu_seconds", "CPU time of ended jobs", ["user"], registry=r
        )
        self.job_rss = Histogram(
            "htcsim_job_max_rss_mib",
            "Peak resident memory of ended jobs",
            buckets=(16, 64, 256, 1024, 4096, 16384, 65536),
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
        for state in JOB_STATES:
            self.jobs.labels(state)
        for state in ("completed", "failed", "cancelled", "timeout", "node_fail"):
            self.finished.labels(state)
        for state in NODE_STATE_NAMES:
            self.nodes.labels(state)

    def render(self) -> bytes:
        return generate_latest(self.registry)
