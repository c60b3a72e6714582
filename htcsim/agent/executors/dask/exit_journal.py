"""A Dask worker's exits, kept in a file of its node so that they outlive the
worker process.

Why: a worker learns how a job ended when it reaps it, and the agent learns
it from the worker a few milliseconds later. A worker killed in between
(SIGKILL, the OOM killer, a crash) took the exit with it; the agent then
requeued a job that had run to its end, and it ran twice. Each exit is now
appended here as the worker reaps it. A worker started again under the same
name (its nanny, its batch job, an operator) reads what its predecessor
recorded and the agent did not release, and the agent, before it requeues a
lost worker's jobs, asks the worker of that name for them. A job whose worker
died in the microseconds between the job's end and the append is still
requeued.

One file per scheduler and worker name, in the node's temporary directory:
a worker started again on another machine finds nothing (its predecessor's
jobs were fenced and are requeued). No fsync: the file must survive the
process, not the machine. Only the standard library: it runs in the worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

COMPACT_AFTER = 4096
"""Lines appended since the file was last rewritten with only the exits
still held: the file stays small however long the worker lives."""


def journal_path(scheduler: str, name: str) -> Path:
    """The journal of the worker ``name`` of ``scheduler`` on this node (this
    account's: another account's worker cannot write it)."""
    key = hashlib.sha256(f"{scheduler}\0{name}".encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"htcsim-exits-{os.getuid()}-{key}.jsonl"


class ExitJournal:
    """Append-only lines: an exit record, or ``{"released": [job ids]}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._appended = 0

    def load(self) -> dict[int, dict[str, Any]]:
        """The exits recorded and not released, by job id (the last record of
        a job wins). A line cut short by the worker's death is skipped."""
        held: dict[int, dict[str, Any]] = {}
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(entry, dict):
                    continue
                if "released" in entry:
                    for job_id in entry["released"]:
                        held.pop(int(job_id), None)
                elif "job" in entry:
                    held[int(entry["job"])] = entry
        return held

    def append(self, record: dict[str, Any]) -> None:
        self.append_many([record])

    def append_many(self, records: list[dict[str, Any]]) -> None:
        """Exits reaped together, in one write (a kill in the middle of it
        cuts at most the last line, which ``load`` skips)."""
        self._write("\n".join(json.dumps(r, separators=(",", ":")) for r in records), len(records))

    def release(self, job_ids: list[int], held: dict[int, dict[str, Any]]) -> None:
        """These exits are recorded by the agent; ``held`` is what is left,
        written alone once enough lines have accumulated."""
        if self._appended >= COMPACT_AFTER:
            self.rewrite(held)
        else:
            self._write(json.dumps({"released": [int(j) for j in job_ids]}))

    def rewrite(self, held: dict[int, dict[str, Any]]) -> None:
        """The file replaced (atomically) by the exits still held."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        with os.fdopen(fd, "w") as f:
            for record in held.values():
                f.write(json.dumps(record, separators=(",", ":")) + "\n")
        os.replace(tmp, self.path)
        self._appended = 0

    def _write(self, lines: str, count: int = 1) -> None:
        # one write() of whole lines; one cut short by a kill is skipped by ``load``
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (lines + "\n").encode())
        finally:
            os.close(fd)
        self._appended += count
