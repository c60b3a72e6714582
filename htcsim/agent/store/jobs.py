"""The live agent's durable store: jobs, their dependencies and every state change, in SQLite.

Every state change is an event (time, state, cause), so ``history`` tells
why a job is where it is, and a restart can reconcile from the last state.
Besides the jobs, the store keeps the decision log, node samples, policy
audits, workflows and a few key-value facts (``meta``). The file itself (its
schema, the migrations between versions, opening it in WAL mode with full
synchronous commits) is ``htcsim.agent.store.schema``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from htcsim.agent.store.schema import connect

JOB_STATES: tuple[str, ...] = (
    "pending",
    "held",
    "running",
    "completed",
    "failed",
    "cancelled",
    "timeout",
    "node_fail",
)
"""As docs/architecture.md names them; the last five are final (node_fail: the
job's node failed and the policy did not requeue it)."""
FINAL_STATES = frozenset({"completed", "failed", "cancelled", "timeout", "node_fail"})
DEPENDENCY_KINDS = ("afterok", "afterany", "afternotok")
_COLUMN = re.compile(r"[a-z_]+")


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a bulk action selects: every given criterion holds (``name`` a glob,
    as "train*"); ``states`` empty: any state."""

    array_id: int | None = None
    user: str | None = None
    states: tuple[str, ...] = ()
    name: str | None = None

    def matches(self, row: dict[str, Any]) -> bool:
        return (
            (self.array_id is None or row["array_id"] == self.array_id)
            and (self.user is None or row["user"] == self.user)
            and (not self.states or row["state"] in self.states)
            and (self.name is None or fnmatch.fnmatchcase(row["name"], self.name))
        )

    @property
    def empty(self) -> bool:
        return self.array_id is None and self.user is None and not self.states and self.name is None


@dataclass(frozen=True)
class NewJob:
    """What a submission asks for; the store gives it an id and the state pending (or held)."""

    user: str
    command: Sequence[str]
    cwd: str
    cores: int
    walltime_s: int
    mem_mib: int = 0
    gpus: int = 0
    name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    qos: str = ""
    hold: bool = False
    array_index: int | None = None
    # (parent id, kind, delay): parents named by id; ``after`` below by position
    depends_on: tuple[tuple[int, str, int], ...] = ()
    after: tuple[tuple[int, str, int], ...] = ()  # (index in the same batch, kind, delay)
    group: str = ""
    stdout: str = ""  # log paths; empty: the agent's default (see htcsim.agent.launch)
    stderr: str = ""
    signal: str = ""  # e.g. "SIGUSR1": sent signal_before_s before the walltime
    signal_before_s: int = 0
    account: str = ""  # the Unix account it runs as, resolved at submit; "": the agent's own
    uid: int = -1  # that account's uid when resolved; -1: the agent's own


@dataclass(frozen=True)
class Keyed:
    """A submission sent with an ``Idempotency-Key``: the caller's key and the
    SHA-256 hex of the request (route and body) it was first used for."""

    key: str
    request: str


SETTABLE = frozenset(
    {
        "reason",
        "start_time",
        "end_time",
        "exit_code",
        "node",
        "requeues",
        "pid",
        "cpu_time_s",
        "max_rss_mib",
        "stdout",
        "stderr",
        "gpu_ids",
    }
)
"""Columns a state change may set besides the state."""


@dataclass(frozen=True)
class StateChange:
    """One job moving to ``state`` for ``cause``, with the other columns it sets."""

    job_id: int
    state: str
    cause: str
    fields: dict[str, Any] = field(default_factory=dict)


class AgentStore:
    """One SQLite file; the scheduling loop is its one writer, readers open their own.

    Writes made inside ``with store.batch():`` commit together (one fsync for
    many jobs: how the loop reaches thousands of durable jobs per second);
    outside a batch each write commits on its own.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._savepoints = 0
        self._db = connect(self.path, readonly=readonly)

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ writes

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Everything written inside commits at once, or not at all."""
        if self._db.in_transaction:
            # nested: a savepoint, so a failed inner write leaves the outer batch clean;
            # named by its depth, so that its statements are the same ones every turn
            # (prepared once, from the connection's statement cache)
            self._savepoints += 1
            name = f"sp{self._savepoints}"
            try:
                self._db.execute(f"SAVEPOINT {name}")
                try:
                    yield
                except BaseException:
                    self._db.execute(f"ROLLBACK TO {name}")
                    self._db.execute(f"RELEASE {name}")
                    raise
                self._db.execute(f"RELEASE {name}")
            finally:
                self._savepoints -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def idempotent_answer(self, user: str, key: str, since: float) -> tuple[str, Any] | None:
        """(request hash, answer) recorded for ``user``'s ``key`` after ``since``, if any."""
        row = self._db.execute(
            "SELECT request, answer FROM idempotency WHERE user = ? AND key = ? AND time >= ?",
            (user, key, since),
        ).fetchone()
        return None if row is None else (str(row["request"]), json.loads(row["answer"]))

    def remember_idempotent(
        self, user: str, keyed: Keyed, answer: Any, *, now: float | None = None
    ) -> None:
        """Record a request's answer under its key. Called inside the batch that
        stores the request's jobs, it commits with them or not at all: a crash
        can never leave the jobs without the key (a retry would submit again)."""
        now = time.time() if now is None else now
        with self.batch():
            self._db.execute(
                "INSERT OR REPLACE INTO idempotency (user, key, request, answer, time) "
                "VALUES (?, ?, ?, ?, ?)",
                (user, keyed.key, keyed.request, json.dumps(answer), now),
            )

    def forget_idempotent(self, before: float) -> None:
        """Forget the keys recorded before ``before`` (their time to live is over)."""
        with self.batch():
            self._db.execute("DELETE FROM idempotency WHERE time < ?", (before,))

    def add_jobs(
        self,
        jobs: Sequence[NewJob],
        *,
        now: float | None = None,
        workflow: str | None = None,
    ) -> list[int]:
        """Accept a batch atomically (all or none): ids in order. A job array is
        a batch whose jobs carry ``array_index``; its ``array_id`` is its first id.
        ``workflow`` names the batch (unique per user) for ``workflow_status``."""
        now = time.time() if now is None else now
        ids: list[int] = []
        with self.batch():
            workflow_id: int | None = None
            if workflow is not None and jobs:
                try:
                    cursor = self._db.execute(
                        "INSERT INTO workflows (name, user, submit_time) VALUES (?, ?, ?)",
                        (workflow, jobs[0].user, now),
                    )
                except sqlite3.IntegrityError as exc:
                    raise ValueError(
                        f"workflow {workflow!r} already exists for user {jobs[0].user!r}"
                    ) from exc
                workflow_id = cursor.lastrowid
            array_id: int | None = None
            for job in jobs:
                state = "held" if job.hold else "pending"
                cursor = self._db.execute(
                    "INSERT INTO jobs (user, name, command, cwd, env, cores, mem_mib, gpus, "
                    "walltime_s, qos, array_index, state, reason, submit_time, grp, stdout, "
                    "stderr, signal, signal_before_s, workflow_id, account, uid) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job.user,
                        job.name,
                        json.dumps(list(job.command)),
                        job.cwd,
                        json.dumps(job.env, sort_keys=True),
                        job.cores,
                        job.mem_mib,
                        job.gpus,
                        job.walltime_s,
                        job.qos,
                        job.array_index,
                        state,
                        "Held" if job.hold else "",
                        now,
                        job.group,
                        job.stdout,
                        job.stderr,
                        job.signal,
                        job.signal_before_s,
                        workflow_id,
                        job.account,
                        job.uid if job.uid >= 0 else None,
                    ),
                )
                job_id = int(cursor.lastrowid or 0)
                if job.array_index is not None:
                    array_id = job_id if array_id is None else array_id
                    self._db.execute(
                        "UPDATE jobs SET array_id = ? WHERE id = ?", (array_id, job_id)
                    )
                ids.append(job_id)
                self._event(job_id, now, state, "submitted" + (" (held)" if job.hold else ""))
            for job, job_id in zip(jobs, ids, strict=True):
                edges = list(job.depends_on) + [(ids[k], kind, d) for k, kind, d in job.after]
                for parent, kind, delay in edges:
                    if kind not in DEPENDENCY_KINDS:
                        raise ValueError(f"job {job_id}: unknown dependency kind {kind!r}")
                    try:
                        self._db.execute(
                            "INSERT INTO dependencies VALUES (?, ?, ?, ?)",
                            (job_id, parent, kind, delay),
                        )
                    except sqlite3.IntegrityError as exc:
                        raise ValueError(
                            f"job {job_id}: dependency on unknown job {parent}"
                        ) from exc
        return ids

    def set_state(
        self, job_id: int, state: str, cause: str, *, now: float | None = None, **fields: Any
    ) -> None:
        """Move a job to ``state`` for ``cause`` (recorded as an event), with
        the other columns given (start_time, end_time, exit_code, node, reason...)."""
        self.set_states([StateChange(job_id, state, cause, fields)], now=now)

    def set_states(self, changes: Sequence[StateChange], *, now: float | None = None) -> None:
        """Several state changes in one commit (see ``set_state``)."""
        now = time.time() if now is None else now
        with self.batch():
            for change in changes:
                if change.state not in JOB_STATES:
                    raise ValueError(
                        f"unknown job state {change.state!r} (known: {', '.join(JOB_STATES)})"
                    )
                unknown = set(change.fields) - SETTABLE
                if unknown:
                    raise ValueError(
                        f"cannot set {', '.join(sorted(unknown))} (settable: {sorted(SETTABLE)})"
                    )
                columns = ", ".join(f"{name} = ?" for name in ("state", *change.fields))
                values = [_column(v) for v in change.fields.values()]
                cursor = self._db.execute(
                    f"UPDATE jobs SET {columns} WHERE id = ?",
                    (change.state, *values, change.job_id),
                )
                if cursor.rowcount != 1:
                    raise KeyError(f"no job {change.job_id}")
                self._event(change.job_id, now, change.state, change.cause)

    def update(self, job_id: int, **fields: Any) -> None:
        """Set columns without a state change (a pid, a reason): no event."""
        unknown = set(fields) - SETTABLE
        if unknown:
            raise ValueError(f"cannot set {', '.join(sorted(unknown))}")
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self.batch():
            self._db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*fields.values(), job_id))

    def set_pids(self, pids: Sequence[tuple[int, int]]) -> None:
        """(pid, job id) of jobs just launched (no event: their start was one)."""
        with self.batch():
            self._db.executemany("UPDATE jobs SET pid = ? WHERE id = ?", pids)

    def _event(self, job_id: int, now: float, state: str, cause: str) -> None:
        self._db.execute(
            "INSERT INTO events (job_id, time, state, cause) VALUES (?, ?, ?, ?)",
            (job_id, now, state, cause),
        )

    def log_decisions(self, rows: Sequence[tuple[int, str, int | None, str]]) -> None:
        """Append (kernel time, op, job id, JSON data) rows to the decision log."""
        with self.batch():
            self._db.executemany(
                "INSERT INTO decisions (time, op, job_id, data) VALUES (?, ?, ?, ?)", rows
            )

    def add_node_samples(self, rows: Sequence[tuple[float, str, float, float]]) -> None:
        """(time, node, cpu percent, memory used MiB) rows."""
        with self.batch():
            self._db.executemany("INSERT INTO node_samples VALUES (?, ?, ?, ?)", rows)

    def audit_policy(
        self, user: str, policy_toml: str, note: str = "", now: float | None = None
    ) -> int:
        """Record the policy put in force, by whom; returns the audit id."""
        now = time.time() if now is None else now
        with self.batch():
            cursor = self._db.execute(
                "INSERT INTO policy_audit (time, user, policy, note) VALUES (?, ?, ?, ?)",
                (now, user, policy_toml, note),
            )
        return int(cursor.lastrowid or 0)

    def set_meta(self, key: str, value: str) -> None:
        with self.batch():
            self._db.execute(
                "INSERT INTO meta VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # ------------------------------------------------------------------ reads

    def job(self, job_id: int) -> dict[str, Any]:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(f"no job {job_id}")
        return _job_dict(row)

    def jobs(
        self,
        *,
        states: Sequence[str] = (),
        user: str | None = None,
        limit: int = 100,
        after_id: int = 0,
        array_id: int | None = None,
        columns: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """Jobs in id order, filtered, one page (``after_id``: the last id of the previous
        page); only the ``columns`` named (every column when none is: reading and decoding
        a column a listing does not show, such as ``env``, is most of a page's cost)."""
        if any(not _COLUMN.fullmatch(c) for c in columns):
            raise ValueError(f"not column names: {list(columns)}")
        query = f"SELECT {', '.join(columns) or '*'} FROM jobs WHERE id > ?"
        args: list[Any] = [after_id]
        if array_id is not None:
            query += " AND array_id = ?"
            args.append(array_id)
        if states:
            query += f" AND state IN ({', '.join('?' * len(states))})"
            args += list(states)
        if user is not None:
            query += " AND user = ?"
            args.append(user)
        query += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [_job_dict(row) for row in self._db.execute(query, args)]

    def dependencies(self, job_id: int) -> list[tuple[int, str, int]]:
        """(parent, kind, delay) of a job."""
        return [
            (int(r["parent"]), str(r["kind"]), int(r["delay_s"]))
            for r in self._db.execute(
                "SELECT parent, kind, delay_s FROM dependencies WHERE child = ? ORDER BY parent",
                (job_id,),
            )
        ]

    def history(self, job_id: int) -> list[tuple[float, str, str]]:
        """(time, state, cause) of every change of a job, oldest first."""
        self.job(job_id)  # KeyError for an unknown job
        return [
            (float(r["time"]), str(r["state"]), str(r["cause"]))
            for r in self._db.execute(
                "SELECT time, state, cause FROM events WHERE job_id = ? ORDER BY id", (job_id,)
            )
        ]

    def jobs_by_id(self, job_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The named jobs that exist, by id."""
        out: dict[int, dict[str, Any]] = {}
        ids = list(job_ids)
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            for row in self._db.execute(
                f"SELECT * FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})", chunk
            ):
                out[int(row["id"])] = _job_dict(row)
        return out

    def select(self, where: JobFilter) -> list[tuple[int, str, str]]:
        """(id, user, state) of every job ``where`` matches, in id order (a bulk action's jobs)."""
        query = "SELECT id, user, state FROM jobs WHERE 1"
        args: list[Any] = []
        if where.array_id is not None:
            query += " AND array_id = ?"
            args.append(where.array_id)
        if where.user is not None:
            query += " AND user = ?"
            args.append(where.user)
        if where.states:
            query += f" AND state IN ({', '.join('?' * len(where.states))})"
            args += list(where.states)
        if where.name is not None:
            query += " AND name GLOB ?"
            args.append(where.name)
        query += " ORDER BY id"
        return [(int(r[0]), str(r[1]), str(r[2])) for r in self._db.execute(query, args)]

    def unfinished(self) -> list[dict[str, Any]]:
        """Every job not in a final state, in id order (what a restart reloads)."""
        finals = ", ".join(f"'{s}'" for s in sorted(FINAL_STATES))
        return [
            _job_dict(row)
            for row in self._db.execute(
                f"SELECT * FROM jobs WHERE state NOT IN ({finals}) ORDER BY id"
            )
        ]

    def all_dependencies(self, child_ids: Sequence[int]) -> list[tuple[int, int, str, int]]:
        """(child, parent, kind, delay) of the given children."""
        out: list[tuple[int, int, str, int]] = []
        ids = list(child_ids)
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            out += [
                (int(r["child"]), int(r["parent"]), str(r["kind"]), int(r["delay_s"]))
                for r in self._db.execute(
                    f"SELECT * FROM dependencies WHERE child IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
            ]
        return out

    def active_jobs_of(self, user: str) -> int:
        """How many jobs ``user`` has pending, held or running (the submission cap's count)."""
        row = self._db.execute(
            "SELECT COUNT(*) FROM jobs WHERE user = ? AND state IN ('pending', 'held', 'running')",
            (user,),
        ).fetchone()
        return int(row[0])

    def states_of(self, job_ids: Sequence[int]) -> dict[int, str]:
        """The state of each named job that exists."""
        out: dict[int, str] = {}
        ids = list(job_ids)
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            for row in self._db.execute(
                f"SELECT id, state FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})", chunk
            ):
                out[int(row["id"])] = str(row["state"])
        return out

    def decisions(
        self, after_seq: int = 0
    ) -> list[tuple[int, int, str, int | None, dict[str, Any]]]:
        """(seq, kernel time, op, job id, data) of the decision log, in order."""
        return [
            (int(r["seq"]), int(r["time"]), str(r["op"]), r["job_id"], json.loads(r["data"]))
            for r in self._db.execute(
                "SELECT * FROM decisions WHERE seq > ? ORDER BY seq", (after_seq,)
            )
        ]

    def last_decision_seq(self, op: str) -> int:
        """The seq of the latest decision-log row of ``op`` (0: none); read from
        the end, so finding the last agent start costs little however long the log."""
        row = self._db.execute(
            "SELECT seq FROM decisions WHERE op = ? ORDER BY seq DESC LIMIT 1", (op,)
        ).fetchone()
        return int(row["seq"]) if row is not None else 0

    def finished_between(self, start: float, end: float) -> list[dict[str, Any]]:
        """Jobs that ended in [start, end), in end order (accounting)."""
        return [
            _job_dict(row)
            for row in self._db.execute(
                "SELECT * FROM jobs WHERE end_time >= ? AND end_time < ? ORDER BY end_time, id",
                (start, end),
            )
        ]

    def node_samples(self, since: float = 0.0) -> list[tuple[float, str, float, float]]:
        return [
            (float(r[0]), str(r[1]), float(r[2]), float(r[3]))
            for r in self._db.execute(
                "SELECT * FROM node_samples WHERE time >= ? ORDER BY time", (since,)
            )
        ]

    def policy_audits(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute("SELECT * FROM policy_audit ORDER BY id")]

    def workflow(
        self, name: str, user: str | None = None, *, limit: int = -1, after_id: int = 0
    ) -> dict[str, Any]:
        """A workflow, its jobs per state (``counts``, all of them) and its jobs in id
        order, one page: ``limit`` of them (-1: all) after ``after_id`` (KeyError
        when unknown)."""
        query, args = "SELECT * FROM workflows WHERE name = ?", [name]
        if user is not None:
            query += " AND user = ?"
            args.append(user)
        row = self._db.execute(query, args).fetchone()
        if row is None:
            raise KeyError(f"no workflow {name!r}" + (f" of user {user!r}" if user else ""))
        out = dict(row)
        out["counts"] = {
            str(r[0]): int(r[1])
            for r in self._db.execute(
                "SELECT state, COUNT(*) FROM jobs WHERE workflow_id = ? GROUP BY state",
                (out["id"],),
            )
        }
        out["jobs"] = [
            _job_dict(r)
            for r in self._db.execute(
                "SELECT * FROM jobs WHERE workflow_id = ? AND id > ? ORDER BY id LIMIT ?",
                (out["id"], after_id, limit),
            )
        ]
        return out

    def total_cores(self) -> int:
        """Cores of the nodes the agent last started with (0 if it never ran)."""
        nodes = json.loads(self.meta("nodes") or "[]")
        return sum(int(n["cores"]) for n in nodes)

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def totals(self) -> tuple[int, int, dict[str, int], dict[str, float]]:
        """What the agent's counters count, over every job the store holds:
        (jobs submitted, starts, jobs ended by final state, CPU seconds of ended
        jobs by user). Starts are the jobs with a start time plus every requeue
        (a requeue clears the start time of a run that did start)."""
        row = self._db.execute(
            "SELECT COUNT(*), COUNT(start_time), COALESCE(SUM(requeues), 0) FROM jobs"
        ).fetchone()
        finished = {
            str(r[0]): int(r[1])
            for r in self._db.execute(
                f"SELECT state, COUNT(*) FROM jobs WHERE state IN "
                f"({', '.join('?' * len(FINAL_STATES))}) GROUP BY state",
                sorted(FINAL_STATES),
            )
        }
        cpu = {
            str(r[0]): float(r[1])
            for r in self._db.execute(
                "SELECT user, SUM(cpu_time_s) FROM jobs WHERE cpu_time_s >= 0 GROUP BY user"
            )
        }
        return int(row[0]), int(row[1]) + int(row[2]), finished, cpu

    def counts(self) -> dict[str, int]:
        """Jobs per state (every state listed)."""
        out = dict.fromkeys(JOB_STATES, 0)
        for row in self._db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            out[str(row["state"])] = int(row["n"])
        return out


def _column(value: Any) -> Any:
    """A value as its column holds it (a list, such as ``gpu_ids``, as JSON)."""
    return json.dumps(value) if isinstance(value, list | tuple) else value


def _job_dict(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    for key in ("command", "env"):
        if key in job:
            job[key] = json.loads(job[key])
    if "gpu_ids" in job:
        job["gpu_ids"] = json.loads(job["gpu_ids"]) if job["gpu_ids"] is not None else None
    return job
