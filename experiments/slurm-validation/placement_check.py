"""Which placement rule gives the node Slurm chose, start by start.

    python experiments/slurm-validation/placement_check.py [--jobs N] [--seed S ...]

(run as root from the repository root, like run.py). Runs a seeded FIFO
workload (jobs of 1-4 cores on nodes of 4, 4, 2 and 2 CPUs) on run.py's
single-host Slurm and keeps each job's node
from Slurm's jobcomp records. For every start, the free CPUs of each node are
rebuilt from the jobs Slurm ran (those started before it, or in the same
second with a lower id, and not yet ended) and each of htcsim's placement
rules picks a node there; the counts of starts where the rule picked Slurm's
node are printed, over every start and over the starts in whose second no
job ended (where the records say unambiguously which CPUs were free). The
rules are applied by the kernel itself (a one-pass replay of that state).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import numpy as np  # noqa: E402

from htcsim.cluster import Cluster, NodeType  # noqa: E402
from htcsim.kernel import JOB_SPEC_DTYPE, Kernel, ReplayFeed  # noqa: E402
from htcsim.policy import Policy  # noqa: E402
from htcsim.slurm.export import export_slurm  # noqa: E402
from tests.slurm_harness import skip_reason, start_cluster  # noqa: E402
from tests.slurm_replay import (  # noqa: E402
    epoch,
    generate,
    jobcomp_records,
    slurm_nodes,
    submit_all,
)

RULES = ("first_fit", "best_fit", "cons_tres")
CLUSTER = Cluster(node_types=(NodeType("big", 2, 4), NodeType("small", 2, 2)))
"""Nodes of 4, 4, 2 and 2 CPUs (big1, big2, small1, small2): the rules differ
only on nodes of different sizes, so this check keeps them (run.py's nodes
are all of 8 CPUs)."""
SIZES = (1, 2, 3, 4)
SIZE_P = (0.4, 0.3, 0.15, 0.15)
"""Jobs of 1-4 cores, more small ones, one second apart on average: the
workload on which the README's placement figures were taken."""
FIFO = Policy(order="fcfs", backfill="none")


def rule_pick(busy: list[int], cores: int, placement: str) -> int:
    """The node a ``cores``-core job gets from the kernel under ``placement``
    when node n has ``busy[n]`` CPUs taken (blocker jobs pinned there)."""
    capacity = CLUSTER.capacity().copy()
    capacity[:, 0] -= np.array(busy)  # the CPUs other jobs hold (a full node: 0, no room)
    if (capacity[:, 0] < 0).any():
        raise ValueError(f"more CPUs busy than a node has: {busy}")
    kernel = Kernel(capacity, Policy(backfill="none", placement=placement))  # type: ignore[arg-type]
    spec = np.zeros(1, dtype=JOB_SPEC_DTYPE)
    spec["job_id"] = 1
    spec["walltime_s"] = 60
    spec["n_tasks"] = 1
    spec["per_task"][0, 0] = cores
    spec["user_idx"] = spec["group_idx"] = spec["qos_idx"] = -1
    kernel.add_jobs(spec)
    ReplayFeed(kernel, spec["submit_s"], np.array([60], dtype=np.int64)).step(0)
    return int(kernel.job_allocation(0)[0][0])


def check(records: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    names = [n.name for n in slurm_nodes(CLUSTER)]
    jobs = sorted(
        ((epoch(r["StartTime"]), epoch(r["EndTime"]), int(r["ProcCnt"]),
          names.index(r["NodeList"]), int(r["JobId"])) for r in records),
        key=lambda job: (job[0], job[4]),
    )  # (start, end, cpus, node, id) in start order, a second's starts by id  # fmt: skip
    out = {key: dict.fromkeys(("starts", *RULES), 0) for key in ("all", "clean")}
    for k, (start, _end, cores, node, _id) in enumerate(jobs):
        busy = [0] * len(names)
        for other in jobs[:k]:
            if other[1] > start:
                busy[other[3]] += other[2]
        clean = not any(other[1] == start for i, other in enumerate(jobs) if i != k)
        for key in ("all", "clean") if clean else ("all",):
            out[key]["starts"] += 1
            for rule in RULES:
                out[key][rule] += rule_pick(busy, cores, rule) == node
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="placement rules against Slurm's choices")
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seed", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        sys.exit(f"cannot run a real Slurm here: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seed:
            exported = export_slurm(FIFO, Path(tmp) / f"export-{seed}")
            cluster = start_cluster(exported.files[0], slurm_nodes(CLUSTER))
            try:
                jobs = generate(seed, args.jobs, mean_gap_s=1.0, sizes=SIZES, size_p=SIZE_P)
                submit_all(cluster, jobs)
                records = jobcomp_records(cluster.jobcomp)
            finally:
                cluster.stop()
                cluster.remove()
            for key, counts in check(records).items():
                shown = ", ".join(f"{rule} {counts[rule]}" for rule in RULES)
                print(f"seed {seed}, {key} starts ({counts['starts']}): {shown}", flush=True)


if __name__ == "__main__":
    main()
