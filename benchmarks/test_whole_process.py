"""Whole-process replays: ``htcsim simulate LOG ...`` as a user runs it, under ``/usr/bin/time -v``.

Interpreter start, imports, parsing the gzip'd log, the replay and, with
``--out``, writing the tables, summary, SWF and figures are all inside the
measured time. Each figure is the minimum of the rounds (the machine is
shared: read the minimum), for the wall time, the CPU time (user + system,
children included) and the maximum resident set size (of the largest
process: with figures, the drawing process runs beside the main one).

The HPC2N cases (202,871 jobs) run next to ``benchmarks/reference_easy.py``,
a plain-Python FCFS + EASY replay of the same log, one reference run before
each htcsim round, so that ``x the reference`` compares runs made under the
same load; ``test_the_reference_gives_htcsim_schedule`` checks that the
reference computes the same start for every job. Every figure is in the
benchmark's ``extra_info`` and printed (``-s``).

    HTCSIM_TRACE_DIR=../shared/traces python -m pytest benchmarks/test_whole_process.py \\
        --benchmark-only -s
"""

from __future__ import annotations

import compileall
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import htcsim
from benchmarks.conftest import log_path
from htcsim.policy import Policy, save_policy

HPC2N = "HPC2N-2002-2.2-cln"
HPC2N_JOBS = 202_871
ROUNDS = 3
TIME = shutil.which("time", path="/usr/bin")
REFERENCE = Path(__file__).with_name("reference_easy.py")

MULTIFACTOR = Policy(
    order="multifactor",
    backfill="easy",
    priority_weight_age=1_000.0,
    priority_weight_fairshare=10_000.0,
    priority_weight_size=100.0,
)
AUTOSCALED = Policy(
    autoscale=True,
    autoscale_min_nodes=0,
    autoscale_max_nodes=240,
    autoscale_wait_s=300,
    autoscale_boot_delay_s=120,
    autoscale_idle_s=600,
    autoscale_cooldown_s=60,
    autoscale_step=16,
    max_retries=3,
)
FAILURES = ["--mtbf", "2000", "--mttr", "4", "--checkpoint-interval", "3600"]
"""Random node failures (MTBF 2000 h, MTTR 4 h) and hourly checkpoints."""


@dataclass(frozen=True)
class Usage:
    """One process tree's wall seconds, CPU seconds (user + system) and peak RSS."""

    wall_s: float
    cpu_s: float
    max_rss_mib: float


def _child_env() -> dict[str, str]:
    """The environment with bytecode caching on, as an installed command has it."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(command: list[str]) -> Usage:
    """Run ``command`` to its end under ``/usr/bin/time -v`` (``os.wait4`` where
    there is none); refuses a failed run with its error output."""
    if TIME is None:
        began = time.perf_counter()
        proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_child_env()
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
        assert proc.stderr is not None
        if status != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr.read().decode()}")
        return Usage(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)
    run = subprocess.run(
        [TIME, "-v", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
        timeout=600,
    )
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {run.stderr[-3000:]}")
    return _parse_time_v(run.stderr)


def _parse_time_v(report: str) -> Usage:
    """Wall, CPU and peak RSS from GNU time's ``-v`` report (the command's own
    error output comes before it)."""

    def field(name: str) -> str:
        found = re.findall(rf"^\s*{re.escape(name)}.*: (\S+)$", report, flags=re.M)
        if not found:
            raise RuntimeError(f"no {name!r} in /usr/bin/time -v output: {report[-2000:]}")
        return str(found[-1])

    wall = 0.0
    for part in field("Elapsed (wall clock) time").split(":"):  # [h:]m:s.ss
        wall = wall * 60 + float(part)
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    return Usage(wall, cpu, int(field("Maximum resident set size (kbytes)")) / 1024)


def htcsim_command(*args: str) -> list[str]:
    """``htcsim ARGS`` as the installed script runs it."""
    return [sys.executable, "-m", "htcsim", *args]


def run_cli(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one ``htcsim`` process."""
    usage = timed(htcsim_command(*args))
    return usage.wall_s, round(usage.max_rss_mib)


