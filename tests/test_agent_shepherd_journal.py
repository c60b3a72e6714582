"""The shepherd's journals as files: what a new worker makes of the lines a
dead one left (``journal.Journal``), and the keeper's record file
(``journal.ReapedLog``). The processes themselves are tested in
``test_agent_shepherd_restart.py`` and ``test_agent_executor.py``."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

from htcsim.agent.executors.base import exit_record
from htcsim.agent.executors.local.journal import Journal, ReapedLog


def test_a_new_worker_reads_what_runs_and_what_ended(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    first = Journal(path)
    first.started(1, 101, 5001)
    first.started(2, 102, 5002)
    first.started(3, 103, 5003)
    first.started(4, 104, 5004)
    first.exiting(exit_record(2, 7, 0, -1.0, -1.0))  # killed before the reap: status kept
    first.ended(exit_record(3, 0, 0, 0.5, 12.0))
    first.ended(exit_record(1, 137, 9, 0.1, 3.0))
    first.release(1)  # the agent committed it
    first.forget(4)  # its set-up failed: never a job
    # the worker dies here (the file is all that is left)
    second = Journal(path)
    assert second.running == {}
    assert set(second.exits) == {2, 3}
    assert (second.exits[2]["code"], second.exits[2]["cpu"]) == (7, -1.0)
    assert second.exits[2]["op"] == "exit"
    assert second.exits[3]["cpu"] == 0.5
    second.started(5, 105, 5005)
    second.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["op"] for line in lines] == ["exit", "exit", "start"]  # rewritten compact
    third = Journal(path)
    assert third.running == {5: (105, 5005)}


def test_a_relaunched_job_forgets_its_earlier_exit(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.ended(exit_record(8, -1, 0, -1.0, -1.0, lost="killed"))
    journal.started(8, 108, 5008)  # requeued and started again
    assert 8 not in journal.exits and journal.running == {8: (108, 5008)}


def test_the_reaped_log_is_read_and_emptied_under_its_lock(tmp_path: Path) -> None:
    keeper = ReapedLog(tmp_path / "reaped.jsonl")
    worker = ReapedLog(tmp_path / "reaped.jsonl")  # each its own open file: a real lock
    with keeper.locked():
        keeper.append({"pid": 5, "start": 77, "status": 3 << 8})
        keeper.append({"pid": 6, "start": 78, "status": 9})
        with pytest.raises(BlockingIOError):  # the worker waits while the keeper writes
            fcntl.flock(worker.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with worker.locked():
        records = worker.read()
        worker.clear()
    assert [(r["pid"], r["start"]) for r in records] == [(5, 77), (6, 78)]
    with keeper.locked():
        keeper.append({"pid": 7, "start": 79, "status": 0})  # O_APPEND: after the clear
    with worker.locked():
        assert [r["pid"] for r in worker.read()] == [7]
    keeper.close()
    worker.close()
