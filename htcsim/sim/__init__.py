"""The SimPy driver: replays a workload through the kernel on a simulated clock."""

from htcsim.schedule import SimResult
from htcsim.sim.driver import Explanation, explain, node_pool, simulate

__all__ = ["Explanation", "SimResult", "explain", "node_pool", "simulate"]
