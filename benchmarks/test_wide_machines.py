"""Replay cost against the machine's size: wide logs and a machine of a million cores.

A log's machine of one-core nodes replays as one pool of processors, so the
cost of a start does not depend on how many processors there are. Measured:

* CEA-Curie (93,312 processors) and RICC (8,192) next to HPC2N (240), under
  EASY, in the same run: the replay loop alone (parse excluded) and the whole
  process (``htcsim simulate LOG --out DIR --no-plots``). A log missing from
  $HTCSIM_TRACE_DIR is skipped, saying so;
* a Curie-sized stand-in that any trace folder can build: HPC2N with every
  job 388 times wider on 93,312 processors (the load is unchanged), through
  the same whole-process command;
* one million generated jobs (Lublin-Feitelson, load 0.85) on 10^4, 10^5 and
  10^6 processors, the same jobs each time with sizes scaled to the machine:
  the jobs/s should not fall as the processors grow;
* a real node table, where the pool does not apply: the same 100,000 jobs of
  4-core tasks on 64 usable nodes behind 10^3, 10^4 and 10^5 nodes too full
  for a task (placement looks nodes up in the free-capacity tree).

``jobs_per_second`` in ``extra_info`` is over the best round.
"""

from __future__ import annotations

import dataclasses
import gzip
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.conftest import log_path
from htcsim.cluster import Cluster, NodeType
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy
from htcsim.sim import simulate
from htcsim.workload.swf import read_swf

WIDE_LOGS = ["HPC2N-2002-2.2-cln", "RICC-2010-2.2-cln", "CEA-Curie-2011-2.1-cln"]
STAND_IN_PROCS = 93_312
STAND_IN_FACTOR = 388  # HPC2N's widest job (200 of 240) becomes 77,600 processors


def _wide_log(trace_dir: Path, stem: str) -> Path:
    path = trace_dir / f"{stem}.swf.gz"
    if not path.exists():
        pytest.skip(f"{path.name} is not in HTCSIM_TRACE_DIR")
    return path


def _whole_process(log: Path, out: Path) -> float:
    """Wall seconds of one ``python -m htcsim simulate`` process (EASY)."""
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "htcsim", "simulate", str(log), "--backfill", "easy",
         "--out", str(out), "--no-plots"],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - began


@pytest.mark.parametrize("stem", WIDE_LOGS)
def test_wide_log_replay_loop(benchmark, trace_dir: Path, stem: str) -> None:
    workload = read_swf(_wide_log(trace_dir, stem))
    benchmark.pedantic(lambda: simulate(workload, Policy()), rounds=3, iterations=1)
    benchmark.extra_info["processors"] = workload.machine.total_cores
    benchmark.extra_info["jobs_per_second"] = round(len(workload) / benchmark.stats.stats.min)


@pytest.mark.parametrize("stem", WIDE_LOGS)
def test_wide_log_whole_process(benchmark, trace_dir: Path, tmp_path: Path, stem: str) -> None:
    log = _wide_log(trace_dir, stem)
    n_jobs = len(read_swf(log))
    benchmark.pedantic(lambda: _whole_process(log, tmp_path), rounds=3, iterations=1)
    benchmark.extra_info["jobs_per_second"] = round(n_jobs / benchmark.stats.stats.min)


