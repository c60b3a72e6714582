"""``htcsim import slurm-conf``: a site's slurm.conf and accounting as the policy it runs.

The site of ``tests/data/slurm-site`` is written as a site writes its files:
includes (a glob among them), comments, continuation lines, mixed-case keys,
NodeName=DEFAULT and PartitionName=DEFAULT lines, overlapping partitions, a
partition QOS, power saving, a ``sacctmgr dump`` and a QOS listing. Each value
below is what Slurm runs there, worked out by hand from those files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from htcsim.cluster import load_cluster
from htcsim.policy import QoS, load_policy
from htcsim.slurm.conf_read import read_slurm_conf
from htcsim.slurm.to_policy import import_slurm, policy_from_slurm
from tests.test_cli_errors import htcsim, one_error

SITE = Path(__file__).parent / "data" / "slurm-site"
ACCOUNTING = [SITE / "aurora.cfg", SITE / "qos.txt"]


def test_the_site_policy_is_what_its_slurm_runs() -> None:
    imported = import_slurm(SITE / "slurm.conf", ACCOUNTING)
    p = imported.policy
    assert (p.order, p.backfill, p.backfill_depth) == ("multifactor", "conservative", 2000)
    assert (p.priority_weight_age, p.priority_weight_size) == (1000.0, 500.0)
    assert (p.priority_weight_fairshare, p.priority_weight_qos) == (10000.0, 5000.0)
    assert p.priority_max_age_s == p.fairshare_half_life_s == 14 * 86400
    assert p.priority_interval_s == 120  # PriorityCalcPeriod=2 (minutes)
    assert p.priority_favor == "large"  # PriorityFavorSmall=NO
    assert p.fairshare_algorithm == "fair_tree"  # MAX_TRES is another flag
    assert dict(p.group_shares) == {"physics": 40.0, "chemistry": 30.0, "biology": 30.0}
    assert dict(p.user_shares) == {"alice": 2.0, "bob": 1.0, "carol": 1.0, "dave": 3.0}
    assert p.qos == (
        QoS("normal", 0.0),
        QoS("high", 1000.0, cores=512),
        QoS("long", 0.0, running_jobs=50, cores=1024),
    )  # part_limits is the partition QOS: the limits below
    assert p.limits_of("user") == (200, 512, 8, 1000)
    assert p.limits_of("group") == (0, 2048, 0, 0)  # GrpTRES=cpu=2048 on every account
    assert p.placement == "cons_tres"  # Slurm's node selection
    assert (p.slurm_reaction_s, p.slurm_backfill_interval_s) == (1, 60)  # bf_interval=60
    assert p.slurm_whole_minute_limits
    assert p.autoscale and (p.autoscale_idle_s, p.autoscale_boot_delay_s) == (1800, 600)
    assert p.autoscale_step == 20
    assert dict(p.autoscale_node_min) == {"cn": 16.0, "bigmem": 4.0}  # :16, and the partition
    assert p.on_node_failure == "requeue"


def test_the_site_cluster_is_its_nodes_and_disjoint_partitions() -> None:
    imported = import_slurm(SITE / "slurm.conf", ACCOUNTING)
    cluster = imported.cluster.cluster
    assert cluster is not None
    types = [
        (t.name, t.count, t.cores, t.mem_mib, t.gpus, t.scratch_mib) for t in cluster.node_types
    ]
    assert types == [
        ("cn", 96, 64, 250000, 0, 800000),  # Sockets x CoresPerSocket from NodeName=DEFAULT
        ("bigmem", 4, 64, 2000000, 0, 1600000),
        ("gpu", 8, 48, 500000, 4, 0),  # Gres=gpu:a100:4
    ]  # fmt: skip
    assert [(p.name, p.node_types) for p in cluster.partitions] == [
        ("batch", ("cn",)), ("bigmem", ("bigmem",)), ("gpu", ("gpu",)),
    ]  # fmt: skip
    notes = " ".join(imported.notes)
    assert "partition debug shares 4 nodes with an earlier partition" in notes
    assert "partition debug: every node of it is in an earlier partition; dropped" in notes


def test_every_setting_the_policy_does_not_hold_is_listed_where_it_is() -> None:
    imported = import_slurm(SITE / "slurm.conf", ACCOUNTING)
    listed = "\n".join(imported.untranslated)
    for expected in (
        "slurm.conf:6 SlurmctldHost=aurora-head01(10.10.0.1)",  # both lines of a repeated key
        "slurm.conf:7 SlurmctldHost=aurora-head02(10.10.0.2)",
        "slurm.conf:46 PriorityWeightPartition=1000 (htcsim has no partition priority factor)",
        "slurm.conf:41 PriorityFlags MAX_TRES",
        "slurm.conf:30 SchedulerParameters bf_continue",
        "10-partitions.conf:3 PartitionName=debug prioritytier=10",
        "10-partitions.conf:2 PartitionName=DEFAULT maxtime=3-00:00:00",
        "nodes.conf:3 NodeName=cn[001-096] feature=icelake",
        "qos.txt:4 QOS long maxwall=7-00:00:00",
        "aurora.cfg:12 user carol (account chemistry) maxwalldurationperjob=2880",
    ):
        assert expected in listed, expected
    for used in ("PriorityWeightAge", "SuspendExcNodes", "SuspendProgram", "JobRequeue"):
        assert f" {used}=" not in listed, used


def test_settings_a_site_leaves_out_take_slurms_defaults(tmp_path: Path) -> None:
    (tmp_path / "slurm.conf").write_text("ClusterName=tiny\n")
    p = policy_from_slurm(read_slurm_conf(tmp_path / "slurm.conf")).policy
    assert (p.order, p.backfill, p.backfill_depth) == ("fcfs", "conservative", 500)
    assert (p.priority_favor, p.fairshare_algorithm) == ("large", "fair_tree")
    assert (p.priority_max_age_s, p.priority_interval_s) == (7 * 86400, 300)
    assert (p.priority_weight_age, p.autoscale, p.on_node_failure) == (0.0, False, "requeue")


def test_limits_slurm_does_not_enforce_are_not_imported(tmp_path: Path) -> None:
    conf = (
        (SITE / "slurm.conf")
        .read_text()
        .replace(
            "AccountingStorageEnforce=associations,limits,qos,safe", "AccountingStorageEnforce=qos"
        )
    )
    (tmp_path / "slurm.conf").write_text(conf.replace("Include nodes.conf\n", ""))
    for name in ("conf.d/10-partitions.conf",):
        (tmp_path / "conf.d").mkdir(exist_ok=True)
        (tmp_path / name).write_text("PartitionName=batch Nodes=ALL Default=YES\n")
    imported = import_slurm(tmp_path / "slurm.conf", ACCOUNTING)
    p = imported.policy
    assert p.limits_of("user") == p.limits_of("group") == (0, 0, 0, 0)
    assert [(q.name, q.priority, q.cores) for q in p.qos] == [
        ("normal", 0.0, 0), ("high", 1000.0, 0), ("long", 0.0, 0), ("part_limits", 0.0, 0),
    ]  # fmt: skip
    assert any("does not include limits" in n for n in imported.notes)


# ----------------------------------------------------------------------- the command


def test_import_slurm_conf_writes_a_policy_and_a_cluster_that_load(tmp_path: Path) -> None:
    proc = htcsim(
        "import", "slurm-conf", SITE / "slurm.conf",
        "--sacctmgr-dump", SITE / "aurora.cfg", "--sacctmgr-dump", SITE / "qos.txt",
        "-o", "policy.toml", "--cluster-out", "cluster.toml", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "wrote policy.toml (multifactor+conservative, 3 QOS" in proc.stdout
    assert "wrote cluster.toml (3 node types, 108 nodes, 3 partitions)" in proc.stdout
    summary = [line for line in proc.stdout.splitlines() if "not translated" in line]
    assert len(summary) == 1 and "listed at the top of policy.toml" in summary[0]
    policy = load_policy(tmp_path / "policy.toml")
    assert policy.backfill_depth == 2000
    text = (tmp_path / "policy.toml").read_text()
    assert "#   " + str(SITE / "slurm.conf") + ":46 PriorityWeightPartition=1000" in text
    assert load_cluster(tmp_path / "cluster.toml").n_nodes == 108


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ({"slurm.conf": "PriorityType=priority/multifactor\nPriorityWeightAge\n"}, [],
         "slurm.conf:2: 'PriorityWeightAge' is not a Key=Value setting"),
        ({"slurm.conf": "PriorityType=priority/fair\n"}, [],
         "slurm.conf:1: PriorityType priority/fair: htcsim knows priority/basic and"),
        ({"slurm.conf": "PriorityMaxAge=aweek\n"}, [],
         "slurm.conf:1: PriorityMaxAge: 'aweek' is not a Slurm duration"),
        ({"slurm.conf": "PriorityMaxAge=a week\n"}, [],
         "slurm.conf:1: 'week' is not a Key=Value pair after PriorityMaxAge"),
        ({"slurm.conf": "include nodes/*.conf\n"}, [],
         "slurm.conf:1: include nodes/*.conf: the pattern matches no file"),
        ({"slurm.conf": "NodeName=n[1-2] CPUs=four\nPartitionName=p Nodes=ALL\n"}, [],
         "slurm.conf:1: NodeName n[1-2]: 'four' is not a CPU count"),
        ({"slurm.conf": "ClusterName=c\n"}, ["--cluster-out", "c.toml"],
         "slurm.conf: no NodeName lines, so no cluster file to write (--cluster-out)"),
        ({"slurm.conf": "NodeName=n[1-4] CPUs=8\n"}, ["--cluster-out", "c.toml"],
         "slurm.conf: no node is in a partition, so no cluster file to write"),
        ({"slurm.conf": "", "dump.cfg": "Cluster - 'c'\nAccount - 'bio':FairShare=lots\n"},
         ["--sacctmgr-dump", "dump.cfg"], "dump.cfg:2: bio: fairshare: 'lots' is not a share"),
        ({"slurm.conf": ""}, ["--sacctmgr-dump", "none.cfg"], "--sacctmgr-dump none.cfg: no such"),
    ],
)  # fmt: skip
def test_bad_input_ends_in_one_line_naming_the_file_and_line(
    tmp_path: Path, files: dict[str, str], args: list[str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    proc = htcsim("import", "slurm-conf", "slurm.conf", "-o", "p.toml", *args, cwd=tmp_path)
    assert message in one_error(proc)
    assert not (tmp_path / "p.toml").exists()
