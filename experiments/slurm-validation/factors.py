"""Which multifactor factors the replay needs to start jobs in Slurm's order.

    python experiments/slurm-validation/factors.py [SEED ...]

Replays the records of the multifactor-qos-fairshare runs kept in ``runs/``
(written by run.py; no Slurm needed) with the Slurm profile, under the policy
as run and again with one factor's weight set to 0 (QOS, fairshare, age), with
job size alone, and in submit order. A factor Slurm used shows as a drop in
the pairs started in the same order when the replay leaves it out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from htcsim.policy import Policy, load_policy  # noqa: E402
from htcsim.slurm.export import export_slurm  # noqa: E402
from htcsim.workload.sacct import read_sacct  # noqa: E402
from tests.slurm_replay import compare, for_import, replay, slurm_profile  # noqa: E402

NAME = "multifactor-qos-fairshare"


def variants(policy: Policy) -> dict[str, Policy]:
    return {
        "as run": policy,
        "without QOS": replace(policy, priority_weight_qos=0.0),
        "without fairshare": replace(policy, priority_weight_fairshare=0.0),
        "without age": replace(policy, priority_weight_age=0.0),
        "size only": replace(
            policy, priority_weight_qos=0.0, priority_weight_fairshare=0.0, priority_weight_age=0.0
        ),
        "submit order": replace(policy, order="fcfs"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seeds", nargs="*", type=int, default=[1, 2], metavar="SEED")
    args = parser.parse_args()
    policy = load_policy(HERE / f"{NAME}.toml")
    print("| replay (profile) | seed | pairs in the same order | \\|Δ start\\| median / p95 (s) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        conf = export_slurm(policy, Path(tmp)).files[0]
        for seed in args.seeds:
            path = HERE / "runs" / f"{NAME}-seed{seed}.sacct"
            if not path.exists():
                sys.exit(f"{path.name} not in runs/: run run.py --seed {seed} {NAME} first")
            imported = read_sacct(path)
            for label, variant in variants(for_import(policy, imported)).items():
                a = compare(imported, replay(imported, slurm_profile(variant, conf)))
                print(
                    f"| {label} | {seed} | {a.order_agreement:.3f} | "
                    f"{a.start_delta_median_s:g} / {a.start_delta_p95_s:.1f} |"
                )


if __name__ == "__main__":
    main()
