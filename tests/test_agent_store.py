"""The agent's durable store: atomic batches, the event log, migrations, durability."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from htcsim.agent.store.jobs import AgentStore, Keyed, NewJob
from htcsim.agent.store.schema import SCHEMA_VERSION, StoreError


def job(**kw) -> NewJob:  # type: ignore[no-untyped-def]
    return NewJob(
        **{"user": "ana", "command": ["true"], "cwd": "/tmp", "cores": 1, "walltime_s": 60, **kw}
    )


def test_a_batch_is_accepted_whole_with_its_dependencies(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    first, second = store.add_jobs(
        [job(name="a"), job(name="b", after=((0, "afterok", 5),), hold=True)], now=100.0
    )
    assert store.job(first)["state"] == "pending" and store.job(second)["state"] == "held"
    assert store.dependencies(second) == [(first, "afterok", 5)]
    assert store.history(second) == [(100.0, "held", "submitted (held)")]
    with pytest.raises(ValueError, match="unknown dependency kind"):
        store.add_jobs([job(name="c"), job(name="d", after=((0, "after_maybe", 0),))])
    assert [j["name"] for j in store.jobs()] == ["a", "b"]  # the failed batch left nothing


def test_nested_batches_fail_alone_at_any_depth(tmp_path: Path) -> None:
    """A failed inner batch (a savepoint, named by its depth) leaves the outer one
    clean, however many inner batches came at that depth before it."""
    store = AgentStore(tmp_path / "agent.db")
    with store.batch():
        store.add_jobs([job(name="a")])
        for name in ("b", "c"):
            with pytest.raises(RuntimeError), store.batch():
                store.add_jobs([job(name=name)])
                with store.batch():
                    store.add_jobs([job(name=f"{name}2")])
                raise RuntimeError("the inner batch fails")
        with store.batch():
            store.add_jobs([job(name="d")])
    assert [j["name"] for j in store.jobs()] == ["a", "d"]


def test_a_key_commits_with_its_jobs_or_neither_does(tmp_path: Path) -> None:
    """The engine records an Idempotency-Key in the batch of its jobs: one commit
    holds both, and when the key cannot be written the jobs are not either."""
    path = tmp_path / "agent.db"
    store = AgentStore(path)
    first = Keyed("retry-1", "a" * 64)
    with store.batch():
        ids = store.add_jobs([job(name="a")])
        store.remember_idempotent("ana", first, {"ids": ids}, now=10.0)
    assert store.idempotent_answer("ana", "retry-1", since=0.0) == ("a" * 64, {"ids": ids})
    assert store.idempotent_answer("bob", "retry-1", since=0.0) is None  # the caller's key
    other = sqlite3.connect(path)
    other.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON idempotency BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    other.commit()
    with pytest.raises(sqlite3.IntegrityError), store.batch():
        store.add_jobs([job(name="b")])
        store.remember_idempotent("ana", Keyed("retry-2", "b" * 64), {"ids": [0]}, now=11.0)
    assert [j["name"] for j in store.jobs()] == ["a"]
    assert store.idempotent_answer("ana", "retry-2", since=0.0) is None
    store.forget_idempotent(before=10.5)  # its time to live is over
    assert store.idempotent_answer("ana", "retry-1", since=0.0) is None


def test_arrays_share_an_id_and_states_are_logged(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    ids = store.add_jobs([job(array_index=k) for k in range(1, 4)], now=1.0)
    assert {store.job(i)["array_id"] for i in ids} == {ids[0]}
    store.set_state(ids[0], "running", "started by pass 3", now=2.0, start_time=2.0, node="n0")
    store.set_state(ids[0], "completed", "exited 0", now=9.0, end_time=9.0, exit_code=0)
    assert store.history(ids[0]) == [
        (1.0, "pending", "submitted"),
        (2.0, "running", "started by pass 3"),
        (9.0, "completed", "exited 0"),
    ]
    assert store.job(ids[0])["exit_code"] == 0
    assert store.counts()["pending"] == 2 and store.counts()["completed"] == 1
    assert [j["id"] for j in store.jobs(states=["pending"], limit=1, after_id=ids[1])] == [ids[2]]
    with pytest.raises(ValueError, match="unknown job state"):
        store.set_state(ids[1], "exploded", "?")
    with pytest.raises(ValueError, match="cannot set user"):
        store.set_state(ids[1], "held", "?", user="eve")
    with pytest.raises(KeyError):
        store.set_state(999, "held", "?")


def test_an_accepted_job_survives_a_killed_process(tmp_path: Path) -> None:
    """A child process accepts a job and is killed (SIGKILL) right after: the job is there."""
    path = tmp_path / "agent.db"
    script = (
        "import os, signal\n"
        "from htcsim.agent.store.jobs import AgentStore, NewJob\n"
        f"s = AgentStore({str(path)!r})\n"
        "s.add_jobs([NewJob(user='ana', command=['sleep', '1'], cwd='/', cores=1, walltime_s=9)])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == -9
    assert [j["command"] for j in AgentStore(path).jobs()] == [["sleep", "1"]]


def test_schema_versions(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    assert AgentStore(path).schema_version == SCHEMA_VERSION
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this htcsim knows"):
        AgentStore(path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not an htcsim agent store"):
        AgentStore(junk)


def test_an_older_store_is_migrated_in_place(tmp_path: Path) -> None:
    """A file of schema 1 (the first agent store) with a job in it: opening it
    applies the later migrations and keeps the job, which gains the new columns."""
    from htcsim.agent.store.schema import MIGRATIONS

    path = tmp_path / "agent.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute(
        "INSERT INTO jobs (user, command, cwd, cores, walltime_s, state, submit_time) "
        "VALUES ('ana', '[\"true\"]', '/tmp', 2, 60, 'pending', 5.0)"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = AgentStore(path)
    assert store.schema_version == SCHEMA_VERSION > 1
    [job] = store.jobs()
    assert (job["user"], job["cores"], job["grp"], job["pid"]) == ("ana", 2, "", None)
    store.set_state(job["id"], "running", "started", now=6.0, pid=123, stdout="/tmp/x.out")
    assert store.job(job["id"])["pid"] == 123
    store.log_decisions([(6, "pass", None, "{}")])
    assert store.decisions()[0][2] == "pass"
