"""Pipelines from TOML: parsing, topological order, edges, errors, atomic acceptance, progress."""

from __future__ import annotations

from pathlib import Path

import pytest

from htcsim.agent.engine.workflow import (
    WorkflowError,
    load_workflow,
    workflow_from_mapping,
    workflow_progress,
)
from htcsim.agent.store.jobs import AgentStore
from htcsim.units import parse_duration_s, parse_mem_mib

# "report" comes before "train" in the file, yet runs after it: the order must change.
GOOD = """
name = "nightly"
[defaults]
cores = 1
walltime = "1h"
env = { STAGE = "prod" }

[[job]]
name = "fetch"
command = ["python", "fetch.py"]

[[job]]
name = "report"
command = ["./report.sh"]
after_any = ["train"]
cwd = "out"

[[job]]
name = "train"
command = "python train.py --seed 3 'a b'"
cores = 4
mem = "8G"
gpus = 1
walltime = "2-00:00:00"
qos = "high"
after_ok = ["fetch"]
signal = "USR1"
signal_before = "2m"
hold = true

[[job]]
name = "cleanup"
command = ["rm", "-rf", "tmp"]
after_not_ok = ["train"]
after_any = ["fetch"]
stdout = "logs/{id}.out"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipe.toml"
    path.write_text(text)
    return path


def test_a_good_file_gives_jobs_in_topological_order_with_edges(tmp_path: Path) -> None:
    wf = load_workflow(write(tmp_path, GOOD), user="ana", group="lab")
    assert wf.name == "nightly"
    assert wf.names == ["fetch", "train", "report", "cleanup"]
    fetch, train, report, cleanup = wf.jobs
    assert fetch.after == ()
    assert train.after == ((0, "afterok", 0),)
    assert report.after == ((1, "afterany", 0),)
    assert set(cleanup.after) == {(0, "afterany", 0), (1, "afternotok", 0)}
    assert fetch.command == ["python", "fetch.py"] and fetch.cores == 1
    assert fetch.walltime_s == 3600 and fetch.mem_mib == 0 and fetch.env == {"STAGE": "prod"}
    assert fetch.cwd == str(tmp_path.resolve()) and fetch.user == "ana" and fetch.group == "lab"
    assert train.command == ["python", "train.py", "--seed", "3", "a b"]
    assert (train.cores, train.mem_mib, train.gpus, train.walltime_s) == (4, 8192, 1, 172_800)
    assert (train.qos, train.hold, train.signal, train.signal_before_s) == (
        "high",
        True,
        "SIGUSR1",
        120,
    )
    assert report.cwd == str(tmp_path.resolve() / "out")
    assert cleanup.stdout == "logs/{id}.out" and not cleanup.hold

    store = AgentStore(tmp_path / "agent.db")
    ids = store.add_jobs(wf.jobs, workflow=wf.name, now=10.0)
    by_name = dict(zip(wf.names, ids, strict=True))
    assert store.dependencies(by_name["fetch"]) == []
    assert store.dependencies(by_name["train"]) == [(by_name["fetch"], "afterok", 0)]
    assert store.dependencies(by_name["report"]) == [(by_name["train"], "afterany", 0)]
    assert store.dependencies(by_name["cleanup"]) == sorted(
        [(by_name["fetch"], "afterany", 0), (by_name["train"], "afternotok", 0)]
    )
    record = store.workflow("nightly", "ana")
    assert [j["name"] for j in record["jobs"]] == wf.names
    assert store.job(by_name["train"])["state"] == "held"


def test_a_file_already_in_order_keeps_it_and_the_api_form_matches(tmp_path: Path) -> None:
    data = {
        "name": "chain",
        "defaults": {"walltime": 60},
        "job": [
            {"name": "a", "command": ["true"]},
            {"name": "b", "command": ["true"], "after_ok": ["a"]},
            {"name": "x", "command": ["true"]},
            {"name": "c", "command": ["true"], "after_ok": ["b", "b"]},
        ],
    }
    wf = workflow_from_mapping(data, source="request", base_dir=tmp_path, user="bo")
    assert wf.names == ["a", "b", "x", "c"]
    assert wf.jobs[3].after == ((1, "afterok", 0),)  # the repeated name is one edge
    assert wf.jobs[0].cwd == str(tmp_path) and wf.jobs[0].walltime_s == 60


def test_walltime_may_come_from_the_agent_default(tmp_path: Path) -> None:
    data = {"name": "w", "job": [{"name": "a", "command": "true"}]}
    wf = workflow_from_mapping(
        data, source="request", base_dir=tmp_path, user="bo", default_walltime_s=900
    )
    assert wf.jobs[0].walltime_s == 900


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("mem", "cannot read 'lots' as a memory size"),
        ("typo", "job 'b': colour: unknown key 'colour' (known: name, command, cores"),
        ("noname", "[[job]] number 2 has no name"),
        ("nocommand", "job 'b': command: missing"),
        ("emptycommand", "job 'b': command: is empty"),
        ("duplicate", "job 'a': duplicate name"),
        ("unknownedge", "job 'b': after_ok: names unknown job 'zzz'"),
        ("twokinds", "'a' is also named in after_ok"),
        ("walltime", "job 'b': walltime: cannot read '1 fortnight' as a duration"),
        ("nowalltime", "job 'b': walltime: missing"),
        ("cores", "job 'b': cores: must be a whole number >= 1, got 0"),
        ("signal", "job 'b': signal: unknown signal 'USR9'"),
        ("empty", "empty workflow: no [[job]] tables"),
        ("noflowname", "the workflow needs a name"),
        ("topkey", "unknown key 'jobs' (known: name, defaults, job)"),
        ("badname", "name 'a b' must be letters"),
        ("defaultname", "'name' belongs to each job, not to [defaults]"),
        ("toml", "not valid TOML"),
    ],
)
def test_bad_files_are_refused_naming_the_fault(tmp_path: Path, text: str, fragment: str) -> None:
    base = 'name = "w"\n[defaults]\nwalltime = "1h"\n[[job]]\nname = "a"\ncommand = ["true"]\n'
    bodies = {
        "mem": base + '[[job]]\nname = "b"\ncommand = "x"\nmem = "lots"\n',
        "typo": base + '[[job]]\nname = "b"\ncommand = "x"\ncolour = "red"\n',
        "noname": base + '[[job]]\ncommand = "x"\n',
        "nocommand": base + '[[job]]\nname = "b"\n',
        "emptycommand": base + '[[job]]\nname = "b"\ncommand = ""\n',
        "duplicate": base + '[[job]]\nname = "a"\ncommand = "x"\n',
        "unknownedge": base + '[[job]]\nname = "b"\ncommand = "x"\nafter_ok = ["zzz"]\n',
        "twokinds": base
        + '[[job]]\nname = "b"\ncommand = "x"\nafter_ok = ["a"]\nafter_any = ["a"]\n',
        "walltime": base + '[[job]]\nname = "b"\ncommand = "x"\nwalltime = "1 fortnight"\n',
        "nowalltime": 'name = "w"\n[[job]]\nname = "b"\ncommand = "x"\n',
        "cores": base + '[[job]]\nname = "b"\ncommand = "x"\ncores = 0\n',
        "signal": base + '[[job]]\nname = "b"\ncommand = "x"\nsignal = "USR9"\n',
        "empty": 'name = "w"\n',
        "noflowname": '[[job]]\nname = "a"\ncommand = "x"\n',
        "topkey": 'name = "w"\n[[jobs]]\nname = "a"\n',
        "badname": 'name = "w"\n[[job]]\nname = "a b"\ncommand = "x"\n',
        "defaultname": 'name = "w"\n[defaults]\nname = "x"\n[[job]]\nname = "a"\ncommand = "x"\n',
        "toml": 'name = "w\n',
    }
    path = write(tmp_path, bodies[text])
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path, user="ana")
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert fragment in message, message


def test_a_cycle_names_its_jobs_and_nothing_is_stored(tmp_path: Path) -> None:
    text = """
