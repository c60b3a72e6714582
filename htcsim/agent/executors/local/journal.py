"""The shepherd's two journals, the files that let a restarted shepherd know its jobs.

``journal.jsonl`` is the shepherd worker's own: a line when it starts a job
(job id, pid, start time), when a job's status is known but its process not
yet reaped (``exiting``: code and signal), when it is reaped (``exit``, with
its resource use), when a start did not become a job (``forget``) and when the
agent has committed an exit (``release``). Every line is written before the
agent hears of it, so a worker killed at any point leaves a successor that
knows every job it started and every exit the agent may not have recorded.
Lines are written to the page cache, not fsync'd: they must survive the
worker's death, not the machine's (the jobs do not survive that either).

``reaped.jsonl`` is the keeper's: when a worker dies its jobs become the
keeper's children, and the keeper reaps them as they end, appending (pid,
start time, wait status, resource use) and fsync'ing under an exclusive
``flock`` held from before the ``wait4`` until after the fsync. A worker that
takes the same lock therefore sees, for a process that is gone, either its
record or the certainty that the keeper did not reap it. The worker empties
the file once it has taken every record into its own journal.

Only the standard library: the shepherd imports it and must start fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

JOURNAL_FILE = "journal.jsonl"
REAPED_FILE = "reaped.jsonl"


class Journal:
    """The worker's journal: the jobs it runs and the exits not yet released.

    ``running``: job -> (pid, start time). ``exits``: job -> its exit record
    (``executors.base.exit_record``; ``lost`` set when its status is unknown).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.running: dict[int, tuple[int, int]] = {}
        self.exits: dict[int, dict[str, Any]] = {}
        self._load()
        self._rewrite()
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 (kept open: one line per event)
        self._lines = len(self.running) + len(self.exits)

    def _load(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self._apply(json.loads(line))

    def _apply(self, record: dict[str, Any]) -> None:
        op, job = record.get("op"), int(record["job"])
        if op == "start":
            self.running[job] = (int(record["pid"]), int(record["start"]))
            self.exits.pop(job, None)
        elif op in ("exit", "exiting"):
            # "exiting": the worker died between learning the status and reaping:
            # the status stands, the resource use is unknown
            self.running.pop(job, None)
            self.exits[job] = record | {"op": "exit"}
        elif op == "forget":
            self.running.pop(job, None)
        elif op == "release":
            self.exits.pop(job, None)

    def _rewrite(self) -> None:
        """Replace the file by what it means now (one line per running job and
        per unreleased exit), atomically: a worker killed meanwhile leaves
        either file whole."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w") as out:
            for job, (pid, start) in self.running.items():
                line = {"op": "start", "job": job, "pid": pid, "start": start}
                out.write(json.dumps(line) + "\n")
            for record in self.exits.values():
                out.write(json.dumps(record) + "\n")
        os.replace(tmp, self.path)

    def _write(self, record: dict[str, Any]) -> None:
        self._apply(record)
        self._file.write(json.dumps(record) + "\n")
        self._lines += 1
        live = len(self.running) + len(self.exits)
        if self._lines > 4 * live + 4096:  # mostly lines that no longer mean anything
            self._file.close()
            self._rewrite()
            self._file = open(self.path, "a", buffering=1)  # noqa: SIM115
            self._lines = live

    def started(self, job: int, pid: int, start: int) -> None:
        self._write({"op": "start", "job": job, "pid": pid, "start": start})

    def forget(self, job: int) -> None:
        """A start that did not become a job (its set-up failed before exec)."""
        self._write({"op": "forget", "job": job})

    def exiting(self, record: dict[str, Any]) -> None:
        """The job's status, read before its process is reaped (``waitid`` WNOWAIT)."""
        self._write(record | {"op": "exiting"})

    def ended(self, record: dict[str, Any]) -> None:
        self._write(record)

    def release(self, job: int) -> bool:
        """The agent has committed the job's exit; False if there was none to forget."""
        if job not in self.exits:
            return False
        self._write({"op": "release", "job": job})
        if not self.exits and not self.running:
            self._file.truncate(0)
            self._lines = 0
        return True

    def close(self) -> None:
        self._file.close()


class ReapedLog:
    """The keeper's record of the worker's children it reaped (see the module docstring).

    Each process (keeper, worker) opens the file itself: ``flock`` locks belong
    to an open file description, so a descriptor inherited through ``fork``
    would share the lock instead of competing for it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        self.fd = os.open(path, flags, 0o600)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def append(self, record: dict[str, Any]) -> None:
        """Add a record, durably (call with the lock held)."""
        os.write(self.fd, (json.dumps(record) + "\n").encode())
        os.fsync(self.fd)

    def clear(self) -> None:
        """Empty the file (call with the lock held, once every record read has
        been made the caller's own)."""
        os.ftruncate(self.fd, 0)

    def read(self) -> list[dict[str, Any]]:
        """Every record (call with the lock held)."""
        chunks = []
        offset = 0
        while chunk := os.pread(self.fd, 1 << 16, offset):
            chunks.append(chunk)
            offset += len(chunk)
        out = []
        for line in b"".join(chunks).splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
