"""What a replay returns: per-job times as columns, plus how the run went."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from htcsim.model import Workload
from htcsim.policy import Policy


@dataclass(frozen=True)
class SimResult:
    """The schedule of one replay.

    ``start_s``/``end_s`` are aligned with ``workload.jobs`` (row k is job k);
    -1 marks a job that never started or never ended (none, for a replay that
    ran to completion). ``run_s`` is the simulated run time: the recorded run
    time capped at the requested time (the job is killed then).
    """

    workload: Workload
    policy: Policy
    start_s: np.ndarray
    end_s: np.ndarray
    replay_seconds: float = 0.0  # wall-clock time of the event loop
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def wait_s(self) -> np.ndarray:
        return self.start_s - self.workload.jobs["submit_s"]

    @property
    def run_s(self) -> np.ndarray:
        return self.end_s - self.start_s

    @property
    def killed_at_walltime(self) -> np.ndarray:
        """Jobs whose recorded run time exceeded their request (cut at the request)."""
        jobs = self.workload.jobs
        return jobs["run_s"] > jobs["walltime_s"]
