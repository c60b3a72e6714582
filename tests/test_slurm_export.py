"""``htcsim export slurm``: what each policy value becomes, what MAPPING.md says about
it, and the command as a user runs it (files, one warning line, one error line)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from htcsim.cluster import cluster_from_mapping
from htcsim.policy import DEFAULT_POLICY_TOML, TOML_KEYS, Policy, QoS, save_policy
from htcsim.slurm.errors import SlurmError
from htcsim.slurm.export import export_slurm
from htcsim.slurm.plan import Row
from tests.test_cli_errors import htcsim, one_error


def settings(out: Path) -> dict[str, str]:
    """The Key=Value lines of the exported fragment (not the node and partition lines)."""
    found = {}
    for line in (out / "slurm.conf").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "NodeName", "PartitionName")):
            key, _, value = line.partition("=")
            found[key] = value
    return found


def row(rows: list[Row], key: str) -> Row:
    return next(r for r in rows if r.key == key)


def test_the_default_policy_is_exported_without_a_warning(tmp_path: Path) -> None:
    exported = export_slurm(Policy(), tmp_path)
    assert exported.warning is None
    conf = settings(tmp_path)
    assert conf["PriorityType"] == "priority/basic"  # fcfs: submit order
    assert conf["SchedulerType"] == "sched/backfill"
    assert "bf_job_part_count_reserve=1" in conf["SchedulerParameters"]  # EASY
    assert conf["PriorityMaxAge"] == "7-00:00"
    assert conf["PriorityDecayHalfLife"] == "7-00:00"
    assert conf["PriorityCalcPeriod"] == "5"  # minutes
    assert conf["SuspendTime"] == "-1"  # no autoscaling: power saving off
    assert "AccountingStorageEnforce" not in conf  # no QOS, no limit: nothing to enforce
    script = (tmp_path / "sacctmgr.sh").read_text()
    assert "sacctmgr -i" not in script and script.rstrip().endswith('exit "$failed"')
    assert (tmp_path / "sacctmgr.sh").stat().st_mode & 0o111


def test_mapping_md_has_a_row_for_every_policy_key(tmp_path: Path) -> None:
    policy = Policy(qos=(QoS("high", 10.0), QoS("low", 0.0)))
    export_slurm(policy, tmp_path)
    text = (tmp_path / "MAPPING.md").read_text()
    keys = re.findall(r"^\| `([^`]+)` \|", text, re.MULTILINE)
    expected = [f"{s}.{k}" for s, ks in TOML_KEYS.items() for k in ks]
    qos_fields = ("priority", "running_jobs", "cores", "gpus", "queued_jobs", "queues")
    expected += [f"qos.{q}.{f}" for q in ("high", "low") for f in qos_fields]
    assert sorted(keys) == sorted(expected)
    assert re.search(r"^\| `priority.weight_age` \| 1000.0 \| PriorityWeightAge=1000 \| exact \|",
                     text, re.MULTILINE)  # fmt: skip


@pytest.mark.parametrize(
    ("values", "key", "written", "status"),
    [
        ({"order": "sjf"}, "queue.order", {"PriorityType": "priority/basic"}, "impossible"),
        ({"order": "priority"}, "queue.order", {"PriorityType": "priority/basic"}, "impossible"),
        ({"order": "multifactor"}, "queue.order",
         {"PriorityType": "priority/multifactor"}, "exact"),
        ({"backfill": "none"}, "backfill.mode", {"SchedulerType": "sched/builtin"}, "exact"),
        ({"backfill": "conservative"}, "backfill.mode", {"SchedulerType": "sched/backfill"},
         "approximate"),
        ({"starvation_limit_s": 3600}, "backfill.starvation_limit_s", {}, "impossible"),
        ({"placement": "best_fit"}, "placement.strategy", {}, "approximate"),
        ({"placement": "cons_tres"}, "placement.strategy", {}, "exact"),
        ({"slurm_backfill_interval_s": 45}, "slurm_compat.backfill_interval_s", {}, "exact"),
        ({"slurm_reaction_s": 1}, "slurm_compat.reaction_s", {}, "exact"),
        ({"slurm_whole_minute_limits": True}, "slurm_compat.whole_minute_limits", {}, "exact"),
        ({"order": "multifactor", "slurm_priority_phase_s": 17}, "slurm_compat.priority_phase_s",
         {}, "exact"),
        ({"slurm_priority_phase_s": -1}, "slurm_compat.priority_phase_s", {}, "approximate"),
        ({"nice": {"alice": 100.0}}, "priority.nice", {}, "impossible"),
        ({"max_retries": 3}, "failures.max_retries", {}, "impossible"),
        ({"on_node_failure": "fail"}, "failures.on_node_failure", {"JobRequeue": "0"},
         "approximate"),
        ({"priority_weight_age": 12.5}, "priority.weight_age", {"PriorityWeightAge": "13"},
         "approximate"),
        ({"priority_max_age_s": 90}, "priority.max_age_s", {"PriorityMaxAge": "0-00:02"},
         "approximate"),
        ({"fairshare_half_life_s": 0}, "fairshare.half_life_s",
         {"PriorityDecayHalfLife": "0", "PriorityUsageResetPeriod": "NONE"}, "exact"),
        ({"fairshare_algorithm": "fair_tree"}, "fairshare.algorithm",
         {"PriorityFlags": "FAIR_TREE"}, "exact"),
        ({"fairshare_algorithm": "classic"}, "fairshare.algorithm",
         {"PriorityFlags": "NO_FAIR_TREE"}, "exact"),
        ({"autoscale": True, "autoscale_idle_s": 900, "autoscale_boot_delay_s": 240,
          "autoscale_step": 8, "autoscale_wait_s": 0, "autoscale_cooldown_s": 0},
         "autoscale.idle_s",
         {"SuspendTime": "900", "ResumeTimeout": "240", "ResumeRate": "8"}, "exact"),
        ({"autoscale": True, "autoscale_cooldown_s": 60, "autoscale_wait_s": 0},
         "autoscale.cooldown_s", {}, "impossible"),
    ],
)  # fmt: skip
def test_each_value_becomes_its_setting(
    tmp_path: Path, values: dict[str, object], key: str, written: dict[str, str], status: str
) -> None:
    exported = export_slurm(Policy(**values), tmp_path)  # type: ignore[arg-type]
    conf = settings(tmp_path)
    for setting, value in written.items():
        assert conf[setting] == value, (setting, conf)
    mapped = row(exported.plan.rows, key)
    assert mapped.status == status
    assert (exported.warning is not None) == (status == "impossible")
    if status != "exact":
        assert mapped.note, "an approximation says how, an impossibility says why"
    if status == "impossible":
        assert key in exported.warning  # type: ignore[operator]
        assert key in (tmp_path / "MAPPING.md").read_text().split("| policy key |")[0]


def test_qos_and_limits_become_sacctmgr_commands_and_a_partition_qos(tmp_path: Path) -> None:
    policy = Policy(
        qos=(QoS("High", 100.0, running_jobs=5, cores=64, gpus=2, queued_jobs=40),),
        max_running_jobs_per_user=10,
        max_cores_per_user=256,
        max_queued_jobs_per_group=500,
        user_shares={"alice": 2.0},
        group_shares={"physics": 4.0},
    )
    exported = export_slurm(policy, tmp_path)
    script = (tmp_path / "sacctmgr.sh").read_text()
    assert "if missing qos high Name; then sacctmgr -i add qos high" in script
    assert (
        "modify qos where name=high set Priority=100 GrpJobs=5 GrpTRES=cpu=64,gres/gpu=2 "
        "GrpSubmitJobs=40" in script
    )
    assert "modify account where name=root set QOS+=high" in script
    assert (
        "modify qos where name=htcsim_limits set MaxJobsPerUser=10 MaxSubmitJobsPerUser=-1 "
        "MaxTRESPerUser=cpu=256,gres/gpu=-1 MaxJobsPerAccount=-1 MaxSubmitJobsPerAccount=500 "
        "MaxTRESPerAccount=cpu=-1,gres/gpu=-1" in script
    )
    assert "set QOS+=htcsim_limits" not in script  # a partition QOS, not a job QOS
    assert "add account physics Fairshare=4" in script
    assert "modify user where name=alice set Fairshare=2" in script
    conf = settings(tmp_path)
    assert conf["AccountingStorageEnforce"] == "associations,limits,qos"
    assert conf["AccountingStorageTRES"] == "gres/gpu"
    assert (
        "# add to every PartitionName line of your slurm.conf: QOS=htcsim_limits"
        in (tmp_path / "slurm.conf").read_text()
    )
    rows = exported.plan.rows
    assert row(rows, "qos.High.priority").status == "approximate"  # lower case in Slurm
    assert row(rows, "limits.queued_jobs_per_group").status == "approximate"  # refused, not held
    assert row(rows, "limits.running_jobs_per_user").status == "exact"


def test_a_cluster_becomes_node_and_partition_lines(tmp_path: Path) -> None:
    cluster = cluster_from_mapping(
        {
            "node_type": [
                {"name": "cpu", "count": 100, "cores": 32, "mem_mib": 128000,
                 "scratch_mib": 400000, "price_per_hour": 1.5},
                {"name": "a100", "count": 4, "cores": 64, "mem_mib": 512000, "gpus": 8},
            ],
            "partition": [
                {"name": "batch", "node_types": ["cpu"], "ids": [1]},
                {"name": "gpu", "node_types": ["a100"], "ids": [2]},
            ],
        }
    )  # fmt: skip
    policy = Policy(
        autoscale=True,
        autoscale_node_min={"cpu": 8},
        autoscale_node_max={"a100": 2},
        placement="spread",
        max_cores_per_user=64,
    )
    export_slurm(policy, tmp_path, cluster=cluster, cluster_name="cluster.toml")
    lines = (tmp_path / "slurm.conf").read_text().splitlines()
    assert (
        "NodeName=cpu[1-100] CPUs=32 RealMemory=128000 TmpDisk=400000 Weight=1 State=CLOUD" in lines
    )
    assert "NodeName=a100-[1-2] CPUs=64 RealMemory=512000 Gres=gpu:8 Weight=2 State=CLOUD" in lines
    assert "GresTypes=gpu" in lines
    assert "SuspendExcNodes=cpu[1-100]:8" in lines
    assert (
        "PartitionName=batch Nodes=cpu[1-100] Default=YES MaxTime=INFINITE State=UP "
        "QOS=htcsim_limits LLN=YES" in lines
    )
    assert "PartitionName=gpu Nodes=a100-[1-2] Default=NO MaxTime=INFINITE State=UP " \
        "QOS=htcsim_limits LLN=YES" in lines  # fmt: skip
    mapping = (tmp_path / "MAPPING.md").read_text()
    assert "price_per_hour = 1.5: not written" in mapping
    assert "partition `batch` ids = [1]: not a Slurm setting" in mapping


def test_what_slurm_cannot_name_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(SlurmError, match="a QoS is named 'htcsim_limits'"):
        export_slurm(Policy(qos=(QoS("htcsim_limits"),)), tmp_path)
    bad = cluster_from_mapping({"node_type": [{"name": "9lives", "count": 1, "cores": 1}]})
    with pytest.raises(SlurmError, match="node type '9lives' cannot name Slurm nodes"):
        export_slurm(Policy(), tmp_path, cluster=bad)


# ----------------------------------------------------------------------- the command


def test_export_slurm_writes_the_files_and_warns_once(tmp_path: Path) -> None:
    save_policy(Policy(order="sjf", starvation_limit_s=3600), tmp_path / "policy.toml")
    proc = htcsim("export", "slurm", "policy.toml", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "MAPPING.md", "sacctmgr.sh", "slurm.conf",
    ]  # fmt: skip
    assert "2 impossible" in proc.stdout
    warning = proc.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: 2 policy settings cannot")
    assert "queue.order" in warning[0] and "backfill.starvation_limit_s" in warning[0]


def test_the_documented_default_policy_exports_cleanly(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(DEFAULT_POLICY_TOML)
    proc = htcsim("export", "slurm", "policy.toml", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ({}, ["nope.toml", "-o", "out"], "nope.toml: no such file"),
        ({"policy.toml": "[queue]\norder = 'lifo'\n"}, ["policy.toml", "-o", "out"],
         "policy.toml: queue.order must be one of"),
        ({"policy.toml": "", "out": "a file"}, ["policy.toml", "-o", "out"],
         "--out out: is a file"),
        ({"policy.toml": "", "c.toml": "[[node_type]]\nname = 'x y'\ncount = 1\ncores = 1\n"},
         ["policy.toml", "-o", "out", "--cluster", "c.toml"],
         "node type 'x y' cannot name Slurm nodes"),
        ({"policy.toml": "", "names.json": "{"}, ["policy.toml", "-o", "out", "--names",
         "names.json"], "names.json:1: not valid JSON"),
    ],
)  # fmt: skip
def test_export_mistakes_end_in_one_line(
    tmp_path: Path, setup: dict[str, str], args: list[str], message: str
) -> None:
    for name, text in setup.items():
        (tmp_path / name).write_text(text)
    assert message in one_error(htcsim("export", "slurm", *args, cwd=tmp_path))
