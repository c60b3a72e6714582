"""The Slurm compatibility profile of a replay (the policy's ``[slurm_compat]``).

A Slurm 22.05 running the exported policy starts a job about a second after
the event that allows it, backfills only every ``bf_interval`` seconds and
keeps time limits in whole minutes; htcsim decides at the event's second, at
every pass, to the second. The profile makes the replay do as Slurm does, so
that its schedule can be compared with Slurm's records (the passes' timing
lives in the kernel's replay feed, ``set_slurm_compat``; the limits are
rounded here, once, on the whole column; the priorities' clock is the
kernel's, ``set_priority_phase``). The live agent does not apply it.
"""

from __future__ import annotations

import numpy as np

from htcsim.kernel import Kernel, ReplayFeed
from htcsim.policy import Policy


def whole_minute_limits(jobs: np.ndarray) -> np.ndarray:
    """``jobs`` with every positive time limit rounded up to whole minutes
    (a copy; the table given is left as it is)."""
    out = jobs.copy()
    limit = out["walltime_s"]
    positive = limit > 0
    limit[positive] = (limit[positive] + 59) // 60 * 60
    return out


def slurm_jobs(jobs: np.ndarray, policy: Policy) -> np.ndarray:
    """The job table the replay runs: limits in whole minutes if the profile says so."""
    return whole_minute_limits(jobs) if policy.slurm_whole_minute_limits else jobs


def time_passes(feed: ReplayFeed, policy: Policy) -> None:
    """Give ``feed`` the profile's reaction time and backfill interval."""
    if policy.slurm_reaction_s or policy.slurm_backfill_interval_s:
        feed.set_slurm_compat(policy.slurm_reaction_s, policy.slurm_backfill_interval_s)


def clock_priorities(kernel: Kernel, policy: Policy) -> None:
    """Recompute the multifactor priorities on Slurm's clock (the profile's
    ``priority_phase_s``) when the profile gives one."""
    if policy.order == "multifactor" and policy.slurm_priority_phase_s >= 0:
        kernel.set_priority_phase(policy.slurm_priority_phase_s)
