"""Run one seeded workload on a real Slurm under each policy, replay it in htcsim, compare.

    python experiments/slurm-validation/run.py [--jobs N] [--seed S] [POLICY ...]

(run as root from the repository root, with slurm-wlm and munge installed).
For each policy file here (all by default: fifo, easy, multifactor-size,
multifactor-qos-fairshare),
``htcsim export slurm`` writes the slurm.conf fragment, a single-host Slurm
(tests/slurm_harness.py) starts with it, the workload is submitted job by job
at its submit times, Slurm's jobcomp records are read back through htcsim's
sacct importer (kept in ``runs/``) and replayed under the same policy, again
with best-fit placement, and again with the Slurm compatibility profile
(``[slurm_compat]`` and the placement as ``htcsim import slurm-conf`` reads them
from the exported fragment). Adds its rows to ``results.csv`` and
``results.md`` here (replacing those of the same policy and seed). A run of
100 jobs takes about 2.5 minutes per policy. ``--offset S`` waits S seconds
between the cluster being up and the first submission (another phase of
slurmctld's clocks against the workload; priority_clock.py reads those
runs) and keeps the records in ``runs/`` only. ``--replay-only`` redoes the
replays of the rows already there from ``runs/``, without Slurm.

multifactor-qos-fairshare needs Slurm's accounting (mariadb-server and
slurmdbd installed): the harness starts a private MariaDB and slurmdbd and
runs the exported sacctmgr.sh (QOS, user shares), each job names its QOS
(``sbatch --qos``: high for about a third of them, else low), and the records
replayed are Slurm's own accounting (``sacct --parsable2`` from slurmdbd),
which must reproduce the submission (ids, sizes, limits, users, QOS, submit
times within 1 s) or the run stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from htcsim.policy import Policy, load_policy  # noqa: E402
from htcsim.sim import simulate  # noqa: E402
from htcsim.slurm.export import export_slurm  # noqa: E402
from htcsim.workload.sacct import SacctImport, read_sacct  # noqa: E402
from tests import slurm_dbd  # noqa: E402
from tests.slurm_harness import skip_reason, start_cluster  # noqa: E402
from tests.slurm_replay import (  # noqa: E402
    CLUSTER,
    USERS,
    accounting_sacct,
    compare,
    for_import,
    generate,
    import_run,
    real_starts,
    replay,
    slurm_nodes,
    slurm_profile,
    submission_mismatches,
    submit_all,
    with_qos,
)

POLICIES = ("fifo", "easy", "multifactor-size", "multifactor-qos-fairshare")
ACCOUNTING = {"multifactor-qos-fairshare": (("high", "low"), 0.35)}
"""The policies that need slurmdbd: the QOS levels (first: high) and the share of
jobs submitted with the first."""
RUNS = HERE / "runs"
"""Slurm's records of each run, as sacct text: the replays can be redone from them."""
_LINE = re.compile(r"^\[(\S+)\] (.*)$")
_EVENTS = {
    "submit": re.compile(r"_slurm_rpc_submit_batch_job: JobId=(\d+)"),
    "end": re.compile(r"_job_complete: JobId=(\d+) done"),
    "main": re.compile(r"sched: Allocate JobId=(\d+)"),
    "backfill": re.compile(r"backfill: _start_job: Started JobId=(\d+)"),
}


def ctld_events(log: Path) -> list[tuple[float, str, int]]:
    """(time, kind, job) from slurmctld's log: submissions, completions, starts."""
    from datetime import datetime

    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        for kind, pattern in _EVENTS.items():
            found = pattern.search(m.group(2))
            if found:
                at = datetime.fromisoformat(m.group(1)).timestamp()
                out.append((at, kind, int(found.group(1))))
    return out


