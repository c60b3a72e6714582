"""The policy file: strict TOML in, the same Policy out, errors that name the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from htcsim.cli.app import app
from htcsim.policy import (
    DEFAULT_POLICY_TOML,
    Policy,
    PolicyError,
    QoS,
    load_policy,
    policy_from_mapping,
    save_policy,
)

runner = CliRunner()


def test_the_documented_default_is_the_default_policy() -> None:
    assert policy_from_mapping(tomllib.loads(DEFAULT_POLICY_TOML)) == Policy()


def test_save_then_load_gives_the_same_policy(tmp_path: Path) -> None:
    policy = Policy(
        order="multifactor",
        backfill="conservative",
        backfill_depth=50,
        starvation_limit_s=86400,
        priority_weight_fairshare=5000.0,
        nice=(("7", 100.0),),
        user_shares=(("3", 2.0), ("4", 1.0)),
        group_shares=(("1", 3.0),),
        fairshare_algorithm="fair_tree",
        qos=(QoS("high", priority=100.0, queues=(1, 2), running_jobs=4),),
        max_gpus_per_group=8,
        max_queued_jobs_per_user=100,
    )
    save_policy(policy, tmp_path / "p.toml")
    assert load_policy(tmp_path / "p.toml") == policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[backfill]\nmode = "eazy"\n', "p.toml: backfill.mode must be one of none, easy"),
        ("[backfill]\ndepth = -1\n", "p.toml: backfill.depth must be an integer >= 0"),
        (
            "[backfill]\ndepht = 3\n",
            "p.toml: unknown key backfill.depht (known: mode, depth, starvation_limit_s)",
        ),
        ('[fairshare]\nhalf_life = "7d"\n', "p.toml: unknown key fairshare.half_life"),
        ("[fairshre]\nhalf_life_s = 7\n", "p.toml: unknown section [fairshre]"),
        ("[priority]\nweight_age = -1\n", "p.toml: priority.weight_age must be a number >= 0"),
        (
            '[fairshare.users]\n"3" = 0\n',
            "p.toml: fairshare.users value of '3' must be a number > 0",
        ),
        ("[fairshare]\nusers = 3\n", "p.toml: fairshare.users must be a [fairshare.users] table"),
        ('[[qos]]\nname = "hi"\nprioritee = 3\n', "p.toml: [[qos]] #1: unknown key prioritee"),
        (
            '[[qos]]\nname = "a"\nqueues = [1]\n[[qos]]\nname = "b"\nqueues = [1]\n',
            "p.toml: qos queue 1 maps to both 'a' and 'b'",
        ),
        (
            '[queue]\norder = "lifo"\n',
            "p.toml: queue.order must be one of fcfs, sjf, priority, multifactor",
        ),
        ("[queue\n", "p.toml: not valid TOML"),
    ],
)
def test_bad_files_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=re.escape(message)):
        load_policy(path)


def test_policy_init_show_and_simulate_with_it(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    assert runner.invoke(app, ["policy", "init", "-o", str(path)]).exit_code == 0
    text = path.read_text().replace('mode = "easy"', 'mode = "conservative"')
    path.write_text(text)
    shown = runner.invoke(app, ["policy", "show", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "(fcfs+conservative)" in shown.output
    assert 'mode = "conservative"' in shown.output
    run = runner.invoke(app, ["simulate", "--policy", str(path), "--max-jobs", "500"])
    assert run.exit_code == 0, run.output
    assert "fcfs+conservative" in run.output
    both = runner.invoke(app, ["simulate", "--policy", str(path), "--backfill", "none,easy"])
    assert "fcfs+none" in both.output and "fcfs+easy" in both.output


def test_a_bad_policy_file_stops_simulate_with_its_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[backfill]\nmode = 3\n")
    result = runner.invoke(app, ["simulate", "--policy", str(path)])
    assert result.exit_code == 2
    assert "backfill.mode must be one of" in result.output


def test_the_readme_examples_load() -> None:
    """The policy and cluster files shown in the README are valid as written."""
    from htcsim.cluster import cluster_from_mapping

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", readme, re.S)]
    policies = [policy_from_mapping(b, "README") for b in blocks if "queue" in b]
    clusters = [cluster_from_mapping(b, "README") for b in blocks if "node_type" in b]
    assert [p.label for p in policies] == ["multifactor+easy"]
    assert policies[0].qos[0].queues == (1,) and dict(policies[0].nice) == {"17": 500.0}
    assert clusters[0].reservations[0].owner == "qos"
    autoscaled = [policy_from_mapping(b, "README") for b in blocks if "autoscale" in b]
    assert autoscaled and autoscaled[0].autoscale and autoscaled[0].autoscale_max_nodes == 240
    from htcsim.tune.space import space_from_mapping

    spaces = [
        space_from_mapping(b, Policy(), "README")
        for b in blocks
        if "backfill" in b and "queue" not in b
    ]
    assert spaces and spaces[0].dimensions == 4
