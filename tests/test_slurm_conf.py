"""Reading what a Slurm site has: slurm.conf (includes, comments, continuations, case),
sacctmgr's dump, QOS listing and scripts, and Slurm's value grammars. Bad input stops
with one message that names the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from htcsim.slurm import values as sv
from htcsim.slurm.conf_read import read_slurm_conf
from htcsim.slurm.errors import SlurmError
from htcsim.slurm.sacctmgr_read import read_accounting

SITE = Path(__file__).parent / "data" / "slurm-site"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 300),  # a bare number is minutes
        ("5:30", 330),  # MM:SS
        ("1:02:03", 3723),  # HH:MM:SS
        ("7-0", 7 * 86400),  # D-HH
        ("14-00:00", 14 * 86400),  # D-HH:MM, as the export writes it
        ("1-02:03:04", 93784),
        ("INFINITE", None),
        ("unlimited", None),
    ],
)
def test_slurm_durations(text: str, seconds: int | None) -> None:
    assert sv.parse_duration(text) == seconds


def test_a_duration_is_written_in_days_hours_minutes_rounded_up() -> None:
    assert sv.format_dhm(7 * 86400) == "7-00:00"
    assert sv.format_dhm(5400) == "0-01:30"
    assert sv.format_dhm(61) == "0-00:02"  # Slurm keeps minutes and rounds a part up
    with pytest.raises(ValueError, match="not a Slurm duration"):
        sv.parse_duration("7 days")


def test_host_lists_expand_as_slurm_writes_them() -> None:
    assert sv.expand_hostlist("cn[001-003,010],gpu1") == [
        "cn001",
        "cn002",
        "cn003",
        "cn010",
        "gpu1",
    ]
    assert sv.expand_hostlist("r[1-2]n[1-2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]
    assert sv.hostlist("a100-", 1, 8) == "a100-[1-8]"
    with pytest.raises(ValueError, match="runs backwards"):
        sv.expand_hostlist("n[5-1]")


def test_tres_lists_sum_gpu_types_and_keep_no_limit() -> None:
    assert sv.parse_tres("cpu=64,gres/gpu:a100=2,gres/gpu:v100=2,mem=2G") == {
        "cpu": 64,
        "gres/gpu": 4,
        "mem": 2048,
    }
    assert sv.parse_tres("cpu=-1") == {"cpu": -1}
    assert sv.format_tres({"gres/gpu": 8, "cpu": 512}) == "cpu=512,gres/gpu=8"


# ------------------------------------------------------------------------ slurm.conf


def test_the_site_reads_through_its_includes() -> None:
    conf = read_slurm_conf(SITE / "slurm.conf")
    assert [Path(f).name for f in conf.files] == [
        "slurm.conf", "nodes.conf", "10-partitions.conf", "20-power.conf",
    ]  # fmt: skip
    # a lower-case key, a continuation line, a comment after a value
    assert conf.get("SchedulerType").value == "sched/backfill"  # type: ignore[union-attr]
    params = conf.get("schedulerparameters")
    assert params is not None and params.value.endswith("bf_interval=60,bf_resolution=300,"
                                                         "default_queue_depth=500")  # fmt: skip
    assert conf.get("PriorityType").value == "priority/multifactor"  # type: ignore[union-attr]
    nodes = conf.of_kind("nodename")
    assert [r.name for r in nodes] == ["DEFAULT", "cn[001-096]", "bigmem[01-04]", "gpu[01-08]"]
    assert nodes[3].params["gres"] == "gpu:a100:4"  # joined across a continuation
    assert nodes[3].where.endswith("nodes.conf:6")
    assert conf.get("SuspendExcNodes").where.endswith("20-power.conf:10")  # type: ignore[union-attr]


def test_includes_are_relative_to_the_including_file_and_may_use_the_cluster_name(
    tmp_path: Path,
) -> None:
    write(tmp_path / "etc" / "slurm.conf", "ClusterName=Tux\nInclude sub/%c.conf\n")
    write(tmp_path / "etc" / "sub" / "tux.conf", "include more.conf\nPriorityWeightAge=7\n")
    write(tmp_path / "etc" / "sub" / "more.conf", 'PriorityType="priority/multifactor"\n')
    conf = read_slurm_conf(tmp_path / "etc" / "slurm.conf")
    assert conf.get("priorityweightage").value == "7"  # type: ignore[union-attr]
    assert conf.get("PriorityType").value == "priority/multifactor"  # type: ignore[union-attr]


def test_a_setting_given_twice_keeps_the_last_value(tmp_path: Path) -> None:
    conf = read_slurm_conf(write(tmp_path / "s.conf", "JobRequeue=1\njobrequeue = 0\n"))
    assert conf.get("JobRequeue").value == "0"  # type: ignore[union-attr]
    assert len(conf.every_setting) == 2


def test_an_escaped_hash_is_not_a_comment(tmp_path: Path) -> None:
    conf = read_slurm_conf(write(tmp_path / "s.conf", "MailProg=/bin/mail\\#x # note\n"))
    assert conf.get("MailProg").value == "/bin/mail#x"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"s.conf": "PriorityType=priority/basic\nthis is not a setting\n"},
         r"s\.conf:2: 'this' is not a Key=Value setting"),
        ({"s.conf": "JobRequeue=1 KillWait=30\n"},
         r"s\.conf:1: one setting per line, found 2 \(JobRequeue, KillWait\)"),
        ({"s.conf": "\n\nInclude missing.conf\n"},
         r"s\.conf:3: include missing\.conf: no such file"),
        ({"s.conf": "include conf.d/*.conf\n"},
         r"s\.conf:1: include conf\.d/\*\.conf: the pattern matches no file"),
        ({"s.conf": "include other.conf\n", "other.conf": "include s.conf\n"},
         r"s\.conf: included again from itself"),
        ({"s.conf": "Include %c.conf\n"},
         r"s\.conf:1: include %c\.conf uses %c before ClusterName"),
    ],
)  # fmt: skip
def test_a_bad_slurm_conf_names_the_file_and_line(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(SlurmError, match=message):
        read_slurm_conf(tmp_path / "s.conf")


# ------------------------------------------------------------------------ accounting


def test_a_dump_gives_accounts_users_and_their_settings() -> None:
    acc = read_accounting(SITE / "aurora.cfg")
    assert acc.cluster["fairshare"] == "1"
    assert {n: a.params["fairshare"] for n, a in acc.accounts.items()} == {
        "physics": "40", "chemistry": "30", "biology": "30",
    }  # fmt: skip
    assert acc.accounts["physics"].params["description"] == "physics department"
    assert sorted(acc.users) == [
        ("alice", "physics"), ("bob", "physics"), ("carol", "chemistry"), ("dave", "biology"),
        ("root", "root"),
    ]  # fmt: skip
    assert acc.users[("carol", "chemistry")].params["maxwalldurationperjob"] == "2880"


def test_a_qos_listing_reads_its_short_column_names(tmp_path: Path) -> None:
    acc = read_accounting(SITE / "qos.txt")
    assert acc.qos["part_limits"].params == {
        "priority": "0", "maxtresperuser": "cpu=512,gres/gpu=8", "maxjobsperuser": "200",
        "maxsubmitjobsperuser": "1000",
    }  # fmt: skip
    # sacctmgr -p ends every line with a |, an empty last field included
    listing = write(tmp_path / "q.txt", "Name|Priority|GrpJobs|\nhigh|10||\nlow|0|5|\n")
    acc = read_accounting(listing)
    assert acc.qos["high"].params == {"priority": "10"}
    assert acc.qos["low"].params == {"priority": "0", "grpjobs": "5"}


def test_a_script_of_sacctmgr_commands_is_read_as_it_would_run(tmp_path: Path) -> None:
    script = write(
        tmp_path / "acct.sh",
        "#!/bin/bash\n"
        "set -e\n"
        "sacctmgr -i add account physics,chemistry Parent=science Fairshare=10\n"
        "sacctmgr -i add user alice Account=physics Fairshare=2\n"
        "/usr/bin/sacctmgr --immediate modify account where name=physics set \\\n"
        "  GrpTRES=cpu=128 Fairshare=40 || echo failed\n"
        "sacctmgr -i modify user alice set MaxJobs=4 where account=physics\n"
        'echo "sacctmgr is not run here"\n'
        "sacctmgr -i create qos high Priority=100\n"
        "sacctmgr -i modify qos high set GrpJobs=5 MaxJobsPU=2\n"
        "sacctmgr -i delete user bob\n"
        "sacctmgr show qos\n",
    )
    acc = read_accounting(script)
    assert acc.accounts["physics"].params == {"fairshare": "40", "grptres": "cpu=128"}
    assert acc.accounts["physics"].parent == "science"
    assert acc.accounts["chemistry"].params == {"fairshare": "10"}
    assert acc.users[("alice", "physics")].params == {"fairshare": "2", "maxjobs": "4"}
    assert acc.qos["high"].params == {"priority": "100", "grpjobs": "5", "maxjobsperuser": "2"}
    assert acc.not_applied == [f"{script}:11: delete user bob"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Cluster - 'c'\nAccount 'x'\n", r":2: expected Cluster, Parent, Account or User"),
        ("Cluster - 'c'\nAccount - 'x':Fairshare\n", r":2: 'Fairshare' is not KEY=VALUE"),
        ("Name|Priority\nhigh|1|2\n", r":2: 3 fields where the header has 2"),
        ("sacctmgr -i frobnicate qos x\n", r":1: sacctmgr frobnicate: not a sacctmgr command"),
        ("sacctmgr -i modify qos where name=x Priority=1\n",
         r":1: sacctmgr modify qos has no 'set'"),
        ("sacctmgr -i modify qos set Priority=1\n", r":1: sacctmgr modify qos names no qos"),
        ("sacctmgr -i add qos 'high\n", r":1: cannot split the command line"),
        ("just text\n", r":1: not a sacctmgr dump"),
    ],
)  # fmt: skip
def test_bad_accounting_names_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SlurmError, match=message):
        read_accounting(write(tmp_path / "acct.txt", text))
