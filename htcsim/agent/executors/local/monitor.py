"""Resource sampling for the engine: per-job process trees and the node as a whole.

Kept to two cheap psutil calls the engine makes every sample interval; both
ignore processes that vanish while being read (jobs end at any moment).
"""

from __future__ import annotations

from collections.abc import Sequence

import psutil


def job_usage(pids: dict[int, int]) -> dict[int, tuple[float, float]]:
    """Job id -> (CPU seconds so far, current RSS MiB) of the process tree under each pid.

    ``pids`` maps job ids to their wrapper pids (``LocalExecutor.running()``).
    CPU counts each live process's own user+system time plus the time of the
    children it has already waited for, so finished steps of a job still
    count and nothing counts twice. RSS is the sum over the live processes, so
    pages shared between them count once per process: an upper bound, which
    is the safe side for a memory check. A job whose wrapper is gone is left
    out.
    """
    usage: dict[int, tuple[float, float]] = {}
    for job_id, pid in pids.items():
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        cpu = rss = 0.0
        for proc in tree:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    mem = proc.memory_info().rss
            except psutil.Error:
                continue
            cpu += t.user + t.system + t.children_user + t.children_system
            rss += mem
        usage[job_id] = (cpu, rss / 2**20)
    return usage


def node_usage(cpus: Sequence[int]) -> tuple[float, float]:
    """(CPU percent of ``cpus`` since the previous call, machine memory in use, MiB).

    The CPU figure is psutil's per-CPU busy percentage since its previous call
    (the very first call has no interval and returns 0), averaged over the
    agent's CPUs only, since other CPUs are not ours to schedule. Memory in use
    is total minus available: page cache the kernel can drop is not "used".
    """
    per_cpu = psutil.cpu_percent(percpu=True)
    mine = [per_cpu[c] for c in cpus if 0 <= c < len(per_cpu)]
    cpu = sum(mine) / len(mine) if mine else 0.0
    vm = psutil.virtual_memory()
    return cpu, (vm.total - vm.available) / 2**20
