"""Partitions: disjoint node sets, each scheduled as a machine of its own.

The strongest check is a decomposition: with no limit or fairshare tying the
partitions together, a replay of the whole cluster must give every job the
start it gets when its partition's jobs are replayed alone on its nodes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htcsim.cluster import Cluster, ClusterError, NodeType, Partition, load_cluster
from htcsim.kernel import JOB_SPEC_DTYPE, Kernel, KernelInputError, Reason, node_capacity
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy
from htcsim.sim import simulate


def two_partitions() -> Kernel:
    """Nodes 0-1 in partition 0, nodes 2-3 in partition 1, one core each."""
    kernel = Kernel(node_capacity(4, 1), Policy(backfill="easy"))
    kernel.set_partitions(np.array([0, 0, 1, 1], dtype=np.int32))
    return kernel


def specs(rows: list[tuple[int, int, int, int]]) -> np.ndarray:
    """(job_id, cores, walltime, partition) rows, all submitted at 0."""
    out = np.zeros(len(rows), dtype=JOB_SPEC_DTYPE)
    for k, (job_id, cores, wall, part) in enumerate(rows):
        out[k]["job_id"] = job_id
        out[k]["walltime_s"] = wall
        out[k]["n_tasks"] = cores
        out[k]["per_task"][0] = 1
        out[k]["part_idx"] = part
    out["user_idx"] = out["group_idx"] = out["qos_idx"] = -1
    return out


def test_a_job_uses_only_its_partition() -> None:
    kernel = two_partitions()
    kernel.add_jobs(specs([(1, 2, 100, 0), (2, 1, 50, 0), (3, 2, 100, 1)]))
    for slot in range(3):
        kernel.submit(slot, 0)
    kernel.schedule(0)
    assert sorted(kernel.started_jobs().tolist()) == [0, 2]
    assert kernel.job_allocation(0)[0].tolist() == [0, 1]
    assert kernel.job_allocation(2)[0].tolist() == [2, 3]
    # job 2 waits for partition 0 although nothing else could use partition 1's cores
    assert kernel.why_pending(1) == Reason["Resources"]
    kernel.finish(0, 100)
    kernel.schedule(100)
    assert kernel.started_jobs().tolist() == [1]


def test_each_partition_has_its_own_head_and_backfill() -> None:
    kernel = two_partitions()
    # partition 0: A holds one node till 100; B (2 cores) is the head; C (1 core, 500 s)
    # would delay B: it waits. Partition 1: D (2 cores) runs; nothing there is delayed by B.
    kernel.add_jobs(specs([(1, 1, 100, 0), (2, 2, 100, 0), (3, 1, 500, 0), (4, 2, 10, 1)]))
    for slot in range(4):
        kernel.submit(slot, 0)
    kernel.schedule(0)
    assert sorted(kernel.started_jobs().tolist()) == [0, 3]
    assert kernel.estimate_start(1, 0) == 100
    assert kernel.why_pending(2) == Reason["Priority"]


def test_requests_are_checked_against_the_partition() -> None:
    kernel = two_partitions()
    with pytest.raises(KernelInputError, match="job 7 asks for more than its partition has"):
        kernel.add_jobs(specs([(7, 3, 10, 1)]))
    with pytest.raises(KernelInputError, match="job 8 names partition 2, but the cluster has 2"):
        kernel.add_jobs(specs([(8, 1, 10, 2)]))


@st.composite
def partitioned(draw: st.DrawFn) -> tuple[Cluster, Workload]:
    """Random node types in two partitions and one-core-task jobs of either."""
    sizes = [draw(st.integers(1, 3)) for _ in range(2)]
    cores = [draw(st.integers(1, 4)) for _ in range(2)]
    cluster = Cluster(
        (NodeType("a", sizes[0], cores[0]), NodeType("b", sizes[1], cores[1])),
        partitions=(Partition("pa", ("a",), (1,)), Partition("pb", ("b",), (2,))),
    )
    n = draw(st.integers(1, 25))
    jobs = empty_jobs(n)
    jobs["job_id"] = np.arange(1, n + 1)
    jobs["submit_s"] = np.cumsum([draw(st.sampled_from([0, 0, 2, 10, 30])) for _ in range(n)])
    part = np.array([draw(st.sampled_from([1, 2])) for _ in range(n)])
    jobs["partition_id"] = part
    for k in range(n):
        total = sizes[part[k] - 1] * cores[part[k] - 1]
        jobs["n_tasks"][k] = draw(st.integers(1, total))
        jobs["walltime_s"][k] = draw(st.integers(1, 60))
        jobs["run_s"][k] = draw(st.integers(0, int(jobs["walltime_s"][k]) + 10))
    jobs["cores_per_task"] = 1
    workload = Workload(name="parts", jobs=jobs, machine=Machine(1, 1))
    return cluster, workload


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(partitioned(), st.sampled_from(["none", "easy", "conservative"]))
def test_a_partition_behaves_as_its_own_machine(
    case: tuple[Cluster, Workload], backfill: str
) -> None:
    cluster, workload = case
    policy = Policy(backfill=backfill)  # type: ignore[arg-type]
    whole = simulate(workload, policy, cluster=cluster)
    for k, (node_type, number) in enumerate((("a", 1), ("b", 2))):
        mine = workload.jobs["partition_id"] == number
        if not mine.any():
            continue
        alone = Cluster((cluster.node_types[k],))
        part = Workload(name="alone", jobs=workload.jobs[mine].copy(), machine=Machine(1, 1))
        single = simulate(part, policy, cluster=alone)
        assert whole.start_s[mine].tolist() == single.start_s.tolist(), node_type


def test_partitions_in_the_cluster_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[node_type]]\nname = "cpu"\ncount = 2\ncores = 4\n'
        '[[node_type]]\nname = "gpu"\ncount = 1\ncores = 4\ngpus = 2\n'
        '[[partition]]\nname = "batch"\nnode_types = ["cpu"]\nids = [1]\n'
        '[[partition]]\nname = "accel"\nnode_types = ["gpu"]\nids = [2, 3]\n'
    )
    cluster = load_cluster(path)
    assert cluster.node_partition().tolist() == [0, 0, 1]
    assert cluster.job_partition(np.array([1, 2, 3, -1])).tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ('[[partition]]\nname = "p"\nnode_types = ["gpu"]\n', "node type 'gpu' is not defined"),
        ('[[partition]]\nname = "p"\nnode_types = ["cpu"]\nsize = 3\n', "unknown key(s) size"),
        (
            '[[partition]]\nname = "p"\nnode_types = ["cpu"]\n'
            '[[partition]]\nname = "q"\nnode_types = ["cpu"]\n',
            "partition 'q': node type 'cpu' is already in partition 'p'",
        ),
        (
            '[[partition]]\nname = "p"\nnode_types = ["cpu"]\nids = [1]\n'
            '[[partition]]\nname = "q"\nnode_types = ["big"]\nids = [1]\n',
            "partition 'q': id 1 is already in partition 'p'",
        ),
        ('[[partition]]\nname = "p"\nnode_types = ["big"]\n', "node type(s) cpu belong to no"),
    ],
)
def test_bad_partitions_name_the_partition(tmp_path: Path, tables: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[node_type]]\nname = "cpu"\ncount = 2\ncores = 4\n'
        '[[node_type]]\nname = "big"\ncount = 1\ncores = 8\n' + tables
    )
    with pytest.raises(ClusterError, match=re.escape(message)):
        load_cluster(path)
