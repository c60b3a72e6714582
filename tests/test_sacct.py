"""Slurm accounting import: one hand-written sacct export, field by field, and its errors."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from htcsim.model import Machine
from htcsim.sim import simulate
from htcsim.workload.sacct import SacctError, SacctImport, read_sacct, write_name_tables
from htcsim.workload.swf import read_swf
from htcsim.workload.swf_writer import write_workload_swf

HEADER = (
    "JobID|User|Group|Account|Partition|QOS|Submit|Eligible|Start|End|Elapsed|Timelimit|"
    "NCPUS|ReqCPUS|NNodes|ReqMem|ReqTRES|AllocTRES|State|ExitCode"
)
D = "2024-03-01T"
ORIGIN = 1_709_280_000  # 2024-03-01T08:00:00 UTC, the earliest submit of a kept job

# As `sacct --parsable2 --allusers --format=...` prints it: steps under their job,
# the pending part of an array as one record, times Unknown/None where not known.
LINES = [
    f"1001|alice|physics|phys|batch|normal|{D}08:00:00|{D}08:00:00|{D}08:00:10|{D}09:00:10|"
    "01:00:00|02:00:00|4|4|1|4000Mc|billing=4,cpu=4,mem=16000M,node=1|"
    "billing=4,cpu=4,mem=16000M,node=1|COMPLETED|0:0",
    f"1001.batch|||phys|||{D}08:00:10|{D}08:00:10|{D}08:00:10|{D}09:00:10|01:00:00||4|4|1|||"
    "cpu=4,mem=16000M,node=1|COMPLETED|0:0",
    f"1001.extern|||phys|||{D}08:00:10|{D}08:00:10|{D}08:00:10|{D}09:00:10|01:00:00||4|4|1|||"
    "billing=4,cpu=4,mem=16000M,node=1|COMPLETED|0:0",
    f"1002|bob|chem|chem|gpu|high|{D}08:05:00|{D}08:05:00|{D}08:06:00|2024-03-02T10:09:04|"
    "1-02:03:04|1-02:00:00|16|16|2|64Gn|billing=16,cpu=16,gres/gpu=4,mem=128G,node=2|"
    "billing=16,cpu=16,gres/gpu=4,mem=128G,node=2|TIMEOUT|0:0",
    f"1002.0|||chem|||{D}08:06:05|{D}08:06:05|{D}08:06:05|2024-03-02T10:09:04|1-02:02:59||"
    "16|16|2|||cpu=16,gres/gpu=4,mem=128G,node=2|CANCELLED|0:15",
    f"1003_4|alice|physics|phys|batch|normal|{D}08:10:00|{D}08:10:00|{D}08:10:05|{D}08:20:05|"
    "00:10:00|UNLIMITED|1|1|1|2G|billing=1,cpu=1,mem=2G,node=1|billing=1,cpu=1,mem=2G,node=1|"
    "FAILED|1:0",
    f"1003_[5-9]|alice|physics|phys|batch|normal|{D}08:10:00|{D}08:10:00|Unknown|Unknown|"
    "00:00:00|UNLIMITED|1|1|1|2G|billing=1,cpu=1,mem=2G,node=1||PENDING|0:0",
    f"1004|carol|physics|phys|batch|normal|{D}08:15:00|{D}08:15:00|Unknown|{D}08:40:00|"
    "00:00:00|01:00:00|2|2|1|1000M|billing=2,cpu=2,mem=1000M,node=1||CANCELLED by 1234|0:0",
    f"1005|bob|chem|chem|batch|low|{D}08:20:00|{D}08:20:00|{D}08:21:00|{D}08:51:00|00:30:00|"
    "Partition_Limit|8|8|1|0|billing=8,cpu=8,node=1|billing=8,cpu=8,node=1|CANCELLED by 1234|0:15",
    f"1006|dave||phys|batch|normal|{D}08:25:00|{D}08:25:00|{D}08:26:00|{D}08:27:00|00:01:00|30|"
    "2|2|1|500M|billing=2,cpu=2,mem=500M,node=1|billing=2,cpu=2,mem=500M,node=1|NODE_FAIL|0:0",
    f"1007|alice|physics|phys|batch|normal|{D}08:30:00|{D}08:30:00|{D}08:31:00|Unknown|00:29:00|"
    "01:00:00|1|1|1|1G|billing=1,cpu=1,mem=1G,node=1|billing=1,cpu=1,mem=1G,node=1|RUNNING|0:0",
    f"1008|carol|physics|phys|batch|normal|{D}08:35:00|{D}08:35:00|{D}08:36:00|{D}08:46:00|"
    "00:10:00|00:20:00|8|8|3|1000Mn|billing=8,cpu=8,mem=3000M,node=3|"
    "billing=8,cpu=8,mem=3000M,node=3|COMPLETED|0:0",
    f"1009+0|bob|chem|chem|gpu|normal|{D}08:40:00|{D}08:40:00|{D}08:41:00|{D}08:51:00|00:10:00|"
    "00:30:00|2|2|1|4G|billing=2,cpu=2,gres/gpu:a100=1,gres/gpu=1,mem=4G,node=1|"
    "billing=2,cpu=2,gres/gpu:a100=1,gres/gpu=1,mem=4G,node=1|COMPLETED|0:0",
    f"1009+1|bob|chem|chem|batch|normal|{D}08:40:00|{D}08:40:00|{D}08:41:00|{D}08:51:00|"
    "00:10:00|00:30:00|4|4|1|8G|billing=4,cpu=4,mem=8G,node=1|billing=4,cpu=4,mem=8G,node=1|"
    "COMPLETED|0:0",
    f"1010|alice|physics|phys|batch|normal|{D}08:45:00|{D}08:45:00|{D}08:45:30|{D}08:47:34|"
    "02:03.600|00:05:00|1|1|1|3800Mc|billing=1,cpu=1,mem=3800M,node=1|"
    "billing=1,cpu=1,mem=3800M,node=1|OUT_OF_MEMORY|0:125",
    f"1011|carol|physics|phys|batch|normal|{D}08:50:00|{D}08:50:00|{D}08:55:00|{D}08:55:00|"
    "00:00:00|01:00:00|4|4|1|1000M|billing=4,cpu=4,mem=1000M,node=1||CANCELLED by 1234|0:0",
    f"1012|dave|physics|phys|batch|normal|{D}08:55:00|{D}08:55:00|None|None|00:00:00|01:00:00|"
    "1|1|1|1G|billing=1,cpu=1,mem=1G,node=1||FAILED|0:0",
    f"1013|alice|physics|phys|batch|normal|{D}09:00:00|{D}09:00:00|Unknown|Unknown|00:00:00|"
    "01:00:00|1|1|1|1G|billing=1,cpu=1,mem=1G,node=1||PENDING|0:0",
]

COLUMNS = (
    "job_id", "submit_s", "run_s", "walltime_s", "n_tasks", "cores_per_task",
    "mem_mib_per_task", "gpus_per_task", "user_id", "group_id", "queue_id", "partition_id",
    "status", "recorded_wait_s", "recorded_alloc",
)  # fmt: skip
EXPECTED = [  # one row per kept job, in (submit, job id) order
    (1001, 0, 3600, 7200, 1, 4, 16000, 0, 1, 2, 3, 1, 1, 10, 4),
    (1002, 300, 93784, 93600, 2, 8, 65536, 2, 2, 1, 1, 2, 0, 60, 16),
    (1014, 600, 600, 600, 1, 1, 2048, 0, 1, 2, 3, 1, 0, 5, 1),  # 1003_4
    (1005, 1200, 1800, 1800, 1, 8, 65536, 0, 2, 1, 2, 1, 5, 60, 8),  # ReqMem 0: a whole node
    (1006, 1500, 60, 1800, 1, 2, 500, 0, 4, -1, 3, 1, 0, 60, 2),
    (1008, 2100, 600, 1200, 8, 1, 375, 0, 3, 2, 3, 1, 1, 60, 8),
    (1015, 2400, 600, 1800, 1, 2, 4096, 1, 2, 1, 3, 2, 1, 60, 2),  # 1009+0
    (1016, 2400, 600, 1800, 1, 4, 8192, 0, 2, 1, 3, 1, 1, 60, 4),  # 1009+1
    (1010, 2700, 124, 300, 1, 1, 3800, 0, 1, 2, 3, 1, 0, 30, 1),
]


def sacct_file(tmp_path: Path, lines: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "cluster.sacct"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


@pytest.fixture
def imported(tmp_path: Path) -> SacctImport:
    return read_sacct(sacct_file(tmp_path, LINES))


def rows(jobs: np.ndarray) -> list[tuple[int, ...]]:
    return [tuple(int(job[name]) for name in COLUMNS) for job in jobs]


# ----------------------------------------------------------------------------- fields


def test_every_kept_job_field_by_field(imported: SacctImport) -> None:
    workload = imported.workload
    assert rows(workload.jobs) == EXPECTED
    assert workload.unix_start_time == ORIGIN
    assert workload.name == "cluster"
    assert workload.jobs["executable_id"].tolist() == [-1] * len(EXPECTED)


def test_every_record_is_a_job_or_a_counted_drop(imported: SacctImport) -> None:
    workload = imported.workload
    assert dict(workload.dropped) == {
        "job_step": 3,  # 1001.batch, 1001.extern, 1002.0
        "array_range_not_started": 1,  # 1003_[5-9]
        "cancelled_before_start": 2,  # 1004 (Start Unknown), 1011 (no allocation)
        "unfinished:RUNNING": 1,
        "unfinished:PENDING": 1,
        "never_started": 1,  # 1012, FAILED with Start None
    }
    assert len(workload) + sum(workload.dropped.values()) == len(LINES)


def test_conventions_applied_are_counted(imported: SacctImport) -> None:
    assert dict(imported.workload.changed) == {
        "walltime_from_run_time": 2,  # UNLIMITED, Partition_Limit
        "run_exceeds_walltime": 1,  # the TIMEOUT job ran past its limit
        "one_core_tasks": 1,  # 8 cores on 3 nodes
        "job_id_renumbered": 3,
        "machine_inferred": 1,
        "mem_whole_node": 1,  # 1005 (ReqMem 0)
    }


def test_name_tables_are_dense_sorted_and_header_names_partitions_and_qos(
    imported: SacctImport,
) -> None:
    assert imported.users == {1: "alice", 2: "bob", 3: "carol", 4: "dave"}
    assert imported.groups == {1: "chem", 2: "physics"}
    assert imported.partitions == {1: "batch", 2: "gpu"}
    assert imported.qos == {1: "high", 2: "low", 3: "normal"}
    assert imported.job_names == {1014: "1003_4", 1015: "1009+0", 1016: "1009+1"}
    header = imported.workload.header
    assert header["Partitions"] == "1 batch; 2 gpu"
    assert header["Queues"] == "1 high; 2 low; 3 normal (Slurm QOS)"
    assert header["TimeZoneString"] == "UTC"
    assert "alice" not in " ".join(header.values())  # user names stay out of a shared SWF


def test_inferred_machine_fits_the_recorded_peak(imported: SacctImport) -> None:
    # 8 cores: the most on one node (1002: 16 cores on 2 nodes); 2 GPUs likewise.
    # 6 nodes: 43 cores ran at once at 08:45:30 (ceil(43 / 8)); GPUs need 3, NNodes 3.
    assert imported.workload.machine == Machine(n_nodes=6, cores_per_node=8, gpus_per_node=2)


def test_a_given_machine_drops_jobs_that_cannot_fit(tmp_path: Path) -> None:
    workload = read_sacct(
        sacct_file(tmp_path, LINES), nodes=1, cores_per_node=4, gpus_per_node=0
    ).workload
    assert workload.machine == Machine(n_nodes=1, cores_per_node=4)
    assert workload.dropped["larger_than_node"] == 3  # 1002, 1005 (8 cores); 1009+0 (a GPU)
    assert workload.dropped["larger_than_machine"] == 1  # 1008: 8 one-core tasks
    assert "machine_inferred" not in workload.changed
    assert workload.jobs["job_id"].tolist() == [1001, 1014, 1006, 1016, 1010]


def _job(imported: SacctImport, job_id: int) -> np.ndarray:
    jobs = imported.workload.jobs
    return jobs[jobs["job_id"] == job_id][0]


def test_reqmem_zero_is_the_whole_node_inferred_from_the_history(imported: SacctImport) -> None:
    """1005 asked ReqMem 0 (--mem=0: all of each node's memory). Without the node's
    size, the most memory one job asked for on one node stands for it: 1002's 64G."""
    assert int(_job(imported, 1005)["mem_mib_per_task"]) == 64 * 1024
    assert imported.workload.changed["mem_whole_node"] == 1
    assert imported.workload.machine.mem_mib_per_node == 0, "an inferred size is not declared"


def test_reqmem_zero_takes_the_given_node_memory_on_every_node(tmp_path: Path) -> None:
    two_nodes = (
        f"2001|erin|physics|phys|batch|normal|{D}09:00:00|{D}09:00:00|{D}09:01:00|"
        f"{D}09:11:00|00:10:00|00:20:00|16|16|2|0n|billing=16,cpu=16,node=2|"
        "billing=16,cpu=16,node=2|COMPLETED|0:0"
    )
    imported = read_sacct(sacct_file(tmp_path, [*LINES, two_nodes]), mem_per_node=96 * 1024)
    assert int(_job(imported, 1005)["mem_mib_per_task"]) == 96 * 1024  # 1 node, 1 task
    whole = _job(imported, 2001)  # 2 nodes: one 8-core task per node, a node's memory each
    assert (int(whole["n_tasks"]), int(whole["mem_mib_per_task"])) == (2, 96 * 1024)
    assert imported.workload.changed["mem_whole_node"] == 2
    assert imported.workload.machine.mem_mib_per_node == 96 * 1024


def test_reqmem_zero_with_no_memory_known_stays_zero_and_is_counted(tmp_path: Path) -> None:
    line = (
        f"3001|erin|physics|phys|batch|normal|{D}09:00:00|{D}09:00:00|{D}09:01:00|"
        f"{D}09:11:00|00:10:00|00:20:00|4|4|1|0|cpu=4,node=1|cpu=4,node=1|COMPLETED|0:0"
    )
    imported = read_sacct(sacct_file(tmp_path, [line]))
    assert int(_job(imported, 3001)["mem_mib_per_task"]) == 0
    assert imported.workload.changed["mem_whole_node_unknown"] == 1


def test_a_given_node_memory_drops_jobs_asking_more(tmp_path: Path) -> None:
    workload = read_sacct(sacct_file(tmp_path, LINES), mem_per_node=32 * 1024).workload
    assert workload.dropped["larger_than_node"] == 1  # 1002: 64G on each of its nodes
    assert 1002 not in workload.jobs["job_id"].tolist()


def test_import_command_mem_per_node_fills_whole_node_jobs(tmp_path: Path) -> None:
    """Through the installed command: ReqMem 0 becomes --mem-per-node in the SWF
    (field 10 is per processor: 96G over 1005's 8 cores)."""
    source = sacct_file(tmp_path, LINES)
    out = tmp_path / "mine.swf"
    args = ["import", "sacct", str(source), "-o", str(out), "--mem-per-node", "96G"]
    proc = subprocess.run(
        [sys.executable, "-m", "htcsim", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "98,304 MiB per node" in proc.stdout and "changed 1: mem_whole_node" in proc.stdout
    jobs = read_swf(out).jobs
    job = jobs[jobs["job_id"] == 1005][0]
    assert int(job["n_tasks"]) == 8 and int(job["mem_mib_per_task"]) == 96 * 1024 // 8


def test_times_are_read_in_the_given_time_zone(tmp_path: Path) -> None:
    utc = read_sacct(sacct_file(tmp_path, LINES)).workload
    berlin = read_sacct(sacct_file(tmp_path, LINES), timezone="Europe/Berlin").workload
    assert berlin.unix_start_time == ORIGIN - 3600
    assert berlin.jobs.tobytes() == utc.jobs.tobytes()


def test_parsable_with_trailing_pipe_and_gzip_read_the_same(tmp_path: Path) -> None:
    plain = read_sacct(sacct_file(tmp_path, LINES)).workload
    path = tmp_path / "trailing.sacct.gz"
    text = "\n".join(line + "|" for line in [HEADER, *LINES]) + "\n"
    path.write_bytes(gzip.compress(text.encode()))
    again = read_sacct(path).workload
    assert again.jobs.tobytes() == plain.jobs.tobytes()
    assert again.name == "trailing"


def test_fewer_columns_cores_from_reqcpus_run_from_end(tmp_path: Path) -> None:
    header = "JobID|Submit|Start|End|Timelimit|ReqCPUS|State"
    lines = [f"7|{D}08:00:00|{D}08:00:30|{D}08:10:30|10|3|COMPLETED"]
    workload = read_sacct(sacct_file(tmp_path, lines, header)).workload
    assert rows(workload.jobs) == [(7, 0, 600, 600, 3, 1, 0, 0, -1, -1, -1, -1, 1, 30, -1)]
    assert workload.changed["run_from_end_minus_start"] == 1
    assert workload.changed["cores_from_reqcpus"] == 1
    assert workload.changed["one_core_tasks"] == 1  # no NNodes: the SWF convention
    assert workload.machine == Machine(n_nodes=3, cores_per_node=1)


def test_name_tables_written_as_json(imported: SacctImport, tmp_path: Path) -> None:
    path = tmp_path / "names.json"
    write_name_tables(path, imported)
    tables = json.loads(path.read_text())
    assert tables["users"]["1"] == "alice"
    assert tables["job_ids"]["1015"] == "1009+0"


# ------------------------------------------------------------------- SWF and replay


def test_swf_round_trip_gives_the_same_jobs(imported: SacctImport, tmp_path: Path) -> None:
    workload = imported.workload
    path = tmp_path / "cluster.swf"
    write_workload_swf(path, workload)
    back = read_swf(path)
    assert len(back) == len(workload)
    assert back.machine.total_cores == workload.machine.total_cores
    assert back.unix_start_time == workload.unix_start_time
    assert back.header["Partitions"] == "1 batch; 2 gpu"
    for name in (
        "job_id", "submit_s", "run_s", "walltime_s", "status", "user_id", "group_id",
        "queue_id", "partition_id", "recorded_wait_s", "recorded_alloc",
    ):  # fmt: skip
        np.testing.assert_array_equal(back.jobs[name], workload.jobs[name], err_msg=name)
    # SWF has processors, not tasks: a job comes back as that many one-core tasks
    procs = workload.jobs["n_tasks"] * workload.jobs["cores_per_task"]
    np.testing.assert_array_equal(back.jobs["n_tasks"], procs)


def test_converted_workload_replays(imported: SacctImport) -> None:
    workload = imported.workload
    result = simulate(workload)
    jobs = workload.jobs
    assert (result.start_s >= jobs["submit_s"]).all()
    np.testing.assert_array_equal(result.run_s, np.minimum(jobs["run_s"], jobs["walltime_s"]))


# ----------------------------------------------------------------------------- errors


def test_a_line_with_a_missing_field_is_named(tmp_path: Path) -> None:
    lines = list(LINES)
    lines[4] = lines[4].replace("|chem|", "|", 1)  # line 6 of the file
    path = sacct_file(tmp_path, lines)
    with pytest.raises(SacctError, match=r"cluster\.sacct:6: the line has 19 fields") as info:
        read_sacct(path)
    assert (info.value.line, info.value.reason) == (6, "field_count")


@pytest.mark.parametrize(
    ("old", "new", "field", "value", "message"),
    [
        (f"{D}08:21:00", "2024-03-01 08:21", "Start", "2024-03-01 08:21", "not a date and time"),
        ("|00:30:00|", "|00:3x:00|", "Elapsed", "00:3x:00", "is not a Slurm duration"),
        ("|Partition_Limit|", "|forever|", "Timelimit", "forever", "is not a Slurm duration"),
        ("|8|8|1|0|", "|eight|8|1|0|", "NCPUS", "eight", "is not a whole number"),
        ("|8|8|1|0|", "|8|8|1|4Q|", "ReqMem", "4Q", "is not a memory size"),
        ("CANCELLED by 1234|", "CANCELED|", "State", "CANCELED", "is not a Slurm job state"),
        ("1005|bob", "1005x|bob", "JobID", "1005x", "is not a Slurm job id"),
    ],
)
def test_a_bad_value_names_the_line_the_field_and_the_value(
    tmp_path: Path, old: str, new: str, field: str, value: str, message: str
) -> None:
    lines = list(LINES)
    assert old in lines[8]
    lines[8] = lines[8].replace(old, new, 1)  # job 1005, line 10 of the file
    with pytest.raises(SacctError) as info:
        read_sacct(sacct_file(tmp_path, lines))
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'cluster.sacct'}:10: field {field}: {value!r} ")
    assert message in text
    assert (info.value.line, info.value.field) == (10, field)


def test_a_missing_required_column_is_named(tmp_path: Path) -> None:
    header = HEADER.replace("|Timelimit", "")
    lines = [line.replace("|02:00:00|", "|", 1) for line in LINES[:1]]
    with pytest.raises(SacctError, match=r":1: header: missing required column Timelimit"):
        read_sacct(sacct_file(tmp_path, lines, header))
    header = "JobID|Submit|Start|Timelimit|NCPUS|State"
    with pytest.raises(SacctError, match=r"missing required column End or Elapsed") as info:
        read_sacct(sacct_file(tmp_path, [], header))
    assert info.value.field == "End"


def test_an_unknown_time_zone_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        read_sacct(sacct_file(tmp_path, LINES), timezone="Mars/Olympus")


def test_epoch_times_repeated_ids_and_large_counts(tmp_path: Path) -> None:
    # SLURM_TIME_FORMAT=%s prints epoch seconds; sacct --duplicates repeats a requeued
    # job's id (the second run gets a fresh one); NNodes prints 1024 as 1K.
    header = "JobID|Submit|Start|End|Timelimit|NCPUS|NNodes|State"
    lines = [
        "41|1709280000|1709280010|1709280070|5|2048|1K|NODE_FAIL",
        "41|1709280000|1709280100|1709280160|5|2048|1K|COMPLETED",
    ]
    imported = read_sacct(sacct_file(tmp_path, lines, header))
    jobs = imported.workload.jobs
    assert jobs["job_id"].tolist() == [41, 42]
    assert imported.job_names == {42: "41"}
    assert jobs["n_tasks"].tolist() == [1024, 1024]
    assert jobs["cores_per_task"].tolist() == [2, 2]
    assert jobs["recorded_wait_s"].tolist() == [10, 100]
    assert jobs["status"].tolist() == [0, 1]


def test_import_sacct_command_writes_a_replayable_swf(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from htcsim.cli.app import app

    source = sacct_file(tmp_path, LINES)
    out = tmp_path / "mine.swf"
    names = tmp_path / "names.json"
    result = CliRunner().invoke(
        app, ["import", "sacct", str(source), "-o", str(out), "--names", str(names)]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {len(EXPECTED)} jobs" in " ".join(result.output.split())
    assert "dropped" in result.output and names.exists()
    replay = CliRunner().invoke(app, ["simulate", str(out)])
    assert replay.exit_code == 0, replay.output
    bad = sacct_file(tmp_path, ["1|x|y"])
    failed = CliRunner().invoke(app, ["import", "sacct", str(bad), "-o", str(out)])
    assert failed.exit_code == 2 and "cluster.sacct:2: the line has 3 fields" in "".join(
        failed.output.split("\n")
    )
