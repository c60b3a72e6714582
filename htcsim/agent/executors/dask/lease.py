"""The lease a Dask worker's jobs run under: the agent renews it, and once it
expires the worker's guard kills them (fencing).

Why a lease and not the heartbeat alone: a worker that hangs (its process
stopped, its host's network cut) keeps its jobs running, and the agent, which
cannot reach it, requeues them elsewhere: the same job would run twice. The
agent sends every worker renewals carrying its own ``time.monotonic()`` at
send, ``sent``; the worker stamps its own monotonic clock at receipt,
``received``, and hands both to the guard, on the same machine. The guard keeps
``theta``, the smallest ``received - sent`` seen: the offset between the two
monotonic clocks plus the smallest one-way delay, so never less than the true
offset. The lease then ends at ``sent + lease_s + theta`` on the worker's clock,
which on the agent's clock is at most ``sent + lease_s`` plus that smallest
one-way delay: the agent waits ``lease_s``, the smallest round trip it measured
(at least that one-way delay) and a margin past the last renewal it sent before
it requeues the jobs, and by then they are dead. Only one thing is assumed:
both clocks advance at the same rate (no synchronised clocks, no bound on the
delays). A renewal that arrives after the end it would give is ignored: a late
message cannot bring a fenced worker back.

Renewals carry the agent's epoch (a token of each agent start): a restarted
or moved agent's monotonic clock has another offset (another host's, or one
since another boot), so ``theta`` starts afresh with it, while the lease the
previous agent gave still runs to its end (that agent is gone: its last
renewal went before the new one started, and the margin the agent adds
covers that one's one-way delay).

Only the standard library: the worker and its guard import it.
"""

from __future__ import annotations

import math


class Lease:
    """One worker's lease, on that worker's monotonic clock."""

    def __init__(self) -> None:
        self.theta = math.inf
        """The smallest ``received - sent`` of any renewal of this epoch: an
        over-estimate of the clocks' offset by at most the smallest one-way delay."""
        self.epoch = ""
        self.deadline = -math.inf
        """When the lease ends (the worker's clock); before any renewal, already."""

    def renew(self, sent: float, received: float, lease_s: float, epoch: str = "") -> bool:
        """A renewal sent at ``sent`` (the agent's clock), received at ``received``
        (this clock): the lease ends at ``sent + lease_s + theta`` unless it ends
        later already. False if that end is already past at receipt (a late
        renewal, ignored). ``epoch``: the agent's start it comes from."""
        if epoch != self.epoch:  # another agent's clock
            self.epoch, self.theta = epoch, math.inf
        self.theta = min(self.theta, received - sent)
        end = sent + lease_s + self.theta
        if end <= received:
            return False
        self.deadline = max(self.deadline, end)
        return True

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def left(self, now: float) -> float:
        """Seconds until the lease ends (0 once it has)."""
        return max(0.0, self.deadline - now)
