"""The agent's settings file: the ``[cluster]`` section (a Dask cluster manager
the agent creates and scales) is checked key by key, and a manager that
cannot be created is an error naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from htcsim.agent.config import AgentConfigError, ClusterConfig, load_agent_config
from htcsim.agent.executors.dask.cluster_pool import create_manager

GOOD = """dask_insecure = true
[cluster]
manager = "distributed.LocalCluster"
node_type = "std"
nodes = 4
cores = 2
mem_mib = 1000

[cluster.options]
n_workers = 0
"""


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load_agent_config(path)


def test_a_cluster_section_makes_the_dask_backend(tmp_path: Path) -> None:
    config = _load(tmp_path, GOOD)
    cluster = config.cluster  # type: ignore[attr-defined]
    assert config.backend == "dask"  # type: ignore[attr-defined]
    assert cluster == ClusterConfig("distributed.LocalCluster", "std", 4, 2, 1000, 0)
    assert cluster.options == {"n_workers": 0}
    nested = _load(tmp_path, "[agent]\nport = 9000\n" + GOOD)
    assert nested.cluster == cluster  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("nodes = 4", "nodes = 0"), "cluster.nodes must be >= 1"),
        (GOOD.replace("cores = 2", "cores = 0"), "cluster.cores must be >= 1"),
        (GOOD.replace("mem_mib = 1000", "mem_mib = -1"), "cluster.mem_mib must be >= 0"),
        (GOOD.replace("nodes = 4", 'nodes = "4"'), "cluster.nodes must be a int"),
        (GOOD.replace('node_type = "std"', 'node_type = "a b"'), "cluster.node_type must be"),
        (GOOD.replace("nodes = 4", "nodez = 4"), "unknown key cluster.nodez"),
        (
            GOOD.replace("nodes = 4", "nodes = 4\nboot_timeout_s = 0"),
            "cluster.boot_timeout_s must be > 0",
        ),
        (
            GOOD.replace("nodes = 4", 'nodes = 4\nboot_timeout_s = "1h"'),
            "cluster.boot_timeout_s must be a number",
        ),
        (GOOD.replace('manager = "distributed.LocalCluster"', ""), "cluster.manager is required"),
        (GOOD.replace('"distributed.LocalCluster"', '"LocalCluster"'), "must be an import path"),
        (GOOD.replace("[cluster.options]\nn_workers = 0", "options = 3"), "cluster.options must"),
        ('scheduler = "tcp://h:8786"\n' + GOOD, "scheduler must be empty with a [cluster]"),
        ('backend = "local"\n' + GOOD, "backend must be dask with a [cluster]"),
        ("cluster = 3\n", "cluster must be a table"),
    ],
)
def test_bad_cluster_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AgentConfigError) as info:
        _load(tmp_path, text)
    assert message in str(info.value)
    assert "agent.toml" in str(info.value)


def test_a_manager_that_cannot_be_created_names_the_setting() -> None:
    with pytest.raises(AgentConfigError, match=r"cluster.manager: cannot import no_such_pkg"):
        create_manager(ClusterConfig("no_such_pkg.Cluster"))
    with pytest.raises(AgentConfigError, match=r"cluster.manager: distributed has no class Nope"):
        create_manager(ClusterConfig("distributed.Nope"))
    bad_option = ClusterConfig(
        "dask_jobqueue.SLURMCluster", options={"cores": 1, "memory": "1GB", "no_such_option": 1}
    )
    with pytest.raises(AgentConfigError, match=r"cluster.options: dask_jobqueue.SLURMCluster"):
        create_manager(bad_option)


def test_serve_refuses_a_pool_the_policy_does_not_fit(tmp_path: Path) -> None:
    """Through the real CLI: a max above the pool, or a manager that does not
    exist, stops the start with one line naming the setting."""
    from typer.testing import CliRunner

    from htcsim.cli.app import app

    policy = tmp_path / "policy.toml"
    policy.write_text("[autoscale]\nenabled = true\nmin_nodes = 1\nmax_nodes = 9\n")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nallow_root = true\nrun_jobs_as = "agent"\n' + GOOD
    )
    args = ["agent", "serve", "--config", str(config), "--policy", str(policy)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "max 9 nodes, more than the pool's 4" in result.output
    config.write_text(
        f'state_dir = "{tmp_path / "state2"}"\nallow_root = true\nrun_jobs_as = "agent"\n'
        + GOOD.replace("distributed.LocalCluster", "no_such_pkg.Cluster")
    )
    result = CliRunner().invoke(app, ["agent", "serve", "--config", str(config)])
    assert result.exit_code != 0
    assert "cluster.manager: cannot import no_such_pkg" in result.output


def test_the_dask_lease_is_read_and_checked(tmp_path: Path) -> None:
    assert _load(tmp_path, "lease_s = 4.5\n").lease_s == 4.5  # type: ignore[attr-defined]
    assert _load(tmp_path, "").lease_s == 10.0  # type: ignore[attr-defined]
    for bad in ("0.1", "-3", "7200"):
        with pytest.raises(AgentConfigError, match=r"agent.toml: lease_s must be 0.5..3600"):
            _load(tmp_path, f"lease_s = {bad}\n")
