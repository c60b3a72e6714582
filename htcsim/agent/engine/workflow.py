"""Pipelines: a whole DAG of jobs from one TOML file, accepted all at once.

Why a file rather than a chain of ``submit --after``: a pipeline of a dozen
steps submitted one by one can be half accepted when the fifth submission has
a typo, leaving orphans that run for nothing. Here the file is checked whole
(keys, names, resources, edges, cycles) before any job exists, and the jobs
then go to ``AgentStore.add_jobs`` as one batch with ``after`` edges by
position, which the store commits atomically. Every error names the file, the
job and the key at fault, because the person reading it is editing that file.

Jobs are put in topological order (parents first, otherwise file order), so
``after`` indices always point backwards and the store can resolve them while
inserting.
"""

from __future__ import annotations

import heapq
import re
import shlex
import signal as signal_module
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from htcsim.agent.store.jobs import FINAL_STATES, JOB_STATES, NewJob
from htcsim.units import parse_duration_s, parse_mem_mib

__all__ = [
    "JOB_KEYS",
    "Workflow",
    "WorkflowError",
    "load_workflow",
    "workflow_from_mapping",
    "workflow_progress",
]

EDGE_KEYS: dict[str, str] = {
    "after_ok": "afterok",
    "after_any": "afterany",
    "after_not_ok": "afternotok",
}
"""File keys of dependencies and the store's dependency kind each becomes."""

JOB_KEYS: tuple[str, ...] = (
    "name",
    "command",
    "cores",
    "mem",
    "gpus",
    "walltime",
    "qos",
    "cwd",
    "env",
    "hold",
    "stdout",
    "stderr",
    "signal",
    "signal_before",
    *EDGE_KEYS,
)
"""Every key a ``[[job]]`` table may have; anything else is a typo and refused."""

TOP_KEYS: tuple[str, ...] = ("name", "defaults", "job")
DEFAULT_SIGNAL_BEFORE_S = 60
"""Lead time of ``signal`` when ``signal_before`` is not given: Slurm's default for --signal."""

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


_Fail = Callable[[str, str], "WorkflowError"]
"""Builds the error for (key, message) of the job being checked."""


class WorkflowError(ValueError):
    """A pipeline file that cannot be accepted; the message names the file, job and key.

    ``source``, ``job`` and ``key`` are kept as attributes too, so the API can
    point at the fault without parsing the message.
    """

    def __init__(self, source: str, message: str, *, job: str = "", key: str = "") -> None:
        where = source
        if job:
            where += f": job {job!r}"
        if key:
            where += f": {key}"
        super().__init__(f"{where}: {message}")
        self.source = source
        self.job = job
        self.key = key


@dataclass(frozen=True)
class Workflow:
    """A checked pipeline: its name and its jobs, parents before children.

    ``jobs[k].after`` holds ``(index, kind, 0)`` with ``index < k``, ready for
    ``AgentStore.add_jobs(workflow.jobs, workflow=workflow.name)``.
    """

    name: str
    jobs: list[NewJob]

    @property
    def names(self) -> list[str]:
        """Job names in the order of ``jobs``."""
        return [job.name for job in self.jobs]


# ----------------------------------------------------------------------- loading


