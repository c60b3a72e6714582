"""The engine's state and the small types its parts share.

``Engine`` (``loop.py``) is one object assembled from one mixin per
responsibility: ``admission``, ``recovery``, ``inventory``, ``launch``. They
all read and change the same state, which ``EngineState`` declares here once,
typed, so that each part is type-checked on its own. The few methods one part
calls on another are declared here, abstract, and implemented where they
belong: a part never imports the loop that assembles the parts, and the
modules' imports form no cycle (a part imports another only for a plain
helper, as ``inventory`` imports ``recovery._lost_run``).
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from htcsim.agent.config import AgentConfig, NodeSpec
from htcsim.agent.executors.base import JobExecutor, JobExit, LaunchSpec, Recovered
from htcsim.agent.metrics import AgentMetrics
from htcsim.agent.store.jobs import AgentStore, NewJob, StateChange
from htcsim.kernel import Kernel
from htcsim.policy import Policy

if TYPE_CHECKING:
    from htcsim.agent.executors.dask.cluster_pool import ClusterPool


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
    gpu_ids: list[int] = field(default_factory=list)  # its GPU devices on its node


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


class EngineState(ABC):
    """What every part of the engine reads and changes (``Engine.__init__``
    sets it all), and the methods one part calls on another."""

    config: AgentConfig
    policy: Policy
    pool: ClusterPool | None  # a cluster manager's pool: ``node_specs`` are its slots
    node_specs: list[NodeSpec]
    node_index: dict[str, int]
    store: AgentStore
    metrics: AgentMetrics
    clock: Callable[[], float]
    kernel_lock: threading.RLock
    kernel: Kernel
    executor: JobExecutor
    slot_of: dict[int, int]  # job id -> the kernel's slot
    job_of: list[int]  # the kernel's slot -> job id
    children: dict[int, list[tuple[int, str]]]  # job id -> (dependent, kind) of its dependents
    running: dict[int, Running]
    users: dict[str, int]
    groups: dict[str, int]
    free_cores: list[list[int]]  # per node
    free_gpus: list[list[int]]  # per node: its GPU device indices no running job holds
    gpu_files: dict[int, str]  # this machine's GPU id -> device file (local backend)
    run_as: str  # whose account jobs run as: owner | agent | worker (AgentConfig.jobs_run_as)
    last_pass_s: float
    passes: int
    turns: int  # turns of the loop that took the kernel lock (queue views count them)
    started_at: float
    _now_f: float  # the current turn's time
    _pool_log: dict[str, Any] | None  # the pool's setup, for the restart op
    _commands: queue.SimpleQueue[_Command]
    _timers: list[_Timer]
    _timer_seq: int
    _log: list[tuple[int, str, int | None, str]]
    _changes: list[StateChange]
    _recorded_exits: list[int]  # exits in this turn's commit
    _lost_runs: dict[int, str]  # running jobs whose process the executor lost -> cause
    _pids: list[tuple[int, int]]  # (pid, job) launched since the last commit
    _base_env: dict[str, str]
    _launch_failures: list[tuple[int, str]]
    _ended: set[int]  # ended while this engine ran (no double record)
    _retiring: set[str]  # drained nodes to retire once empty
    _lost: dict[str, tuple[NodeSpec, float]]  # lost Dask nodes listed as down: (spec, when)
    _dirty: bool
    _next_sample: float
    _thread: threading.Thread | None
    _stopping: threading.Event

    # ------------------------------------------------------------------ the turn loop (loop.py)

    @abstractmethod
    def _new_kernel(self, policy: Policy) -> Kernel:
        """A kernel on ``node_specs`` under ``policy`` (a pool's slots configured)."""

    @abstractmethod
    def _arm_timers(self, run: Running) -> None:
        """The walltime's timers of a job that runs."""

    @abstractmethod
    def _push_timer(self, due: float, kind: str, run: Running) -> None:
        """A timer (``signal``, ``term``, ``kill``) for ``run`` at ``due``."""

    @abstractmethod
    def _apply_exit(self, exit: JobExit, now: int) -> None:
        """A job's process ended: its end recorded, the kernel told."""

    # ------------------------------------------------------------------ admission.py

    @abstractmethod
    def _specs(self, jobs: Sequence[NewJob]) -> np.ndarray:
        """The kernel's specs of ``jobs``, validated against the nodes and the policy."""

    @abstractmethod
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
        """Accepted jobs handed to the kernel (see ``Admission._admit``)."""

    @abstractmethod
    def _cancel_pending(self, job_id: int, now: int, cause: str) -> None:
        """A job that does not run cancelled, and its dependents with it."""

    @abstractmethod
    def _cascade(self, job_id: int, now: int, state: str = "cancelled") -> None:
        """The records of the dependents the kernel cancelled when ``job_id`` ended."""

    # ------------------------------------------------------------------ recovery.py

    @abstractmethod
    def _rebuild(
        self,
        found: dict[int, Recovered],
        lost_cause: str,
        causes: dict[int, str] | None = None,
    ) -> None:
        """A new kernel holding every unfinished job of the store (see ``Recovery._rebuild``)."""

    # ------------------------------------------------------------------ launch.py

    @abstractmethod
    def _place(
        self,
        job_id: int,
        slot: int,
        node: int,
        start: float,
        job: NewJob,
        gpu_ids: Sequence[int] | None = None,
    ) -> Running:
        """The record of a job running on ``node``, its cores and GPU devices taken."""

    @abstractmethod
    def _free_devices(self, run: Running) -> None:
        """A job that ended gives its cores and GPU devices back to its node."""
