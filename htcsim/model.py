"""The shared domain: a workload as columns, a machine, and what loading changed.

A workload crosses every layer as one NumPy structured array (``JOB_DTYPE``):
one row per job, no Python object per job. Readers (SWF, generators, later
accounting imports) produce it; the simulator and the kernel consume it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

UNKNOWN = -1
"""SWF's marker for "not known"; kept in integer columns with the same meaning."""

JOB_DTYPE = np.dtype(
    [
        ("job_id", np.int64),  # identity from the source (SWF field 1); not a position
        ("submit_s", np.int64),  # submit time, seconds from the workload's origin
        ("run_s", np.int64),  # run time as recorded (>= 0); the simulator caps it at walltime_s
        ("walltime_s", np.int64),  # requested time (the kill limit and reservation length)
        ("n_tasks", np.int32),  # task count; SWF: processors
        ("cores_per_task", np.int32),
        ("mem_mib_per_task", np.int64),  # 0 when not requested
        ("gpus_per_task", np.int32),
        ("user_id", np.int32),  # SWF field 12, -1 unknown
        ("group_id", np.int32),  # SWF field 13
        ("executable_id", np.int32),  # SWF field 14
        ("queue_id", np.int32),  # SWF field 15 (maps to a QoS later)
        ("partition_id", np.int32),  # SWF field 16
        ("status", np.int8),  # SWF field 11: 1 completed, 0 failed, 5 cancelled, -1 unknown
        ("preceding_job_id", np.int64),  # SWF field 17, -1 none
        ("think_time_s", np.int64),  # SWF field 18, -1 none
        ("recorded_wait_s", np.int64),  # SWF field 3 as logged, -1 unknown
        ("recorded_alloc", np.int32),  # SWF field 5 as logged, -1 unknown
        ("avg_cpu_s", np.float64),  # SWF field 6, -1 unknown
        ("used_mem_kib", np.float64),  # SWF field 7 (KB per processor), -1 unknown
    ]
)


@dataclass(frozen=True)
class Machine:
    """The machine a log describes: identical nodes (``htcsim.cluster`` describes others).

    SWF traces give a processor count (MaxProcs) and a node count (MaxNodes);
    the machine keeps both so a replay is a pool of ``total_cores`` processors
    spread over ``n_nodes`` nodes, and a job of P processors is P one-core tasks.
    """

    n_nodes: int
    cores_per_node: int
    mem_mib_per_node: int = 0
    gpus_per_node: int = 0

    def __post_init__(self) -> None:
        if self.n_nodes <= 0:
            raise ValueError(f"a machine needs at least one node, got n_nodes={self.n_nodes}")
        if self.cores_per_node <= 0:
            raise ValueError(f"cores_per_node must be positive, got {self.cores_per_node}")

    @property
    def total_cores(self) -> int:
        return self.n_nodes * self.cores_per_node

    @classmethod
    def from_procs(cls, max_procs: int, max_nodes: int | None = None) -> Machine:
        """Spread ``max_procs`` processors over ``max_nodes`` nodes when it divides evenly.

        KTH (100 procs, 100 nodes) becomes 100 one-core nodes; SDSC-BLUE (1152 procs,
        144 nodes) 144 eight-core nodes; a count that does not divide (CTC: 338 nodes,
        MaxProcs 338) falls back to one-core nodes, which for one-core tasks is the
        same pool of processors.
        """
        if max_procs <= 0:
            raise ValueError(f"machine size must be positive, got {max_procs} processors")
        if max_nodes and max_nodes > 0 and max_procs % max_nodes == 0:
            return cls(n_nodes=max_nodes, cores_per_node=max_procs // max_nodes)
        return cls(n_nodes=max_procs, cores_per_node=1)


@dataclass(frozen=True)
class Workload:
    """Jobs sorted by submit time, the machine they ran on, and an account of loading.

    ``dropped`` counts jobs left out by reason (never silently); ``changed`` counts
    jobs kept but altered by a convention (e.g. requested time missing -> run time).
    """

    name: str
    jobs: np.ndarray  # JOB_DTYPE, sorted by (submit_s, job_id)
    machine: Machine
    unix_start_time: int | None = None
    header: dict[str, str] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)
    changed: Counter[str] = field(default_factory=Counter)
    skipped_lines: int = 0

    def __post_init__(self) -> None:
        if self.jobs.dtype != JOB_DTYPE:
            raise TypeError(f"workload jobs must have JOB_DTYPE, got {self.jobs.dtype}")

    def __len__(self) -> int:
        return int(self.jobs.shape[0])


def _unknown_row() -> np.ndarray:
    row = np.zeros(1, dtype=JOB_DTYPE)
    for name in (
        "user_id",
        "group_id",
        "executable_id",
        "queue_id",
        "partition_id",
        "status",
        "preceding_job_id",
        "think_time_s",
        "recorded_wait_s",
        "recorded_alloc",
        "avg_cpu_s",
        "used_mem_kib",
    ):
        row[name] = UNKNOWN
    row["cores_per_task"] = 1
    return row


_UNKNOWN_ROW = _unknown_row()


def empty_jobs(n: int, **constants: float) -> np.ndarray:
    """A job table of ``n`` rows: unknown markers, one core per task, ``constants`` set.

    Built by repeating one template row: for millions of rows several times
    faster than filling a wide structured array column by column.
    """
    template = _UNKNOWN_ROW.copy()
    for name, value in constants.items():
        template[name] = value
    return np.repeat(template, n)
