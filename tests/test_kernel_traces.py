"""On real logs: the simulator (SimPy driver + kernel) gives the reference's start times.

The first 5,000 jobs of every SWF log in $HTCSIM_TRACE_DIR, each backfill mode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from htcsim.policy import Policy
from htcsim.sim import simulate as replay
from htcsim.workload.swf import read_swf
from tests.reference import RefJob, simulate

FIRST_JOBS = 5_000


def _logs(trace_dir: Path) -> list[Path]:
    logs = sorted(trace_dir.glob("*.swf.gz")) + sorted(trace_dir.glob("*.swf"))
    assert logs, f"no SWF logs in {trace_dir}"
    return logs


@pytest.mark.trace
@pytest.mark.parametrize("backfill", ["none", "easy", "conservative"])
def test_kernel_matches_reference_on_real_logs(trace_dir: Path, backfill: str) -> None:
    for log in _logs(trace_dir):
        workload = read_swf(log, max_jobs=FIRST_JOBS)
        jobs = [
            RefJob(
                int(r["job_id"]),
                int(r["submit_s"]),
                int(r["n_tasks"]),
                int(r["walltime_s"]),
                int(r["run_s"]),
            )
            for r in workload.jobs
        ]
        expected_start, expected_end = simulate(jobs, workload.machine.total_cores, backfill)
        result = replay(workload, Policy(backfill=backfill))
        assert result.start_s.tolist() == expected_start, f"{log.name}: start times differ"
        assert result.end_s.tolist() == expected_end, f"{log.name}: end times differ"


@pytest.mark.trace
@pytest.mark.parametrize("backfill", ["none", "easy", "conservative"])
def test_every_whole_log_replays_to_completion(trace_dir: Path, backfill: str) -> None:
    for log in _logs(trace_dir):
        workload = read_swf(log)
        result = replay(workload, Policy(backfill=backfill))
        jobs = workload.jobs
        assert (result.start_s >= jobs["submit_s"]).all(), f"{log.name}: start before submit"
        ran = result.end_s - result.start_s
        expected = np.minimum(jobs["run_s"], jobs["walltime_s"])
        assert (ran == expected).all(), f"{log.name}: a job did not run its (capped) time"
