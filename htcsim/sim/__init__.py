"""The SimPy driver: replays a workload through the kernel on a simulated clock."""

from htcsim.schedule import SimResult
from htcsim.sim.driver import Explanation, explain, simulate

__all__ = ["Explanation", "SimResult", "explain", "simulate"]
