"""Whole-process replays: ``htcsim simulate LOG --out DIR`` as a user runs it.

Import, parsing, the replay and writing the per-job tables, summary and SWF
are all inside the measured time (plots are measured separately: matplotlib
alone costs about half a second to import). Peak memory is the child's
maximum resident set size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.conftest import log_path
from htcsim.policy import Policy, save_policy

CASES = [
    ("HPC2N-2002-2.2-cln", "easy", 202_871),
    ("SDSC-SP2-1998-4.2-cln", "none", 54_044),
    ("SDSC-SP2-1998-4.2-cln", "easy", 54_044),
]


def run_cli(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one ``python -m htcsim`` process."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "htcsim", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - began
    if status != 0:
        raise RuntimeError(f"htcsim {' '.join(args)} failed: {proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss // 1024


@pytest.mark.parametrize(("stem", "backfill", "n_jobs"), CASES)
def test_whole_process_replay(
    benchmark, trace_dir: Path, tmp_path: Path, stem: str, backfill: str, n_jobs: int
) -> None:
    log = log_path(trace_dir, stem)
    peaks: list[int] = []

    def once() -> None:
        _, peak = run_cli(
            ["simulate", str(log), "--backfill", backfill, "--out", str(tmp_path), "--no-plots"]
        )
        peaks.append(peak)

    benchmark.pedantic(once, rounds=3, iterations=1, warmup_rounds=1)
    best = benchmark.stats.stats.min
    benchmark.extra_info["jobs_per_second"] = round(n_jobs / best)
    benchmark.extra_info["peak_rss_mib"] = max(peaks)
    print(f"\n{stem} {backfill}: {n_jobs / best:,.0f} jobs/s whole-process, peak {max(peaks)} MiB")


MULTIFACTOR = Policy(
    order="multifactor",
    backfill="easy",
    priority_weight_age=1_000.0,
    priority_weight_fairshare=10_000.0,
    priority_weight_size=100.0,
)


@pytest.mark.parametrize("algorithm", ["classic", "fair_tree"])
def test_multifactor_fairshare_next_to_easy(
    benchmark, trace_dir: Path, tmp_path: Path, algorithm: str
) -> None:
    """HPC2N under multifactor priority + fairshare + EASY, and plain EASY in the same run."""
    log = log_path(trace_dir, "HPC2N-2002-2.2-cln")
    policy_file = tmp_path / "policy.toml"
    policy = replace(MULTIFACTOR, fairshare_algorithm=algorithm)  # type: ignore[arg-type]
    save_policy(policy, policy_file)
    base = ["simulate", str(log), "--out", str(tmp_path / "out"), "--no-plots"]
    plain = min(run_cli(base)[0] for _ in range(3))
    benchmark.pedantic(
        lambda: run_cli([*base, "--policy", str(policy_file)]), rounds=3, iterations=1
    )
    n_jobs = 202_871
    best = benchmark.stats.stats.min
    benchmark.extra_info["jobs_per_second"] = round(n_jobs / best)
    benchmark.extra_info["plain_easy_jobs_per_second"] = round(n_jobs / plain)
    print(
        f"\nHPC2N multifactor+fairshare ({algorithm}) + EASY: {n_jobs / best:,.0f} jobs/s "
        f"whole-process; plain EASY in the same run: {n_jobs / plain:,.0f} jobs/s"
    )


def test_whole_process_with_plots(benchmark, trace_dir: Path, tmp_path: Path) -> None:
    log = log_path(trace_dir, "HPC2N-2002-2.2-cln")
    benchmark.pedantic(
        lambda: run_cli(["simulate", str(log), "--out", str(tmp_path)]), rounds=2, iterations=1
    )
    benchmark.extra_info["jobs_per_second"] = round(202_871 / benchmark.stats.stats.min)
