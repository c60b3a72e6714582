"""What every executor shares: a job to start, how it ended, and the interface the engine drives.

The engine speaks to a backend (local processes through the shepherd, or Dask
workers) only through :class:`JobExecutor` and these records, so a backend can
be swapped without the engine knowing. Only the standard library: the shepherd
and the Dask workers import :func:`exit_record` and must start fast.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one job; the caller has expanded placeholders."""

    job_id: int
    argv: list[str]
    cwd: str
    env: dict[str, str]
    """The complete environment of the job (nothing is inherited from the agent)."""
    stdout: str
    """Absolute path, opened in append mode; its folder must exist."""
    stderr: str
    cpus: tuple[int, ...] = ()
    """Physical CPU ids to pin to; empty: no pinning."""
    mem_limit_mib: int = 0
    """0: no limit."""
    node: str = ""
    """The Dask worker's address (Dask backend; the local executor ignores it)."""
    uid: int = -1
    """The Unix account the job runs as; -1: the runner's own (single-user mode)."""
    gid: int = -1
    """Its primary group; -1 with ``uid``."""
    groups: tuple[int, ...] = ()
    """Its supplementary groups (``os.getgrouplist``), set before the job's exec."""
    deny_devices: tuple[tuple[str, int, int], ...] = ()
    """Device files the job must not open: (``c``/``b``, major, minor) of the
    GPUs of its machine that are not its own (the shepherd's devices cgroup)."""

    def payload(self) -> dict[str, Any]:
        """What a process runner (the shepherd, a Dask worker) needs of the job."""
        payload: dict[str, Any] = {
            "job": self.job_id,
            "argv": self.argv,
            "cwd": self.cwd,
            "env": self.env,
            "stdout": self.stdout,
            "stderr": self.stderr,
        }
        if self.uid >= 0:
            payload.update(uid=self.uid, gid=self.gid, groups=list(self.groups))
        if self.deny_devices:
            payload["deny_devices"] = [list(d) for d in self.deny_devices]
        return payload


@dataclass(frozen=True)
class JobExit:
    """How a job ended, as the engine records it.

    ``exit_code`` follows the shell convention (128+N when killed by signal N);
    -1 means unknown, and then ``lost`` says why.
    """

    job_id: int
    exit_code: int
    signal: int
    """N if the job was killed by signal N, else 0 (from the wait status)."""
    end_time: float
    cpu_time_s: float
    """user+system of the job and its waited children; -1 if unknown."""
    max_rss_mib: float
    """Peak resident set of the largest process of the job (rusage semantics); -1 if unknown."""
    recovered: bool = False
    """Told by the shepherd when the agent reconnected (the job ended while it was down)."""
    lost: str = ""
    """Set when the executor lost the job's process through no fault of the job's
    (its status could not be learned; its processes are gone or were killed):
    the cause. The engine requeues such a job as it does one of a failed node."""


@dataclass(frozen=True)
class Recovered:
    """What an agent restart finds for a job its store says is running."""

    job_id: int
    status: Literal["running", "exited", "lost"]
    pid: int | None
    exit: JobExit | None
    """Set for "exited"."""
    cause: str = ""
    """For "lost": why, when the executor knows."""


class LaunchError(RuntimeError):
    """A job could not be started; the message names the job and the cause."""


class JobExecutor(Protocol):
    """What the engine needs of a backend that runs jobs (local or Dask)."""

    @property
    def memory_limit_mode(self) -> str: ...
    @property
    def memory_limit_note(self) -> str: ...

    def launch_many(self, specs: Sequence[LaunchSpec]) -> list[int | LaunchError]: ...
    def signal(self, job_id: int, sig: int) -> bool: ...
    def running(self) -> dict[int, int]: ...
    def recover(self, job_ids: Sequence[int]) -> list[Recovered]: ...
    def release_many(self, job_ids: Sequence[int]) -> None: ...
    def node_lost(self, address: str) -> list[int]: ...
    def kill_strays(self, address: str) -> None: ...
    def retire(self, address: str) -> None: ...
    def close(self) -> None: ...
    def shutdown(self, *, kill_jobs: bool) -> None: ...


def exit_from_record(record: dict[str, Any], recovered: bool = False) -> JobExit:
    """A JobExit from an ``exit_record`` (the shepherd's or a Dask worker's)."""
    return JobExit(
        job_id=int(record["job"]),
        exit_code=int(record["code"]),
        signal=int(record["signal"]),
        end_time=float(record["end"]),
        cpu_time_s=float(record["cpu"]),
        max_rss_mib=float(record["rss"]),
        recovered=recovered,
        lost=str(record.get("lost") or ""),
    )


def exit_record(
    job_id: int, code: int, sig: int, cpu: float, rss: float, *, lost: str = ""
) -> dict[str, Any]:
    """How a job ended, as the shepherd and the Dask workers report it: exit
    code (shell convention, 128+N for signal N), signal, end time, CPU seconds
    and peak resident MiB (-1: unknown); ``lost``: the cause, when the job's
    process was lost and its status is unknown."""
    record: dict[str, Any] = {
        "op": "exit",
        "job": job_id,
        "code": code,
        "signal": sig,
        "end": time.time(),
        "cpu": cpu,
        "rss": rss,
    }
    if lost:
        record["lost"] = lost
    return record
