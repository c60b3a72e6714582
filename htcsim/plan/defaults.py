"""The planner's defaults, in a module of their own so the command line can show them
without importing numpy and the simulator."""

DEFAULT_CAP_FACTOR = 64
"""The search for an upper bound doubles the machine's node count at most up to
this multiple of it; a target not met there is reported as not reachable (a
wait the fleet size cannot remove, e.g. jobs held by their dependencies)."""

DEFAULT_GRID = 8
"""Sizes in a coarse grid (each narrowing round takes half as many). Fixed rather
than derived from the number of workers: waits are not monotone in fleet size,
so the answer depends on which sizes were evaluated, and a plan must give the
same answer on a laptop and on a 64-core node (pass ``grid`` to use more cores)."""
