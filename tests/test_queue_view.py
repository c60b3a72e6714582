"""The agent's view of the queue: when one copy of the queue is shared, and when
a request makes a new one (engine/queue_view.py, on a real kernel).

Freshness is set far beyond any test's length, so the sharing rules are
checked without depending on the clock; the rules about age run on a clock
the test moves (a copy "takes" the time the test says).
"""

from __future__ import annotations

import threading

import numpy as np

from htcsim.agent.engine.queue_view import QueueViews
from htcsim.kernel import Kernel, QueueSnapshot, node_capacity
from htcsim.policy import Policy
from tests.handjobs import KJob, kernel_with


class Counted:
    """A kernel behind a lock, as the engine holds it, and what the views asked;
    ``now`` is the views' clock, and a copy moves it on by ``copy_s``."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.lock = threading.Lock()
        self.copies = 0
        self.computations: list[tuple[float, int]] = []
        self.now = 0.0
        self.copy_s = 0.0

    def take(self) -> QueueSnapshot:
        with self.lock:
            self.copies += 1
            self.now += self.copy_s
            return self.kernel.snapshot_queue(0)

    def views(self, fresh_s: float = 3600.0) -> QueueViews:
        return QueueViews(
            self.take, lambda: 0, self.observed, fresh_s=fresh_s, clock=lambda: self.now
        )

    def observed(self, seconds: float, turns: int) -> None:
        self.computations.append((seconds, turns))


def queue() -> Counted:
    """One core: job 1 runs; 2 and 3 wait; 4 waits for 1 (a dependency); 5 is on hold."""
    kernel = kernel_with(node_capacity(1, 1), Policy(), [KJob(wall=100)] * 5)
    kernel.add_dependencies(np.array([3]), np.array([0]))
    for slot in range(5):
        kernel.submit(slot, 0)
    kernel.hold(4)
    assert kernel.schedule(0) == 1
    return Counted(kernel)


def test_requests_about_the_jobs_a_view_holds_share_it() -> None:
    counted = queue()
    views = counted.views()
    first = views.live([2, 3], ["pending", "pending"], estimate=True)
    assert first == {
        2: {
            "kernel_state": "pending",
            "reason": "Resources",
            "priority": 0.0,
            "factors": {"age": 0.0, "size": 0.0, "fairshare": 0.0, "qos": 0.0, "nice": 0.0},
            "estimated_start": 100.0,
        },
        3: first[3] | {"reason": "Priority", "estimated_start": 200.0},
    }
    # the store calls a job waiting for its dependency pending, the kernel held
    again = views.live([3, 4, 5], ["pending", "pending", "held"], estimate=True)
    assert [again[j]["reason"] for j in (3, 4, 5)] == ["Priority", "Dependency", "Held"]
    assert "estimated_start" not in again[4]
    assert views.live([2], ["pending"], estimate=False)[2]["reason"] == "Resources"
    assert counted.copies == 1
    assert len(counted.computations) == 1  # the estimates too: computed once


def test_a_job_it_does_not_hold_or_holds_otherwise_makes_a_new_view() -> None:
    counted = queue()
    views = counted.views()
    views.live([2], ["pending"], estimate=False)
    assert views.live([99], ["pending"], estimate=False) == {}  # unknown: a new copy
    assert counted.copies == 2
    counted.kernel.hold(1)  # job 2, held by its user since the last copy
    assert views.live([2], ["held"], estimate=True)[2]["reason"] == "Held"
    assert counted.copies == 3
    counted.kernel.release(1, 0)
    assert views.live([2], ["pending"], estimate=False)[2]["reason"] == "Resources"
    assert counted.copies == 4


def test_an_old_view_is_not_used() -> None:
    counted = queue()
    views = counted.views(fresh_s=1.0)
    views.live([2], ["pending"], estimate=False)
    counted.now += 0.9
    views.live([2], ["pending"], estimate=False)
    assert counted.copies == 1
    counted.now += 0.2
    views.live([2], ["pending"], estimate=False)
    assert counted.copies == 2


def test_a_view_slow_to_make_serves_as_long_as_it_took() -> None:
    """A copy that takes 3 s (a second is fresh): the view answers for 3 s after
    it was made (its estimates, computed later, count from when they are
    known), even a request about a job it does not hold (left out of the
    answer, shown as stored), so asking often does not make copy after copy."""
    counted = queue()
    counted.copy_s = 3.0
    views = counted.views(fresh_s=1.0)
    views.live([2], ["pending"], estimate=False)
    counted.now += 2.5
    assert views.live([2, 99], ["pending", "pending"], estimate=False).keys() == {2}
    assert counted.copies == 1
    counted.now += 1.0  # 3.5 s after the copy
    views.live([2], ["pending"], estimate=True)
    assert counted.copies == 2
    counted.now += 2.9  # the estimates (computed then) count from then
    assert views.live([99], ["pending"], estimate=True) == {}
    assert counted.copies == 2
    counted.now += 0.2
    views.live([2], ["pending"], estimate=False)
    assert counted.copies == 3
