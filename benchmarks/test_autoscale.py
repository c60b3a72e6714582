"""HPC2N with an autoscaled pool of 0..240 nodes and random node failures,
whole-process (``htcsim simulate LOG --policy FILE --mtbf ... --out DIR``),
next to the fixed fleet of 240 nodes with the same failures in the same run.

The autoscaler decides after every pass, so this measures what a dynamic pool
costs the replay: the demand walk, boots, idle scans and the node series.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.conftest import log_path
from benchmarks.test_whole_process import AUTOSCALED, FAILURES, run_cli
from htcsim.policy import save_policy

N_JOBS = 202_871


@pytest.mark.parametrize("write", [False, True], ids=["summary", "out-dir"])
def test_autoscaling_with_failures_next_to_fixed_fleet(
    benchmark, trace_dir: Path, tmp_path: Path, write: bool
) -> None:
    """``summary``: the command prints the summary table; ``out-dir``: it also
    writes the result directory (tables, time series, SWF; no plots)."""
    log = log_path(trace_dir, "HPC2N-2002-2.2-cln")
    policy_file = tmp_path / "autoscale.toml"
    save_policy(AUTOSCALED, policy_file)
    out = ["--out", str(tmp_path / "out"), "--no-plots"] if write else []
    base = ["simulate", str(log), *out, *FAILURES]
    fixed = min(run_cli(base)[0] for _ in range(3))
    benchmark.pedantic(
        lambda: run_cli([*base, "--policy", str(policy_file)]), rounds=3, iterations=1
    )
    best = benchmark.stats.stats.min
    benchmark.extra_info["jobs_per_second"] = round(N_JOBS / best)
    benchmark.extra_info["fixed_fleet_jobs_per_second"] = round(N_JOBS / fixed)
    print(
        f"\nHPC2N autoscaling 0..240 + failures ({'with' if write else 'without'} --out): "
        f"{N_JOBS / best:,.0f} jobs/s whole-process; fixed 240 nodes + the same failures: "
        f"{N_JOBS / fixed:,.0f} jobs/s"
    )