def load_workflow(
    path: Path, *, user: str, group: str = "", default_walltime_s: int | None = None
) -> Workflow:
    """Read and check a pipeline TOML file; relative ``cwd`` is relative to its directory.

    ``default_walltime_s`` is the agent's default for jobs that give no
    walltime (neither in the job nor in ``[defaults]``); None makes it required.
    """
    path = Path(path)
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkflowError(source, f"cannot read the file ({exc.strerror or exc})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise WorkflowError(source, f"not valid TOML ({exc})") from exc
    return workflow_from_mapping(
        data,
        source=source,
        base_dir=path.resolve().parent,
        user=user,
        group=group,
        default_walltime_s=default_walltime_s,
    )


def workflow_from_mapping(
    data: Mapping[str, Any],
    *,
    source: str,
    base_dir: Path,
    user: str,
    group: str = "",
    default_walltime_s: int | None = None,
) -> Workflow:
    """Check a parsed pipeline (the TOML as a dict, e.g. JSON sent to the API).

    ``source`` names it in errors (a file path, or "request"); ``base_dir`` is
    what a relative ``cwd`` (and the default cwd) is relative to.
    """
    if not isinstance(data, Mapping):
        raise WorkflowError(source, f"expected a table, got {type(data).__name__}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise WorkflowError(
            source,
            f"unknown key {', '.join(map(repr, unknown))} (known: {', '.join(TOP_KEYS)})",
        )
    name = data.get("name")
    if name is None:
        raise WorkflowError(source, 'the workflow needs a name (name = "..." at the top)')
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise WorkflowError(
            source, f"workflow name {name!r} must be letters, digits, '_', '.' or '-'"
        )
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise WorkflowError(source, "[defaults] must be a table", key="defaults")
    for key in defaults:
        if key not in JOB_KEYS:
            raise WorkflowError(
                source, f"unknown key {key!r} (known: {', '.join(JOB_KEYS)})", key="defaults"
            )
        if key == "name" or key in EDGE_KEYS:
            raise WorkflowError(
                source, f"{key!r} belongs to each job, not to [defaults]", key="defaults"
            )
    tables = data.get("job", [])
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise WorkflowError(source, "jobs must be [[job]] tables", key="job")
    if not tables:
        raise WorkflowError(source, "empty workflow: no [[job]] tables")

    names: list[str] = []
    for k, table in enumerate(tables):
        job_name = table.get("name")
        if job_name is None:
            raise WorkflowError(source, f"[[job]] number {k + 1} has no name", key="name")
        if not isinstance(job_name, str) or not _NAME.fullmatch(job_name):
            raise WorkflowError(
                source,
                f"[[job]] number {k + 1}: name {job_name!r} must be letters, digits, "
                "'_', '.' or '-'",
                key="name",
            )
        if job_name in names:
            raise WorkflowError(
                source, "duplicate name (job names must be unique in the file)", job=job_name
            )
        names.append(job_name)

    parents: list[list[tuple[int, str]]] = []  # per file position: (parent position, kind)
    built: list[NewJob] = []
    position = {n: k for k, n in enumerate(names)}
    for table, job_name in zip(tables, names, strict=True):
        merged = {**defaults, **table}
        built.append(
            _build_job(merged, job_name, source, base_dir, user, group, default_walltime_s)
        )
        parents.append(_edges(table, job_name, source, position))

    order = _topological_order(names, parents, source)
    new_index = {old: new for new, old in enumerate(order)}
    jobs = []
    for old in order:
        after = tuple((new_index[p], kind, 0) for p, kind in parents[old])
        jobs.append(replace(built[old], after=after))
    return Workflow(name=name, jobs=jobs)


def _build_job(
    spec: Mapping[str, Any],
    name: str,
    source: str,
    base_dir: Path,
    user: str,
    group: str,
    default_walltime_s: int | None,
) -> NewJob:
    """One job from its table merged over ``[defaults]``, every value checked."""

    def fail(key: str, message: str) -> WorkflowError:
        return WorkflowError(source, message, job=name, key=key)

    unknown = sorted(set(spec) - set(JOB_KEYS))
    if unknown:
        raise fail(unknown[0], f"unknown key {unknown[0]!r} (known: {', '.join(JOB_KEYS)})")
    command = _command(spec.get("command"), fail)

    def integer(key: str, default: int, minimum: int) -> int:
        value = spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise fail(key, f"must be a whole number >= {minimum}, got {value!r}")
        return value

    def text(key: str) -> str:
        value = spec.get(key, "")
        if not isinstance(value, str):
            raise fail(key, f"must be a string, got {value!r}")
        return value

    cores = integer("cores", 1, 1)
    gpus = integer("gpus", 0, 0)
    try:
        mem_mib = parse_mem_mib(spec["mem"]) if "mem" in spec else 0
    except ValueError as exc:
        raise fail("mem", str(exc)) from None
    if "walltime" in spec:
        try:
            walltime_s = parse_duration_s(spec["walltime"])
        except ValueError as exc:
            raise fail("walltime", str(exc)) from None
        if walltime_s <= 0:
            raise fail("walltime", f"must be positive, got {spec['walltime']!r}")
    elif default_walltime_s is not None:
        walltime_s = default_walltime_s
    else:
        raise fail("walltime", "missing (give it in the job or in [defaults])")

    cwd_text = text("cwd")
    cwd = base_dir / Path(cwd_text).expanduser() if cwd_text else base_dir

    env = spec.get("env", {})
    if not isinstance(env, Mapping):
        raise fail("env", f'must be a table of NAME = "value", got {env!r}')
    env_out: dict[str, str] = {}
    for key, value in env.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise fail("env", f"{key} must be a string or a number, got {value!r}")
        env_out[str(key)] = str(value)

    hold = spec.get("hold", False)
    if not isinstance(hold, bool):
        raise fail("hold", f"must be true or false, got {hold!r}")

    sig = text("signal")
    if sig:
        sig = _signal_name(sig, fail)
    signal_before_s = 0
    if "signal_before" in spec:
        if not sig:
            raise fail("signal_before", "given without a signal to send")
        try:
            signal_before_s = parse_duration_s(spec["signal_before"])
        except ValueError as exc:
            raise fail("signal_before", str(exc)) from None
    elif sig:
        signal_before_s = DEFAULT_SIGNAL_BEFORE_S

    return NewJob(
        user=user,
        command=command,
        cwd=str(cwd),
        cores=cores,
        walltime_s=walltime_s,
        mem_mib=mem_mib,
        gpus=gpus,
        name=name,
        env=env_out,
        qos=text("qos"),
        hold=hold,
        group=group,
        stdout=text("stdout"),
        stderr=text("stderr"),
        signal=sig,
        signal_before_s=signal_before_s,
    )


def _command(value: Any, fail: _Fail) -> list[str]:
    """argv from a list of strings, or from a string split as a shell would (no shell runs)."""
    if value is None:
        raise fail("command", "missing")
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise fail("command", f"cannot split {value!r} ({exc})") from None
    elif isinstance(value, list) and all(isinstance(a, str) for a in value):
        argv = list(value)
    else:
        raise fail("command", f"must be a string or a list of strings, got {value!r}")
    if not argv or not argv[0]:
        raise fail("command", "is empty")
    return argv


def _signal_name(text: str, fail: _Fail) -> str:
    """ "USR1", "SIGUSR1" or "sigusr1" -> "SIGUSR1"; refuses names this OS does not know."""
    upper = text.strip().upper()
    full = upper if upper.startswith("SIG") else f"SIG{upper}"
    if full not in signal_module.Signals.__members__:
        raise fail("signal", f"unknown signal {text!r} (e.g. SIGUSR1, USR1, SIGTERM)")
    return full


def _edges(
    table: Mapping[str, Any], name: str, source: str, position: dict[str, int]
) -> list[tuple[int, str]]:
    """(parent file position, kind) of a job's after_* keys, in the order written."""
    out: list[tuple[int, str]] = []
    seen: dict[str, str] = {}
    for key, kind in EDGE_KEYS.items():
        value = table.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise WorkflowError(
                source, f"must be a list of job names, got {value!r}", job=name, key=key
            )
        for parent in value:
            if parent not in position:
                raise WorkflowError(
                    source,
                    f"names unknown job {parent!r} (jobs in this file: {', '.join(position)})",
                    job=name,
                    key=key,
                )
            if parent in seen:
                if seen[parent] == key:
                    continue  # listed twice under the same key: one edge
                raise WorkflowError(
                    source,
                    f"{parent!r} is also named in {seen[parent]} (one kind per parent)",
                    job=name,
                    key=key,
                )
            seen[parent] = key
            out.append((position[parent], kind))
    return out


def _topological_order(
    names: list[str], parents: list[list[tuple[int, str]]], source: str
) -> list[int]:
    """File positions with every parent before its children, else file order (Kahn with
    a heap: a file already in order keeps it). A cycle is named job by job."""
    n = len(names)
    children: list[list[int]] = [[] for _ in range(n)]
    missing = [0] * n
    for child, edges in enumerate(parents):
        for parent, _ in edges:
            children[parent].append(child)
            missing[child] += 1
    ready = [k for k in range(n) if missing[k] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for child in children[k]:
            missing[child] -= 1
            if missing[child] == 0:
                heapq.heappush(ready, child)
    if len(order) == n:
        return order
    cycle = _find_cycle(parents, {k for k in range(n) if missing[k] > 0})
    shown = " -> ".join(names[k] for k in cycle)
    raise WorkflowError(source, f"cycle: {shown} (each job runs after the one before it)")


def _find_cycle(parents: list[list[tuple[int, str]]], left: set[int]) -> list[int]:
    """One cycle among the jobs Kahn could not order, as parent -> ... -> child -> first.

    Every job left has a parent left, so walking parents from the earliest one
    must revisit a job; the walk from that job back to itself is a cycle.
    """
    start = min(left)
    walk: list[int] = []
    seen: dict[int, int] = {}
    k = start
    while k not in seen:
        seen[k] = len(walk)
        walk.append(k)
        k = min(p for p, _ in parents[k] if p in left)
    loop = walk[seen[k] :]  # child -> parent -> ... ; reverse to read in run order
    loop.reverse()
    first = loop.index(min(loop))  # start at the earliest job in the file
    loop = loop[first:] + loop[:first]
    return [*loop, loop[0]]


# ---------------------------------------------------------------------- progress

_BAD_STATES = frozenset({"failed", "cancelled", "timeout", "node_fail"})


def workflow_progress(record: Mapping[str, Any], page: int | None = None) -> dict[str, Any]:
    """Summary of ``AgentStore.workflow(name, user)``: counts, done fraction, overall
    state, and the rows of its page of jobs (``next``: the ``after`` of the next
    page when the page holds ``page`` jobs, the most it may).

    The overall state is "completed" when every job completed, "failed" when
    some job ended badly (failed, cancelled, timeout, node_fail) and nothing is
    left to run (the kernel cancels jobs whose dependency can no longer be
    met, so they do not linger as pending), "pending" while no job has started,
    and "running" otherwise.
    """
    jobs = list(record.get("jobs", []))
    counts = dict.fromkeys(JOB_STATES, 0)
    for state, n in record.get("counts", {}).items():
        counts[str(state)] = counts.get(str(state), 0) + int(n)
    total = sum(counts.values())
    finished = sum(counts[s] for s in FINAL_STATES)
    unfinished = total - finished
    if total and counts["completed"] == total:
        state = "completed"
    elif unfinished == 0 and any(counts[s] for s in _BAD_STATES):
        state = "failed"
    elif counts["running"] == 0 and finished == 0:
        state = "pending"
    else:
        state = "running"
    return {
        "id": record.get("id"),
        "name": record.get("name"),
        "user": record.get("user"),
        "submit_time": record.get("submit_time"),
        "state": state,
        "total": total,
        "counts": counts,
        "done": finished / total if total else 0.0,
        "jobs": [
            {
                "name": job["name"],
                "id": job["id"],
                "state": job["state"],
                "exit_code": job.get("exit_code"),
            }
            for job in jobs
        ],
        "next": jobs[-1]["id"] if page is not None and jobs and len(jobs) == page else None,
    }
