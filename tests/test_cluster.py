"""Cluster files: heterogeneous node types in, a capacity table out, errors naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from htcsim.cli.app import app
from htcsim.cluster import Cluster, ClusterError, NodeType, Reservation, load_cluster
from htcsim.model import Machine
from htcsim.sim import simulate
from htcsim.workload.htc import generate_htc

CLUSTER = """
[[node_type]]
name = "cpu"
count = 3
cores = 8
mem_mib = 32000

[[node_type]]
name = "gpu"
count = 1
cores = 16
mem_mib = 64000
gpus = 4
"""


def test_a_cluster_file_becomes_one_capacity_row_per_node(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(CLUSTER)
    cluster = load_cluster(path)
    assert cluster.n_nodes == 4 and cluster.total_cores == 40
    assert cluster.capacity().tolist() == [
        [8, 32000, 0, 0],
        [8, 32000, 0, 0],
        [8, 32000, 0, 0],
        [16, 64000, 4, 0],
    ]
    assert cluster.node_type_of().tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "needs at least one [[node_type]]"),
        ('[[node_type]]\nname = "a"\ncount = 2\n', "node_type 'a': cores is required"),
        ('[[node_type]]\nname = "a"\ncount = 0\ncores = 4\n', "'a': count must be an integer >= 1"),
        ('[[node_type]]\nname = "a"\ncount = 1\ncores = 4\nram = 5\n', "unknown key(s) ram"),
        (
            '[[node_type]]\nname = "a"\ncount = 1\ncores = 4\n[[node_type]]\nname = "a"\n'
            "count = 1\ncores = 2\n",
            "the name is used twice",
        ),
        ("[[node_type]\n", "not valid TOML"),
    ],
)
def test_bad_cluster_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ClusterError) as error:
        load_cluster(path)
    assert message in str(error.value) and "c.toml" in str(error.value)


def test_replay_on_a_cluster_uses_its_cores() -> None:
    workload = generate_htc(2_000, 2, 8, seed=3, load=0.8)
    bigger = Cluster((NodeType("a", count=4, cores=8),))
    on_machine = simulate(workload)
    on_cluster = simulate(workload, cluster=bigger)
    assert on_cluster.total_cores == 32 and on_machine.total_cores == 16
    assert on_cluster.wait_s.mean() <= on_machine.wait_s.mean()
    same = simulate(workload, cluster=Cluster.from_machine(Machine(2, 8)))
    np.testing.assert_array_equal(same.start_s, on_machine.start_s)


def test_simulate_with_a_cluster_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(CLUSTER)
    out = tmp_path / "out"
    runner = CliRunner()
    swf = tmp_path / "htc.swf"
    gen = ["generate", "htc", "--jobs", "1000", "--nodes", "2", "--cores", "8", "-o", str(swf)]
    assert runner.invoke(app, gen).exit_code == 0
    result = runner.invoke(
        app, ["simulate", str(swf), "--cluster", str(path), "-o", str(out), "--no-plots"]
    )
    assert result.exit_code == 0, result.output
    assert "40 cores (3 cpu x 8, 1 gpu x 16)" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [t["name"] for t in summary["cluster"]] == ["cpu", "gpu"]


def test_a_job_too_big_for_the_cluster_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(CLUSTER)
    result = CliRunner().invoke(app, ["simulate", "--cluster", str(path), "--max-jobs", "50"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "job 3 needs 128 cores in all" in text and "--skip-oversized" in text
    skipped = CliRunner().invoke(
        app, ["simulate", "--cluster", str(path), "--max-jobs", "50", "--skip-oversized"]
    )
    assert skipped.exit_code == 0, skipped.output
    assert "dropped: oversized 9" in skipped.output


def test_memory_requests_count_only_on_a_cluster_with_memory() -> None:
    # Two one-core jobs asking 3,000 MiB each, one node of 4 cores. With 4,000
    # MiB declared they run one after the other; with no memory declared (an
    # SWF machine), side by side.
    from htcsim.model import Workload, empty_jobs

    jobs = empty_jobs(2, n_tasks=1, walltime_s=100, run_s=100, mem_mib_per_task=3_000)
    jobs["job_id"] = [1, 2]
    workload = Workload("mem", jobs, Machine(n_nodes=1, cores_per_node=4))
    with_memory = Cluster((NodeType("m", count=1, cores=4, mem_mib=4_000),))
    assert simulate(workload, cluster=with_memory).start_s.tolist() == [0, 100]
    assert simulate(workload).start_s.tolist() == [0, 0]


RESERVATION = """
[[reservation]]
name = "campaign"
start_s = 86400
end_s = 172800
node_type = "gpu"
count = 1
user = 17

[[reservation]]
start_s = 0
end_s = 3600
qos = "debug"
"""


def test_reservations_load_with_their_owner_and_nodes(tmp_path: Path) -> None:
    """The first reservation names a node type and a count, the second neither:
    every node, and a default name from its position."""
    path = tmp_path / "cluster.toml"
    path.write_text(CLUSTER + RESERVATION)
    cluster = load_cluster(path)
    campaign, second = cluster.reservations
    assert campaign == Reservation(
        name="campaign",
        start_s=86400,
        end_s=172800,
        owner="user",
        owner_name="17",
        node_type="gpu",
        count=1,
    )
    assert cluster.reservation_nodes(campaign).tolist() == [3]
    assert (second.name, second.owner, second.owner_name) == ("reservation2", "qos", "debug")
    assert cluster.reservation_nodes(second).tolist() == [0, 1, 2, 3]


def reservation_table(**values: object) -> str:
    """One [[reservation]] table named "r" over [0, 100) for user 1, with changes
    (None drops a key)."""
    table: dict[str, object] = {"name": "r", "start_s": 0, "end_s": 100, "user": 1}
    table.update(values)
    lines = [f"{key} = {json.dumps(value)}" for key, value in table.items() if value is not None]
    return "\n[[reservation]]\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"owner": "x"}, "reservation 'r': unknown key(s) owner (known: name, start_s"),
        ({"end_s": 0}, "reservation 'r': end_s must be after start_s"),
        ({"end_s": -5}, "reservation 'r': end_s must be after start_s"),
        ({"group": 3}, "reservation 'r': needs exactly one of user, group or qos"),
        ({"user": None}, "reservation 'r': needs exactly one of user, group or qos"),
        ({"node_type": "tpu"}, "reservation 'r': node_type 'tpu' is not a node type (cpu, gpu)"),
        ({"node_type": "gpu", "count": 2}, "reservation 'r': count must be an integer in 1..1"),
        ({"count": 5}, "reservation 'r': count must be an integer in 1..4, got 5"),
        ({"count": 0}, "reservation 'r': count must be an integer in 1..4, got 0"),
        ({"start_s": None}, "reservation 'r': start_s must be an integer (seconds), got None"),
        ({"end_s": "later"}, "reservation 'r': end_s must be an integer (seconds), got 'later'"),
    ],
)
def test_bad_reservations_are_named(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CLUSTER + reservation_table(**changes))
    with pytest.raises(ClusterError) as error:
        load_cluster(path)
    assert message in str(error.value) and "c.toml" in str(error.value)
