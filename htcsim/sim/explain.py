"""Why a job waited: its priority factors at a moment of a replay (as sprio).

The replay is the one ``simulate`` runs, failures, checkpoints and the
autoscaler included (the same :class:`~htcsim.sim.driver.ReplaySetup`), so a
job a failure requeued shows as pending with reason ``NodeDown`` when it was.

Two views of the priority, because they differ under multifactor. The
kernel orders the queue by each job's priority as of the last recomputation
(every ``priority_interval_s``) or, for a job that became eligible since, as
of that moment (age 0). Factors recomputed at an arbitrary ``--at`` time
show a larger age than the kernel used, and can rank two jobs the other way
round. Worked example: A arrives at 100 with a fairshare of 1, the last
recomputation was at 0; at 500 its age weighs 400/1000 of the age weight,
but the kernel still orders it by its priority of 100 (age 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from htcsim.cluster import Cluster
from htcsim.kernel import JobState, Kernel, KernelInputError, ReplayFeed
from htcsim.model import Workload
from htcsim.policy import Policy
from htcsim.sim.driver import ReplaySetup, run_replay

_DONE_WAITING = (JobState["RUNNING"], JobState["ENDED"], JobState["CANCELLED"])
_ARRIVING = (JobState["NEW"], JobState["HELD"])


@dataclass(frozen=True)
class PriorityView:
    """A job's priority at ``at_s``, factor by factor.

    ``factors`` are normalized to [0, 1] (nice is the raw value);
    ``weighted`` are the terms of the sum: weight x factor (minus nice).
    """

    at_s: int
    priority: float
    factors: dict[str, float]
    weighted: dict[str, float]


@dataclass(frozen=True)
class Explanation:
    """The priority of one job at one moment of a replay, factor by factor (as sprio).

    ``priority``, ``factors`` and ``weighted`` are computed at ``at_s``;
    ``ordered`` is the priority the kernel ordered the queue by then (as of
    its last recomputation, or of the job's arrival since): multifactor
    only, for a job pending at ``at_s`` or started at that pass (None otherwise).
    """

    job_id: int
    at_s: int
    state: str
    reason: str
    priority: float
    factors: dict[str, float]
    weighted: dict[str, float]
    queue_position: int | None  # 0 = first in line; None when not pending
    ordered: PriorityView | None = None


def explain(
    workload: Workload,
    policy: Policy,
    job_id: int,
    at_s: int | None = None,
    *,
    cluster: Cluster | None = None,
    failures: np.ndarray | None = None,
    checkpoint_s: int | np.ndarray = 0,
) -> Explanation:
    """Replay up to ``at_s`` (default: the pass that first starts the job) and
    give the job's priority factors then, with its state, reason and queue
    place; ``failures`` and ``checkpoint_s`` as for ``simulate``."""
    rows = np.flatnonzero(workload.jobs["job_id"] == job_id)
    if len(rows) == 0:
        raise KernelInputError(f"job {job_id} is not in the workload {workload.name}")
    slot = int(rows[0])
    replay = ReplaySetup(workload, policy, None, cluster, failures, checkpoint_s)
    kernel = replay.kernel
    env = simpy.Environment(initial_time=replay.t0)
    until = _Until(replay.feed, kernel, slot, at_s)
    run_replay(env, replay.feed, None, until)
    at = until.at if at_s is None else at_s
    state = kernel.state_of(slot)
    pending = kernel.pending_jobs()
    place = np.flatnonzero(pending == slot)
    now = _view(kernel, policy, slot, at)
    ordered = None
    if policy.order == "multifactor" and (
        state == JobState["PENDING"] or (at_s is None and state == JobState["RUNNING"])
    ):
        ordered = _view(kernel, policy, slot, max(until.recomputed_at, until.eligible_at))
    return Explanation(
        job_id=job_id,
        at_s=at,
        state=state.name.lower(),
        reason=kernel.why_pending(slot).name,
        priority=now.priority,
        factors=now.factors,
        weighted=now.weighted,
        queue_position=int(place[0]) if len(place) else None,
        ordered=ordered,
    )


def _view(kernel: Kernel, policy: Policy, slot: int, at: int) -> PriorityView:
    priority, factors = kernel.priority_factors(slot, at)
    weights = {
        "age": policy.priority_weight_age,
        "size": policy.priority_weight_size,
        "fairshare": policy.priority_weight_fairshare,
        "qos": policy.priority_weight_qos,
        "nice": -1.0,
    }
    return PriorityView(
        at_s=at,
        priority=priority,
        factors=factors,
        weighted={name: weights[name] * value for name, value in factors.items()},
    )


class _Until:
    """A step of the feed, until ``at_s`` is passed or (no ``at_s``) the job
    started; it notes the last priority recomputation and when the job last
    became eligible (arrived, released or requeued), the two moments the
    kernel's stored priority can date from."""

    def __init__(self, feed: ReplayFeed, kernel: Kernel, slot: int, at_s: int | None) -> None:
        self._feed = feed.raw[0]
        self._kernel = kernel
        self._slot = slot
        self._at_s = at_s
        self.at = at_s if at_s is not None else 0
        self.recomputed_at = -1
        self.eligible_at = -1
        self._recomputes = kernel.n_recomputes
        self._state = kernel.state_of(slot)

    def __call__(self, state: object, now: int) -> int:
        if self._at_s is not None and now > self._at_s:
            return -1
        self.at = now
        next_time = int(self._feed.step(state, now))  # type: ignore[attr-defined]
        kernel = self._kernel
        if kernel.n_recomputes != self._recomputes:
            self._recomputes = kernel.n_recomputes
            self.recomputed_at = now
        job_state = kernel.state_of(self._slot)
        if job_state != self._state and (
            job_state == JobState["PENDING"]
            or (job_state == JobState["RUNNING"] and self._state in _ARRIVING)
        ):
            self.eligible_at = now  # (into the queue now, or through it within this pass)
        self._state = job_state
        if self._at_s is None and job_state in _DONE_WAITING:
            return -1
        return next_time
