"""The simulator: replays a workload through the kernel on a simulated clock.

``driver`` is the SimPy driver, ``failures`` the node failure models it
replays, ``rlscheduler`` a named compatibility profile (never the default)
and ``worker_pool`` the process pool that runs many replays side by side for
``htcsim.plan`` and ``htcsim.tune``.
"""

from htcsim.schedule import SimResult
from htcsim.sim.driver import Explanation, explain, node_pool, simulate

__all__ = ["Explanation", "SimResult", "explain", "node_pool", "simulate"]