def start_latency(events: list[tuple[float, str, int]]) -> dict[str, float]:
    """How long after the last event that could have let a job start it started.

    The event is the later of its submission and the last completion before its
    start (an upper bound of Slurm's reaction time: a start a completion made
    possible earlier is counted from the later completion). htcsim's is 0.
    """
    submitted: dict[int, float] = {}
    last_end = -1.0
    gaps = []
    starts = {"main": 0, "backfill": 0}
    for at, kind, job in sorted(events):
        if kind == "submit":
            submitted[job] = at
        elif kind == "end":
            last_end = at
        elif job in submitted:
            starts[kind] += 1
            gaps.append(at - max(submitted[job], last_end))
    g = np.array(gaps)
    return {
        "latency_median_s": float(np.median(g)),
        "latency_p95_s": float(np.percentile(g, 95)),
        "main_starts": starts["main"],
        "backfill_starts": starts["backfill"],
    }


def run_one(
    name: str, n_jobs: int, seed: int, work: Path, offset_s: float = 0.0
) -> dict[str, object]:
    """One policy's run; ``offset_s``: seconds between the cluster being up and
    the first submission (the phase of slurmctld's clocks against the
    workload's), its records then kept as ``NAME-seedS-offsetO``."""
    policy = load_policy(HERE / f"{name}.toml")
    stem = f"{name}-seed{seed}" + (f"-offset{offset_s:g}" if offset_s else "")
    exported = export_slurm(policy, work / name)
    jobs = generate(seed, n_jobs)
    if name in ACCOUNTING:
        jobs = with_qos(jobs, seed, *ACCOUNTING[name])
    cluster = start_cluster(
        exported.files[0], slurm_nodes(), accounting=name in ACCOUNTING, users=USERS
    )
    try:
        if offset_s:
            time.sleep(offset_s)  # the phase under test, not a wait for readiness
        t0 = time.monotonic()
        submitted = submit_all(cluster, jobs)
        wall = time.monotonic() - t0
        kept = RUNS / f"{stem}.sacct"
        if name in ACCOUNTING:
            imported = accounting_sacct(cluster, set(submitted), kept)
            wrong = submission_mismatches(submitted, imported)
            if wrong:
                raise RuntimeError("sacct does not reproduce the submission: " + "; ".join(wrong))
        else:
            imported = import_run(cluster, kept)
    finally:
        cluster.stop()
    log = cluster.rundir / "log" / "slurmctld.log"
    latency = start_latency(ctld_events(log))
    write_clock(RUNS / f"{stem}.clock.json", cluster.ctld_started, log, imported)
    cluster.remove()
    replays = replay_columns(imported, policy, exported.files[0])
    return {"policy": name, "seed": seed, "wall_s": round(wall, 1), **latency, **replays}


def write_clock(path: Path, ctld_started: float, log: Path, imported: SacctImport) -> None:
    """When slurmctld started (spawned, and its log's first line) and the
    replay's time 0 (the first submission), as epoch seconds: Slurm
    recomputes priorities every PriorityCalcPeriod from its start, and this
    is the phase of that clock against the replay's."""
    first = next(iter(ctld_log_times(log)), None)
    clock = {
        "slurmctld_spawned": round(ctld_started, 3),
        "slurmctld_first_log": first,
        "first_submit": imported.workload.unix_start_time,
    }
    path.write_text(json.dumps(clock, indent=1) + "\n", encoding="utf-8")


def ctld_log_times(log: Path) -> list[float]:
    """The timestamps of slurmctld's log lines, as epoch seconds."""
    from datetime import datetime

    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if m:
            with contextlib.suppress(ValueError):
                out.append(round(datetime.fromisoformat(m.group(1)).timestamp(), 3))
    return out


def replay_columns(imported: SacctImport, policy: Policy, conf: Path) -> dict[str, object]:
    """Every figure that compares Slurm's records with a replay of them: the
    plain replay, +1 s per job, best fit, and the Slurm profile read from ``conf``.
    The policy's user shares and QoS are renamed to the import's ids first."""
    policy = for_import(policy, imported)
    row = asdict(compare(imported, replay(imported, policy)))
    best = compare(imported, replay(imported, replace(policy, placement="best_fit")))
    placement = {
        "best_fit_order_agreement": best.order_agreement,
        "best_fit_start_delta_median_s": best.start_delta_median_s,
        "best_fit_mean_wait_sim_s": best.mean_wait_sim_s,
    }
    profile = compare(imported, replay(imported, slurm_profile(policy, conf)))
    compat = {
        "compat_order_agreement": profile.order_agreement,
        "compat_kendall_tau": profile.kendall_tau,
        "compat_start_delta_median_s": profile.start_delta_median_s,
        "compat_start_delta_p95_s": profile.start_delta_p95_s,
        "compat_mean_wait_sim_s": profile.mean_wait_sim_s,
    }
    return {**row, **with_reaction(imported, policy), **placement, **compat}


