"""The SimPy driver: replays a workload through the kernel on a simulated clock."""

from htcsim.sim.driver import simulate
from htcsim.schedule import SimResult

__all__ = ["SimResult", "simulate"]
