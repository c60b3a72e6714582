"""Does the phase of Slurm's priority clock explain how it ordered the queue?

    python experiments/slurm-validation/priority_clock.py

slurmctld recomputes the multifactor priorities, and charges the usage
behind fairshare, every PriorityCalcPeriod (a minute here) counted from its
own start. For every multifactor-qos-fairshare run kept in ``runs/`` with
its clock (``*.clock.json``: when slurmctld started, and the first
submission; ``run.py --offset S`` delays the first submission by S seconds,
another phase), the replay with the Slurm profile is run without the clock
(priorities every 60 s after the last recomputation), with the clock at
Slurm's phase (``[slurm_compat] priority_phase_s``: slurmctld's start on the
replay's clock, rounded up to the second, modulo the minute), and at every
phase in steps of 3 s. No Slurm needed. Last, Slurm against itself: the pairs
of jobs two runs of the same workload started in the same order.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import replace
from itertools import combinations
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import numpy as np  # noqa: E402

from htcsim.policy import load_policy  # noqa: E402
from htcsim.slurm.export import export_slurm  # noqa: E402
from htcsim.workload.sacct import SacctImport, read_sacct  # noqa: E402
from tests.slurm_replay import compare, for_import, real_starts, replay, slurm_profile  # noqa: E402

NAME = "multifactor-qos-fairshare"
STEP_S = 3


def slurm_phase(imported: SacctImport, clock_path: Path, interval_s: int) -> int:
    """slurmctld's start on the replay's clock (its time 0 is the first
    submission), rounded up to the second, modulo the interval: its
    recomputations fall at that phase, and the replay's first pass at or
    after one is at the next whole second."""
    clock = json.loads(clock_path.read_text())
    start = imported.workload.unix_start_time or 0
    return math.ceil(clock["slurmctld_spawned"] - start) % interval_s


def same_order(a: dict[int, int], b: dict[int, int]) -> float:
    """Pairs of jobs (by id) two runs started in the same order, ties left out."""
    ids = sorted(set(a) & set(b))
    x = np.array([a[k] for k in ids])
    y = np.array([b[k] for k in ids])
    i, j = np.triu_indices(len(ids), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    untied = (sx != 0) & (sy != 0)
    return float(np.mean(sx[untied] == sy[untied]))


def main() -> None:
    policy = load_policy(HERE / f"{NAME}.toml")
    interval = policy.priority_interval_s
    runs = sorted(p for p in (HERE / "runs").glob(f"{NAME}-seed*.sacct"))
    starts: dict[str, dict[int, int]] = {}
    print(
        "| run | slurmctld start (s from the first submission) | phase | pairs: no clock "
        "| at Slurm's phase | every phase: min-max (best at) |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        conf = export_slurm(policy, Path(tmp)).files[0]
        for path in runs:
            clock_path = path.with_suffix(".clock.json")
            if not clock_path.exists():
                continue
            imported = read_sacct(path)
            phase = slurm_phase(imported, clock_path, interval)
            profile = slurm_profile(for_import(policy, imported), conf)
            plain = compare(imported, replay(imported, profile)).order_agreement
            at = compare(
                imported, replay(imported, replace(profile, slurm_priority_phase_s=phase))
            ).order_agreement
            sweep = {
                p: compare(
                    imported, replay(imported, replace(profile, slurm_priority_phase_s=p))
                ).order_agreement
                for p in range(0, interval, STEP_S)
            }
            best = max(sweep.values())
            spawned = json.loads(clock_path.read_text())["slurmctld_spawned"]
            offset = spawned - (imported.workload.unix_start_time or 0)
            print(
                f"| {path.stem} | {offset:+.1f} | {phase} | {plain:.3f} | {at:.3f} | "
                f"{min(sweep.values()):.3f}-{best:.3f} "
                f"({', '.join(str(p) for p, v in sweep.items() if v == best)}) |"
            )
            jobs = imported.workload.jobs["job_id"].tolist()
            starts[path.stem] = dict(zip(jobs, real_starts(imported).tolist(), strict=True))
    print()
    for a, b in combinations(starts, 2):
        if a.split("-offset")[0] == b.split("-offset")[0]:
            print(f"Slurm, {a} against {b}: {same_order(starts[a], starts[b]):.3f} of pairs")


if __name__ == "__main__":
    main()
