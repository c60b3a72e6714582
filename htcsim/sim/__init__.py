"""The SimPy driver: replays a workload through the kernel on a simulated clock."""

from htcsim.sim.driver import simulate
from htcsim.sim.result import SimResult

__all__ = ["SimResult", "simulate"]
