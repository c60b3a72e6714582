"""The simulator: replays a workload through the kernel on a simulated clock.

``driver`` is the SimPy driver, ``interruptions`` the recorder of the run
segments node failures cut short, ``explain`` a job's priority at a moment
of the same replay, ``failures`` the node failure models it replays,
``rlscheduler`` a named compatibility profile (never the default) and
``worker_pool`` the process pool that runs many replays side by side for
``htcsim.plan`` and ``htcsim.tune``.
"""

from htcsim.schedule import SimResult
from htcsim.sim.driver import node_pool, simulate
from htcsim.sim.explain import Explanation, PriorityView, explain

__all__ = ["Explanation", "PriorityView", "SimResult", "explain", "node_pool", "simulate"]