@pytest.fixture(scope="module", autouse=True)
def compiled_bytecode() -> None:
    """Bytecode for every htcsim module, as installing the package writes it
    (a process that compiles its sources each time measures the compiler)."""
    compileall.compile_dir(Path(htcsim.__file__).parent, quiet=1)


def _best(runs: list[Usage]) -> Usage:
    """The minimum of each figure over the runs (peak RSS: the largest)."""
    return Usage(
        min(r.wall_s for r in runs),
        min(r.cpu_s for r in runs),
        max(r.max_rss_mib for r in runs),
    )


def measure_next_to_reference(
    benchmark: Any, args: list[str], log: Path, label: str, n_jobs: int = HPC2N_JOBS
) -> tuple[Usage, Usage]:
    """``htcsim ARGS`` for ROUNDS rounds (after a warm-up), each after a run of
    the reference on ``log``; records and prints both minima and their ratio."""
    ours: list[Usage] = []
    theirs: list[Usage] = []

    def reference() -> None:
        theirs.append(timed([sys.executable, str(REFERENCE), str(log)]))

    def once() -> None:
        ours.append(timed(htcsim_command(*args)))

    benchmark.pedantic(once, setup=reference, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    warm = 1 if len(ours) > 1 else 0  # (one run only under --benchmark-disable)
    best, ref = _best(ours[warm:]), _best(theirs[warm:])
    info = benchmark.extra_info
    info["wall_s_min"] = best.wall_s
    info["cpu_s_min"] = best.cpu_s
    info["max_rss_mib"] = round(best.max_rss_mib)
    info["jobs_per_second"] = round(n_jobs / best.wall_s)
    info["reference_wall_s_min"] = ref.wall_s
    info["reference_cpu_s_min"] = ref.cpu_s
    info["reference_max_rss_mib"] = round(ref.max_rss_mib)
    info["wall_x_reference"] = round(best.wall_s / ref.wall_s, 2)
    print(
        f"\n{label}: {best.wall_s:.2f} s wall, {best.cpu_s:.2f} s CPU, peak "
        f"{best.max_rss_mib:.0f} MiB ({n_jobs / best.wall_s:,.0f} jobs/s); the plain-Python "
        f"EASY reference in the same run {ref.wall_s:.2f} s wall, {ref.cpu_s:.2f} s CPU, "
        f"{ref.max_rss_mib:.0f} MiB: {best.wall_s / ref.wall_s:.2f}x its wall time "
        f"(min of {len(ours) - warm})"
    )
    return best, ref


OUTPUTS = {
    "summary": [],
    "out-no-plots": ["--out", "{out}", "--no-plots"],
    "out-plots": ["--out", "{out}"],
}


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_hpc2n_easy(benchmark: Any, trace_dir: Path, tmp_path: Path, output: str) -> None:
    """HPC2N under FCFS + EASY: the summary only, the result directory without
    figures, and with them."""
    log = log_path(trace_dir, HPC2N)
    args = ["simulate", str(log), *(a.format(out=tmp_path / "out") for a in OUTPUTS[output])]
    measure_next_to_reference(benchmark, args, log, f"HPC2N EASY, {output}")
    if output != "summary":
        written = {p.name for p in (tmp_path / "out").iterdir()}
        assert {"jobs.parquet", "summary.json", "schedule.swf"} <= written
        assert ("wait.png" in written) == (output == "out-plots")


@pytest.mark.parametrize("algorithm", ["classic", "fair_tree"])
def test_hpc2n_multifactor(benchmark: Any, trace_dir: Path, tmp_path: Path, algorithm: str) -> None:
    """HPC2N under multifactor priority (age, fairshare, size) + EASY, summary only."""
    log = log_path(trace_dir, HPC2N)
    policy_file = tmp_path / "policy.toml"
    save_policy(replace(MULTIFACTOR, fairshare_algorithm=algorithm), policy_file)  # type: ignore[arg-type]
    args = ["simulate", str(log), "--policy", str(policy_file)]
    measure_next_to_reference(benchmark, args, log, f"HPC2N multifactor ({algorithm}) + EASY")


@pytest.mark.parametrize("output", ["summary", "out-no-plots"])
def test_hpc2n_autoscale_and_failures(
    benchmark: Any, trace_dir: Path, tmp_path: Path, output: str
) -> None:
    """HPC2N on an autoscaled pool of 0..240 nodes with random node failures and
    hourly checkpoints (``benchmarks/test_autoscale.py`` sets it beside the fixed fleet)."""
    log = log_path(trace_dir, HPC2N)
    policy_file = tmp_path / "autoscale.toml"
    save_policy(AUTOSCALED, policy_file)
    out = [a.format(out=tmp_path / "out") for a in OUTPUTS[output]]
    args = ["simulate", str(log), "--policy", str(policy_file), *FAILURES, *out]
    measure_next_to_reference(benchmark, args, log, f"HPC2N autoscale 0..240 + failures, {output}")


SDSC_CASES = [
    ("SDSC-SP2-1998-4.2-cln", "none", 54_044),
    ("SDSC-SP2-1998-4.2-cln", "easy", 54_044),
]


@pytest.mark.parametrize(("stem", "backfill", "n_jobs"), SDSC_CASES)
def test_whole_process_replay(
    benchmark: Any, trace_dir: Path, tmp_path: Path, stem: str, backfill: str, n_jobs: int
) -> None:
    """A smaller log, where the fixed start-up weighs more: ``--out`` without figures."""
    log = log_path(trace_dir, stem)
    runs: list[Usage] = []
    args = ["simulate", str(log), "--backfill", backfill, "--out", str(tmp_path), "--no-plots"]
    benchmark.pedantic(
        lambda: runs.append(timed(htcsim_command(*args))),
        rounds=ROUNDS,
        iterations=1,
        warmup_rounds=1,
    )
    best = _best(runs[1:] or runs)
    benchmark.extra_info["wall_s_min"] = best.wall_s
    benchmark.extra_info["cpu_s_min"] = best.cpu_s
    benchmark.extra_info["max_rss_mib"] = round(best.max_rss_mib)
    benchmark.extra_info["jobs_per_second"] = round(n_jobs / best.wall_s)
    print(
        f"\n{stem} {backfill}, --out --no-plots: {best.wall_s:.2f} s wall, {best.cpu_s:.2f} s "
        f"CPU, peak {best.max_rss_mib:.0f} MiB ({n_jobs / best.wall_s:,.0f} jobs/s)"
    )


def test_the_reference_gives_htcsim_schedule(trace_dir: Path, tmp_path: Path) -> None:
    """The yardstick computes what htcsim computes: the same start for every job of HPC2N."""
    import polars as pl

    log = log_path(trace_dir, HPC2N)
    starts = tmp_path / "starts.txt"
    subprocess.run(
        [sys.executable, str(REFERENCE), str(log), "--starts", str(starts)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        htcsim_command("simulate", str(log), "--out", str(tmp_path / "out"), "--no-plots"),
        check=True,
        capture_output=True,
    )
    reference = np.loadtxt(starts, dtype=np.int64, ndmin=2)
    jobs = pl.read_parquet(tmp_path / "out" / "jobs.parquet", columns=["job_id", "start_s"])
    assert len(reference) == jobs.height == HPC2N_JOBS
    ours = dict(zip(jobs["job_id"].to_list(), jobs["start_s"].to_list(), strict=True))
    theirs = dict(zip(reference[:, 0].tolist(), reference[:, 1].tolist(), strict=True))
    assert ours == theirs