def replay_only(work: Path) -> pl.DataFrame:
    """results.csv with its replay columns redone from the records in runs/."""
    old = pl.read_csv(HERE / "results.csv")
    rows = []
    for row in old.iter_rows(named=True):
        name, seed = str(row["policy"]), int(row["seed"])
        policy = load_policy(HERE / f"{name}.toml")
        conf = export_slurm(policy, work / f"{name}-{seed}").files[0]
        imported = read_sacct(RUNS / f"{name}-seed{seed}.sacct")
        rows.append({**row, **replay_columns(imported, policy, conf)})
    return pl.DataFrame(rows)


def with_reaction(imported: SacctImport, policy: Policy) -> dict[str, float]:
    """The replay again with every job holding its cores 1 s longer: Slurm's
    reaction time between a completion and the next start, as run time."""
    jobs = imported.workload.jobs.copy()
    jobs["run_s"] += 1
    jobs["walltime_s"] = np.maximum(jobs["walltime_s"], jobs["run_s"])
    result = simulate(replace(imported.workload, jobs=jobs), policy, cluster=CLUSTER)
    start = np.asarray(result.start_s, dtype=np.int64)
    delta = np.abs(real_starts(imported) - start)
    return {
        "plus1_mean_wait_sim_s": float(np.mean(start - jobs["submit_s"])),
        "plus1_start_delta_median_s": float(np.median(delta)),
    }


def write_markdown(frame: pl.DataFrame) -> None:
    """results.md: the table as Markdown, one column per figure."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines.extend("| " + " | ".join(str(v) for v in row) + " |" for row in frame.iter_rows())
    (HERE / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description="htcsim's replay against a real Slurm")
    parser.add_argument("policies", nargs="*", metavar="POLICY", help=", ".join(POLICIES))
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--offset",
        type=float,
        default=0.0,
        help="seconds from the cluster being up to the first submission; the records go "
        "to runs/ only (not to the results table)",
    )
    parser.add_argument("--table-only", action="store_true", help="rewrite results.md only")
    parser.add_argument(
        "--replay-only", action="store_true", help="redo the replays of results.csv from runs/"
    )
    args = parser.parse_args()
    if args.table_only:
        write_markdown(pl.read_csv(HERE / "results.csv"))
        return
    if args.replay_only:
        with tempfile.TemporaryDirectory() as tmp:
            frame = replay_only(Path(tmp)).with_columns(pl.col(pl.Float64).round(3))
        frame.write_csv(HERE / "results.csv")
        write_markdown(frame)
        print(frame)
        return
    unknown = [p for p in args.policies if p not in POLICIES]
    if unknown:
        sys.exit(f"unknown policy {unknown[0]!r}: choose from {', '.join(POLICIES)}")
    reason = skip_reason()
    if reason is None and any(p in ACCOUNTING for p in args.policies or POLICIES):
        reason = slurm_dbd.skip_reason()
    if reason:
        sys.exit(f"cannot run a real Slurm here: {reason}")
    rows = []
    RUNS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.policies or POLICIES:
            row = run_one(name, args.jobs, args.seed, Path(tmp), args.offset)
            print(row, flush=True)
            rows.append(row)
    if args.offset:
        return
    frame = pl.DataFrame(rows).with_columns(pl.col(pl.Float64).round(3))
    csv = HERE / "results.csv"
    if csv.exists():
        old = pl.read_csv(csv)
        old = old.join(frame.select("policy", "seed"), on=["policy", "seed"], how="anti")
        frame = pl.concat([old, frame], how="diagonal_relaxed")
    frame = frame.sort("seed", "policy")
    frame.write_csv(csv)
    write_markdown(frame)
    print(frame)


if __name__ == "__main__":
    main()
