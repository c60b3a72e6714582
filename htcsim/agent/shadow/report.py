"""The shadow twin's comparison with the live agent: which jobs both policies
started, where they differ, and the waits under each.

Why a tally kept as facts arrive: a job is compared once both starts are
known and final (the live start when the log records it, the twin's once its
horizon has passed it); counting then, rather than rescanning every job at
each report, keeps a refresh cheap however long the agent has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from htcsim.agent.shadow.log import ShadowJob


@dataclass(frozen=True)
class Comparison:
    """One job as both policies started it (kernel times: Unix seconds)."""

    job_id: int
    submit_s: int
    live_start_s: int
    live_node: str
    twin_start_s: int
    twin_node: str

    @property
    def live_wait_s(self) -> int:
        return self.live_start_s - self.submit_s

    @property
    def twin_wait_s(self) -> int:
        return self.twin_start_s - self.submit_s

    @property
    def differs(self) -> bool:
        return (self.live_start_s, self.live_node) != (self.twin_start_s, self.twin_node)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "submit_time": self.submit_s,
            "live_start": self.live_start_s,
            "live_node": self.live_node,
            "shadow_start": self.twin_start_s,
            "shadow_node": self.twin_node,
            "live_wait_s": self.live_wait_s,
            "shadow_wait_s": self.twin_wait_s,
        }


class Tally:
    """Compared jobs, their differences and waits; jobs only one side started."""

    def __init__(self) -> None:
        self.compared = 0
        self.differences: list[Comparison] = []
        self.live_waits: list[int] = []
        self.twin_waits: list[int] = []
        self.twin_only: set[int] = set()  # the twin started them (final), live not yet
        self.live_only: set[int] = set()  # live started them, the twin not by its horizon
        self.new_twin_waits: list[int] = []  # final twin waits not yet taken (metrics)

    def live_started(self, job: ShadowJob) -> None:
        if job.adopted:
            return
        if job.twin_final:
            self.twin_only.discard(job.job_id)
            self._compare(job)
        else:
            self.live_only.add(job.job_id)

    def twin_decided(self, job: ShadowJob) -> None:
        """The twin's first start of ``job`` is final (at or before its horizon)."""
        job.twin_final = True
        if job.adopted or job.submit_s < 0:
            return
        self.new_twin_waits.append(job.twin_start - job.submit_s)
        if job.live_start >= 0:
            self.live_only.discard(job.job_id)
            self._compare(job)
        else:
            self.twin_only.add(job.job_id)

    def adopted(self, job: ShadowJob) -> None:
        """Found running by a restart before the twin decided: never compared."""
        job.adopted = True
        self.live_only.discard(job.job_id)
        self.twin_only.discard(job.job_id)

    def _compare(self, job: ShadowJob) -> None:
        seen = Comparison(
            job.job_id,
            job.submit_s,
            job.live_start,
            job.live_node,
            job.twin_start,
            job.twin_node,
        )
        self.compared += 1
        self.live_waits.append(seen.live_wait_s)
        self.twin_waits.append(seen.twin_wait_s)
        if seen.differs:
            self.differences.append(seen)

    def take_twin_waits(self) -> list[int]:
        out, self.new_twin_waits = self.new_twin_waits, []
        return out


def wait_stats(waits: list[int]) -> dict[str, float | None]:
    """Mean, median and 95th percentile of waits in seconds (None: no job)."""
    if not waits:
        return {"mean": None, "median": None, "p95": None}
    values = np.asarray(waits, dtype=np.float64)
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
    }