@pytest.fixture(scope="module")
def stand_in(trace_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HPC2N on 93,312 processors, every job STAND_IN_FACTOR times wider
    (fields 5 and 8), as an SWF file whose MaxNodes does not divide MaxProcs."""
    source = log_path(trace_dir, "HPC2N-2002-2.2-cln")
    lines = []
    with gzip.open(source, "rt") as text:
        for line in text:
            if line.startswith(";"):
                if line.startswith(("; MaxProcs:", "; MaxNodes:")):
                    key = line.split(":")[0]
                    line = f"{key}: {STAND_IN_PROCS if 'Procs' in key else 5040}\n"
                lines.append(line)
                continue
            fields = line.split()
            for k in (4, 7):
                if int(fields[k]) > 0:
                    fields[k] = str(int(fields[k]) * STAND_IN_FACTOR)
            lines.append(" ".join(fields) + "\n")
    path = tmp_path_factory.mktemp("wide") / "HPC2N-wide.swf"
    path.write_text("".join(lines))
    return path


def test_curie_sized_stand_in_whole_process(benchmark, stand_in: Path, tmp_path: Path) -> None:
    workload = read_swf(stand_in)
    assert workload.machine.total_cores == STAND_IN_PROCS
    benchmark.pedantic(lambda: _whole_process(stand_in, tmp_path), rounds=3, iterations=1)
    benchmark.extra_info["jobs_per_second"] = round(len(workload) / benchmark.stats.stats.min)


def test_curie_sized_stand_in_replay_loop(benchmark, stand_in: Path) -> None:
    workload = read_swf(stand_in)
    benchmark.pedantic(lambda: simulate(workload, Policy()), rounds=3, iterations=1)
    benchmark.extra_info["jobs_per_second"] = round(len(workload) / benchmark.stats.stats.min)


@pytest.fixture(scope="module")
def million_jobs() -> Workload:
    from htcsim.workload.lublin import generate_lublin

    return generate_lublin(1_000_000, 10_000, seed=1, load=0.85)


@pytest.mark.parametrize("processors", [10_000, 100_000, 1_000_000])
def test_million_jobs_on_growing_machines(
    benchmark, million_jobs: Workload, processors: int
) -> None:
    jobs = million_jobs.jobs.copy()
    jobs["n_tasks"] *= processors // 10_000
    workload = dataclasses.replace(
        million_jobs, jobs=jobs, machine=Machine(n_nodes=processors, cores_per_node=1)
    )
    result = benchmark.pedantic(lambda: simulate(workload, Policy()), rounds=2, iterations=1)
    assert (result.start_s >= 0).all()
    benchmark.extra_info["jobs_per_second"] = round(len(workload) / benchmark.stats.stats.min)


def fragmented(n_nodes: int, jobs: Workload) -> tuple[Workload, Cluster]:
    """``jobs`` (tasks of 4 cores, sized for 64 nodes of 32 cores) on ``n_nodes``
    nodes of which all but the last 64 hold a long blocker of 29 cores from time
    0: 3 cores free on each, too few for a task, before the nodes the work uses."""
    blockers = empty_jobs(n_nodes - 64)
    blockers["job_id"] = np.arange(1, n_nodes - 63) + 10_000_000
    blockers["submit_s"] = 0
    blockers["run_s"] = blockers["walltime_s"] = 10**9
    blockers["n_tasks"] = 1
    blockers["cores_per_task"] = 29
    work = jobs.jobs.copy()
    work["cores_per_task"] = 4
    work["n_tasks"] = np.maximum(work["n_tasks"] // 4, 1)
    work["submit_s"] += 1 - work["submit_s"][0]
    table = np.concatenate([blockers, work])
    workload = Workload(name=f"fragmented-{n_nodes}", jobs=table, machine=jobs.machine)
    return workload, Cluster((NodeType("n", n_nodes, 32),))


@pytest.fixture(scope="module")
def work_for_64_nodes() -> Workload:
    from htcsim.workload.lublin import generate_lublin

    return generate_lublin(100_000, 64 * 32, seed=3, load=0.85)


@pytest.mark.parametrize("n_nodes", [1_000, 10_000, 100_000])
def test_fragmented_node_table(benchmark, work_for_64_nodes: Workload, n_nodes: int) -> None:
    """A real node table (not a pool): the same 100,000 jobs of 4-core tasks run on
    64 free nodes behind 10^3..10^5 nodes too full for a task (first fit).
    Placement finds candidates in the free-capacity tree, so the extra nodes
    should not slow a start down; the blockers themselves are jobs too (one
    per extra node), counted in the jobs/s. (best_fit and spread still score
    every node that can take a task: on the idle part of a large table that
    is every node, so they are left out here.)"""
    workload, cluster = fragmented(n_nodes, work_for_64_nodes)
    policy = Policy()
    benchmark.pedantic(lambda: simulate(workload, policy, cluster=cluster), rounds=2, iterations=1)
    benchmark.extra_info["jobs_per_second"] = round(len(workload) / benchmark.stats.stats.min)
