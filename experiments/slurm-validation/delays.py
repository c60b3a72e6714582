"""How long Slurm takes to reuse CPUs, read from the records of run.py's runs.

    python experiments/slurm-validation/delays.py

For each run kept in ``runs/`` (no Slurm needed): the share of Slurm's
starts that fall on one second modulo 3 (on the replay's clock: seconds
after the first submission; a share near 1/3 means no 3-second clock), and
the replay with the Slurm profile again with every job holding its CPUs
``k`` more seconds (k = 0, 1, 2): the pairs started in Slurm's order, the
median |Slurm start - replay start| and the mean wait, against Slurm's. The
profile's reaction time (1 s after each submission and completion) is the
k = 0 column; a better fit at k = 1 says that Slurm takes about a second
longer than that between a job's end and the start its CPUs allow.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import numpy as np  # noqa: E402

from htcsim.policy import Policy, load_policy  # noqa: E402
from htcsim.slurm.export import export_slurm  # noqa: E402
from htcsim.workload.sacct import SacctImport, read_sacct  # noqa: E402
from tests.slurm_replay import (  # noqa: E402
    Agreement,
    compare,
    for_import,
    real_starts,
    replay,
    slurm_profile,
)

POLICIES = ("fifo", "easy", "multifactor-size", "multifactor-qos-fairshare")
EXTRA_S = (0, 1, 2)


def held_longer(imported: SacctImport, policy: Policy, extra_s: int) -> Agreement:
    """The replay under ``policy`` with every job's run time ``extra_s`` longer."""
    jobs = imported.workload.jobs.copy()
    jobs["run_s"] += extra_s
    jobs["walltime_s"] = np.maximum(jobs["walltime_s"], jobs["run_s"])
    longer = replace(imported, workload=replace(imported.workload, jobs=jobs))
    return compare(imported, replay(longer, policy))


def on_a_3s_clock(imported: SacctImport) -> float:
    """The largest share of Slurm's starts on one second modulo 3."""
    starts = real_starts(imported)
    return float(np.bincount(starts % 3, minlength=3).max() / len(starts))


def main() -> None:
    head = " | ".join(f"+{k} s: pairs, \\|Δ\\| median, wait" for k in EXTRA_S)
    print(f"| policy | seed | starts on a 3-s clock | Slurm's mean wait | {head} |")
    print("|---|---|---|---|" + "---|" * len(EXTRA_S))
    with tempfile.TemporaryDirectory() as tmp:
        for name in POLICIES:
            policy = load_policy(HERE / f"{name}.toml")
            conf = export_slurm(policy, Path(tmp) / name).files[0]
            for seed in (1, 2):
                path = HERE / "runs" / f"{name}-seed{seed}.sacct"
                if not path.exists():
                    continue
                imported = read_sacct(path)
                profile = slurm_profile(for_import(policy, imported), conf)
                cells = []
                for k in EXTRA_S:
                    a = held_longer(imported, profile, k)
                    median, wait = a.start_delta_median_s, a.mean_wait_sim_s
                    cells.append(f"{a.order_agreement:.3f}, {median:g}, {wait:.1f}")
                real = compare(imported, replay(imported, profile)).mean_wait_real_s
                print(
                    f"| {name} | {seed} | {on_a_3s_clock(imported):.2f} | {real:.1f} | "
                    + " | ".join(cells)
                    + " |"
                )


if __name__ == "__main__":
    main()