name = "loop"
[defaults]
walltime = 60
[[job]]
name = "start"
command = "true"
[[job]]
name = "a"
command = "true"
after_ok = ["c", "start"]
[[job]]
name = "b"
command = "true"
after_ok = ["a"]
[[job]]
name = "c"
command = "true"
after_any = ["b"]
[[job]]
name = "d"
command = "true"
after_ok = ["c"]
"""
    store = AgentStore(tmp_path / "agent.db")
    with pytest.raises(WorkflowError, match=r"cycle: a -> b -> c -> a"):
        store.add_jobs(load_workflow(write(tmp_path, text), user="ana").jobs, workflow="loop")
    self_loop = {
        "name": "s",
        "job": [{"name": "x", "command": "true", "walltime": 1, "after_ok": ["x"]}],
    }
    with pytest.raises(WorkflowError, match=r"cycle: x -> x"):
        workflow_from_mapping(self_loop, source="request", base_dir=tmp_path, user="ana")
    assert store.jobs() == [] and store.counts()["pending"] == 0
    with pytest.raises(KeyError):
        store.workflow("loop")


@pytest.mark.parametrize(
    ("text", "mib"),
    [("512M", 512), ("8G", 8192), ("1.5G", 1536), ("2048", 2048), ("1T", 1 << 20), ("1K", 1)],
)
def test_parse_mem_mib(text: str, mib: int) -> None:
    assert parse_mem_mib(text) == mib


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("1d", 86_400),
        ("1h30m", 5400),
        ("1:30:00", 5400),
        ("10:00", 600),
        ("2-00:00:00", 172_800),
        ("1-12", 129_600),
        ("1.5s", 2),
    ],
)
def test_parse_duration_s(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("bad", ["", "8Q", "-1G", "G"])
def test_parse_mem_mib_names_bad_text(bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad).replace("-", r"\-")):
        parse_mem_mib(bad)


@pytest.mark.parametrize("bad", ["", "soon", "1:2:3:4", "-5m"])
def test_parse_duration_s_names_bad_text(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        parse_duration_s(bad)


def test_progress_follows_the_jobs(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    data = {
        "name": "p",
        "defaults": {"walltime": 60, "command": "true"},
        "job": [{"name": "a"}, {"name": "b", "after_ok": ["a"]}, {"name": "c"}],
    }
    wf = workflow_from_mapping(data, source="request", base_dir=tmp_path, user="ana")
    a, b, c = store.add_jobs(wf.jobs, workflow="p", now=0.0)

    def progress() -> dict:  # type: ignore[type-arg]
        return workflow_progress(store.workflow("p", "ana"))

    assert progress()["state"] == "pending" and progress()["done"] == 0.0
    store.set_state(a, "running", "started", now=1.0, start_time=1.0)
    assert progress()["state"] == "running"
    store.set_state(a, "completed", "exited 0", now=2.0, end_time=2.0, exit_code=0)
    store.set_state(c, "failed", "exited 3", now=2.0, start_time=1.0, end_time=2.0, exit_code=3)
    now = progress()
    assert now["state"] == "running"  # b can still run
    assert now["counts"]["completed"] == 1 and now["counts"]["failed"] == 1
    assert now["done"] == pytest.approx(2 / 3) and now["total"] == 3
    assert now["jobs"][2] == {"name": "c", "id": c, "state": "failed", "exit_code": 3}
    store.set_state(b, "completed", "exited 0", now=3.0, end_time=3.0, exit_code=0)
    assert progress()["state"] == "failed" and progress()["done"] == 1.0
    store.set_state(c, "completed", "requeued and passed", now=4.0, exit_code=0)
    assert progress()["state"] == "completed"


def test_a_page_of_a_workflow_counts_all_its_jobs(tmp_path: Path) -> None:
    """Rows come a page at a time (``next`` leads to the rest); counts, total and
    the overall state are always the whole workflow's."""
    store = AgentStore(tmp_path / "agent.db")
    data = {
        "name": "wide",
        "defaults": {"walltime": 60, "command": "true"},
        "job": [{"name": f"j{k}"} for k in range(5)],
    }
    wf = workflow_from_mapping(data, source="request", base_dir=tmp_path, user="ana")
    ids = store.add_jobs(wf.jobs, workflow="wide", now=0.0)
    store.set_state(ids[4], "running", "started", now=1.0, start_time=1.0)
    rows: list[int] = []
    after = 0
    while True:
        page = workflow_progress(store.workflow("wide", "ana", limit=2, after_id=after), page=2)
        assert (page["total"], page["counts"]["running"], page["state"]) == (5, 1, "running")
        assert len(page["jobs"]) <= 2
        rows += [j["id"] for j in page["jobs"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert rows == ids
    whole = workflow_progress(store.workflow("wide", "ana"))
    assert [j["id"] for j in whole["jobs"]] == ids and whole["next"] is None
