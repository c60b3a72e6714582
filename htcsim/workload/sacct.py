"""Slurm accounting history (``sacct --parsable2``) as a workload, to replay and write as SWF.

Operators tune a policy on their own cluster's history. Slurm keeps that history in
its accounting database; this module reads what ``sacct`` prints from it::

    FIELDS=JobID,User,Group,Account,Partition,QOS,Submit,Eligible,Start,End,Elapsed
    FIELDS=$FIELDS,Timelimit,NCPUS,ReqCPUS,NNodes,ReqMem,ReqTRES,AllocTRES,State,ExitCode
    sacct --parsable2 --allusers --starttime 2024-01-01 --endtime 2024-04-01 \\
        --format=$FIELDS > cluster.sacct

and applies the same discipline as the SWF reader: every record becomes a job or a
counted drop (``Workload.dropped``: ``len(jobs) + sum(dropped.values())`` equals the
data lines), every convention applied to a kept job is counted
(``Workload.changed``), and malformed input raises :class:`SacctError` naming the
file, the line, the field and the bad value. Value grammars (times, durations,
memory, TRES) are in :mod:`htcsim.workload.sacct_values`, the conventions below in
:mod:`htcsim.workload.sacct_jobs`.

Columns (header names, any case, any order; others are ignored)
    Required: ``JobID``, ``Submit``, ``Start``, ``End`` or ``Elapsed``, ``Timelimit``,
    ``NCPUS`` (or its alias ``AllocCPUS``) or ``ReqCPUS``, ``State``. Optional:
    ``User``, ``Group``, ``Partition``, ``QOS``, ``NNodes`` (``AllocNodes``),
    ``ReqMem``, ``ReqTRES``, ``AllocTRES``. ``Account``, ``Eligible`` and
    ``ExitCode`` are accepted and not used (fairshare here is per user and group;
    waits count from Submit, as in SWF; the status comes from State).

Records, in the order the drop reasons are tried (the first that applies counts)
    ``job_step``: ``123.batch``, ``123.extern``, ``123.0`` are steps inside a job
    (the job's own line carries its resources), so they are skipped, not lost.
    ``array_range_not_started``: ``123_[5-9]`` is the one record of array tasks that
    never left the queue. ``unfinished:STATE``: PENDING, RUNNING, REQUEUED... records
    (the record is not final). ``revoked``: a federated sibling another cluster ran.
    ``submit_unknown``. ``cancelled_before_start``: CANCELLED with no Start, or with
    an empty AllocTRES and no run time (Slurm stamps Start = End = the cancel time on
    a job cancelled while pending). ``never_started``: any other state without a
    Start. ``run_time_unknown``: neither Elapsed nor End. ``size_unknown_or_zero``:
    neither NCPUS nor ReqCPUS above 0. ``larger_than_node`` /
    ``larger_than_machine``: only with a machine given that is smaller than a job.

Fields of a kept job
    ``job_id``: the Slurm job id for a plain job. Array tasks (``123_4``),
    heterogeneous components (``123+0``, each a separate job: the components start
    together in Slurm, which the replay does not enforce) and repeats of an id
    (``sacct --duplicates``) get fresh ids above the largest id in the file, in
    file order (so an id depends on the file alone, not on the options), and
    ``SacctImport.job_names`` maps them back to the original text.
    ``submit_s``: seconds after the earliest Submit of a kept job, whose epoch is
    ``unix_start_time``. Times are read in ``timezone`` (sacct prints the local
    time of the cluster; UTC by default); whole epoch seconds are also accepted.
    ``run_s``: Elapsed, or End - Start without it. ``walltime_s``: Timelimit;
    ``UNLIMITED``/``Partition_Limit``/empty/0 -> the run time, counted as
    ``walltime_from_run_time`` (the SWF convention). A run longer than the limit
    (TIMEOUT grace) stays as recorded and is counted (``run_exceeds_walltime``); the
    simulator caps it. ``status``: COMPLETED 1; FAILED, TIMEOUT, NODE_FAIL,
    OUT_OF_MEMORY, BOOT_FAIL, DEADLINE, PREEMPTED 0; CANCELLED (``by UID`` too) 5.
    ``recorded_wait_s``: Start - Submit; ``recorded_alloc``: NCPUS.

Shape of a job (cores are NCPUS, the allocation, or ReqCPUS when that is missing)
    One node (NNodes 1): one task of all its cores, which must fit on one node. On
    N > 1 nodes with cores and GPUs divisible by N: N tasks of cores/N (one per
    node, as Slurm placed them). Otherwise (NNodes missing, or not divisible): one
    one-core task per core, the SWF convention (``one_core_tasks``). GPUs (AllocTRES,
    else ReqTRES) are spread the same way, rounded up per task if they do not divide
    (``gpus_rounded_up``). Memory (ReqMem) per task, rounded up to whole MiB: per CPU
    x cores per task; per node x nodes / tasks; a total / tasks; none: 0. ``0`` (any
    unit) is Slurm's ``--mem=0``, the whole memory of every node the job used: the
    node's memory (``mem_per_node``, else the most memory one job asked for on one
    node, a lower bound) x nodes / tasks, counted as ``mem_whole_node``; when no
    job says how much memory a node has and none is given, it stays 0, counted as
    ``mem_whole_node_unknown``.

Machine
    ``nodes``, ``cores_per_node`` and ``gpus_per_node`` when given; each one left out
    is inferred, and the inference counted (``machine_inferred``): cores (GPUs) per
    node = the most any job had on one node; nodes = the largest of the most nodes
    one job used and the nodes needed for the peak of cores (GPUs) the recorded
    schedule held at once. That is the smallest machine of identical nodes that fits
    the history, a lower bound of the real one: give the real sizes when known.
    Memory is declared only when given (``mem_per_node``; then a job asking more per
    task than a node has is dropped as ``larger_than_node``); otherwise it is not
    (``mem_mib_per_node = 0``) and a replay ignores it unless a cluster file
    declares it.

Names
    Users, groups, partitions and QOS become dense ids 1..N in sorted name order
    (-1 where the field is empty). The tables are in :class:`SacctImport`; the
    partition and QOS tables also go in the header (``Partitions``, ``Queues``), so
    an SWF written from the workload says what its numbers mean. User and group
    names are kept out of the header, so the SWF can be shared as the Parallel
    Workloads Archive shares logs.
"""

from __future__ import annotations

import gzip
import json
import zlib
import zoneinfo
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl

from htcsim.workload import sacct_jobs as conventions
from htcsim.workload import sacct_values as sv
from htcsim.workload.sacct_jobs import SacctImport

__all__ = ["SACCT_COLUMNS", "SacctError", "SacctImport", "read_sacct", "write_name_tables"]

SACCT_COLUMNS = (
    "JobID,User,Group,Account,Partition,QOS,Submit,Eligible,Start,End,Elapsed,Timelimit,"
    "NCPUS,ReqCPUS,NNodes,ReqMem,ReqTRES,AllocTRES,State,ExitCode"
)
"""The ``--format`` list to export with (``sacct --parsable2 --allusers --format=...``)."""

_CANONICAL = {name.lower(): name for name in SACCT_COLUMNS.split(",")} | {
    "alloccpus": "NCPUS",
    "allocnodes": "NNodes",
}
"""Header names this reader knows, lower case -> the name used here."""

_REQUIRED = (
    ("JobID",), ("Submit",), ("Start",), ("End", "Elapsed"), ("Timelimit",),
    ("NCPUS", "ReqCPUS"), ("State",),
)  # fmt: skip

_TIME = "is not a date and time (YYYY-MM-DDTHH:MM:SS, Unknown or None)"
_SPAN = "is not a Slurm duration ([D-]HH:MM:SS, MM:SS or minutes)"
_COUNT = "is not a whole number"
_GRES = "has a gres/gpu without a count"
_RULES: tuple[tuple[str, str, tuple[str, ...] | None, str], ...] = (
    ("Submit", "submit", sv.MISSING, _TIME),
    ("Start", "start", sv.MISSING, _TIME),
    ("End", "end", sv.MISSING, _TIME),
    ("Elapsed", "elapsed", sv.MISSING, _SPAN),
    ("Timelimit", "limit", sv.NO_TIME_LIMIT, _SPAN + ", UNLIMITED or Partition_Limit"),
    ("NCPUS", "ncpus", (), _COUNT),
    ("ReqCPUS", "reqcpus", (), _COUNT),
    ("NNodes", "nnodes", (), _COUNT),
    ("ReqMem", "mem", (), "is not a memory size (4000M, 4G, 4000Mc per CPU, 4000Mn per node)"),
    ("ReqTRES", "req_gpus", (), _GRES),
    ("AllocTRES", "alloc_gpus", (), _GRES),
    ("State", "state", None, "is not a Slurm job state (COMPLETED, FAILED, CANCELLED, ...)"),
)
"""In file-check order: a column, the typed value it becomes, the texts that mean "not
known" (None: a value is required), and what a value that does not parse is not."""


class SacctError(ValueError):
    """Malformed sacct output, located as ``path:line: field NAME: what is wrong``.

    The location is kept in attributes too (``field`` is the column as the header
    spells it), so callers can point at it without parsing the message.
    """

    def __init__(
        self, message: str, *, path: str, reason: str, line: int | None = None, field: str = ""
    ) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.field = field
        self.reason = reason


# ------------------------------------------------------------------------------ table


def _load_text(path: Path, shown: str) -> bytes:
    """The bytes, gunzipped when gzip (by magic number), without BOM or CR."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            message = f"{shown}: not a readable gzip file ({exc})"
            raise SacctError(message, path=shown, reason="gzip") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.replace(b"\r\n", b"\n") if b"\r" in data else data


def _header(line: bytes, shown: str) -> tuple[list[str], dict[str, str]]:
    """Column names, and how the header spells each known one; checks required ones."""
    names = [name.strip() for name in line.decode("utf-8", "replace").split("|")]
    spelled: dict[str, str] = {}
    for name in names:
        canonical = _CANONICAL.get(name.lower())
        if canonical and canonical not in spelled:
            spelled[canonical] = name
    for options in _REQUIRED:
        if not any(option in spelled for option in options):
            raise SacctError(
                f"{shown}:1: header: missing required column {' or '.join(options)} "
                f"(export with sacct --parsable2 --format={SACCT_COLUMNS})",
                path=shown,
                line=1,
                field=options[0],
                reason="missing_column",
            )
    return names, spelled


def _data_lines(body: bytes, n_fields: int, shown: str) -> tuple[bytes, np.ndarray]:
    """The non-blank data lines and their numbers in the file; raises for a line whose
    field count is not the header's.

    Counted before anything is split: ``--parsable2`` does not quote, so a ``|``
    inside a value shifts every field after it, and that line must be named, not
    guessed at. NumPy finds line ends and separators; a search per line end counts
    the separators before it, so there is no Python loop per line.
    """
    raw = np.frombuffer(body, dtype=np.uint8)
    ends = np.append(np.flatnonzero(raw == ord("\n")), raw.size)
    starts = np.concatenate(([0], ends[:-1] + 1))
    pipes = np.flatnonzero(raw == ord("|"))
    n_pipes = np.searchsorted(pipes, ends) - np.searchsorted(pipes, starts)
    filled = ends > starts
    bad = np.flatnonzero(filled & (n_pipes != n_fields - 1))
    if bad.size:
        k = int(bad[0])
        text = body[starts[k] : ends[k]].decode("utf-8", "replace")
        raise SacctError(
            f"{shown}:{k + 2}: the line has {int(n_pipes[k]) + 1} fields, the header has "
            f"{n_fields} (a '|' inside a value?): {text[:120]!r}",
            path=shown,
            line=k + 2,
            reason="field_count",
        )
    if not filled[:-1].all():  # blank lines are no records (rare): leave them out
        body = b"\n".join(body[s:e] for s, e in zip(starts[filled], ends[filled], strict=True))
    return body, np.flatnonzero(filled) + 2


def _table(data: bytes, shown: str) -> tuple[pl.DataFrame, dict[str, str]]:
    """The known columns as text (null when empty), one row per data line, and
    ``line``, its number in the file."""
    head, _, body = data.partition(b"\n")
    if not head.strip():
        message = f"{shown}:1: header: empty; expected sacct --parsable2 column names"
        raise SacctError(message, path=shown, line=1, reason="missing_column")
    names, spelled = _header(head, shown)
    body, numbers = _data_lines(body, len(names), shown)
    wanted = sorted({names.index(header) for header in spelled.values()})
    text = pl.DataFrame(schema={f"c{j}": pl.String for j in wanted})
    if numbers.size:
        text = pl.read_csv(
            body,
            has_header=False,
            separator="|",
            quote_char=None,
            columns=wanted,
            new_columns=[f"c{j}" for j in range(len(names))],
            infer_schema=False,
            encoding="utf8-lossy",
        )

    def column(header: str) -> pl.Expr:  # an empty field is null: "not given"
        value = pl.col(f"c{names.index(header)}").str.strip_chars()
        return pl.when(value != "").then(value)

    frame = text.select(
        pl.Series("line", numbers, dtype=pl.Int64),
        *(column(header).alias(name) for name, header in spelled.items()),
    )
    return frame, spelled


# ----------------------------------------------------------------------------- values


def _raise_first(
    frame: pl.DataFrame, checks: list[tuple[str, pl.Expr, str]], shown: str, spelled: dict[str, str]
) -> None:
    """Raise for the first line with a bad value (the first bad field on that line)."""
    if not checks or frame.height == 0:
        return
    firsts = frame.select(
        mask.arg_true().first().alias(str(k)) for k, (_, mask, _) in enumerate(checks)
    )
    found = [(row, k) for k, row in enumerate(firsts.row(0)) if row is not None]
    if not found:
        return
    row, k = min(found)
    name, _, what = checks[k]
    line = int(frame["line"][row])
    value = frame[name][row]
    quoted = "an empty value" if value is None else repr(value)
    header_name = spelled.get(name, name)
    raise SacctError(
        f"{shown}:{line}: field {header_name}: {quoted} {what}",
        path=shown,
        line=line,
        field=header_name,
        reason=f"bad_{name.lower()}",
    )


def _job_ids(frame: pl.DataFrame, shown: str, spelled: dict[str, str]) -> pl.DataFrame:
    """JobID split into ``base`` (int), ``task``, ``range``, ``het``, ``step``."""
    frame = frame.with_columns(parts=sv.job_id_parts(pl.col("JobID"))).unnest("parts")
    frame = frame.with_columns(pl.col("base").cast(pl.Int64, strict=False))
    what = "is not a Slurm job id (123, 123_4, 123_[5-9], 123+0, 123.batch)"
    _raise_first(frame, [("JobID", pl.col("base").is_null(), what)], shown, spelled)
    return frame


def _malformed(column: str, name: str, allowed: tuple[str, ...] | None) -> pl.Expr:
    """True where ``column``'s text did not become a value ``name`` (see ``_RULES``)."""
    if allowed is None:
        return pl.col(name).is_null()
    return sv.malformed(pl.col(column), pl.col(name), allowed)


def _values(records: pl.DataFrame, shown: str, spelled: dict[str, str], tz: str) -> pl.DataFrame:
    """Typed columns of the records (no steps), once every value has passed its grammar."""
    col = pl.col
    empty = pl.lit(None, dtype=pl.String)

    def text(name: str) -> pl.Expr:
        return col(name) if name in records.columns else empty

    mem_mib, mem_per = sv.memory(text("ReqMem"))
    records = records.with_columns(
        submit=sv.epoch_s(text("Submit"), tz),
        start=sv.epoch_s(text("Start"), tz),
        end=sv.epoch_s(text("End"), tz),
        elapsed=sv.duration_s(text("Elapsed")),
        limit=sv.duration_s(text("Timelimit")),
        ncpus=sv.count(text("NCPUS")),
        reqcpus=sv.count(text("ReqCPUS")),
        nnodes=sv.count(text("NNodes")),
        mem=mem_mib,
        mem_per=mem_per,
        req_gpus=sv.gpus(text("ReqTRES")),
        alloc_gpus=sv.gpus(text("AllocTRES")),
        allocated=text("AllocTRES").is_not_null(),
        state=sv.state(text("State")),
    )
    checks = [
        (column, _malformed(column, name, allowed), what)
        for column, name, allowed, what in _RULES
        if column in records.columns
    ]
    _raise_first(records, checks, shown, spelled)
    return records


# ----------------------------------------------------------------------------- reader


def read_sacct(
    path: str | Path,
    *,
    nodes: int | None = None,
    cores_per_node: int | None = None,
    gpus_per_node: int | None = None,
    timezone: str = "UTC",
    mem_per_node: int | None = None,
) -> SacctImport:
    """Load ``sacct --parsable2`` output (plain or gzip) as a workload and its name tables.

    The conventions (which column means what, what is dropped and why, how the
    machine is inferred) are in the module docstring. ``nodes``,
    ``cores_per_node``, ``gpus_per_node`` give the machine (each one left out is
    inferred), ``mem_per_node`` (MiB) its nodes' memory; ``timezone`` (an IANA
    name) is the one sacct printed times in.
    """
    path = Path(path)
    shown = str(path)
    _check_options(nodes, cores_per_node, gpus_per_node, timezone)
    if mem_per_node is not None and mem_per_node <= 0:
        raise ValueError(f"mem_per_node must be positive, got {mem_per_node}")
    frame, spelled = _table(_load_text(path, shown), shown)
    frame = _job_ids(frame, shown, spelled)
    records = _values(frame.filter(pl.col("step").is_null()), shown, spelled, timezone)
    dropped: Counter[str] = Counter()
    if frame.height > records.height:
        dropped["job_step"] = frame.height - records.height

    records = records.with_columns(reason=conventions.drop_reason("AllocTRES" in spelled))
    conventions.count_reasons(dropped, records["reason"])
    first_free = int(frame["base"].to_numpy().max(initial=0)) + 1
    jobs, job_names = conventions.renumber(records.filter(pl.col("reason").is_null()), first_free)
    jobs = conventions.shape(jobs)
    whole_node_mib = mem_per_node if mem_per_node is not None else conventions.node_memory(jobs)
    jobs = conventions.whole_node_memory(jobs, whole_node_mib)
    machine, inferred = conventions.machine_for(
        jobs, nodes, cores_per_node, gpus_per_node, mem_per_node
    )
    jobs = jobs.with_columns(reason=conventions.too_large(machine))
    conventions.count_reasons(dropped, jobs["reason"])
    return conventions.assemble(
        conventions.workload_name(path),
        jobs.filter(pl.col("reason").is_null()),
        machine,
        inferred=inferred,
        dropped=dropped,
        job_names=job_names,
        header={
            "Information": f"converted from Slurm accounting (sacct) {path.name} by htcsim",
            "TimeZoneString": timezone,
        },
    )


def _check_options(
    nodes: int | None, cores_per_node: int | None, gpus_per_node: int | None, timezone: str
) -> None:
    """Refuse options that cannot describe a machine or a clock, before reading."""
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        message = f"unknown time zone {timezone!r} (an IANA name: UTC, Europe/Berlin)"
        raise ValueError(message) from exc
    for label, value in (("nodes", nodes), ("cores_per_node", cores_per_node)):
        if value is not None and value <= 0:
            raise ValueError(f"{label} must be positive, got {value}")
    if gpus_per_node is not None and gpus_per_node < 0:
        raise ValueError(f"gpus_per_node must be >= 0, got {gpus_per_node}")


def write_name_tables(path: str | Path, imported: SacctImport) -> None:
    """The id -> name tables as JSON, kept apart from the SWF (which may be shared)."""
    tables = {
        "users": imported.users,
        "groups": imported.groups,
        "partitions": imported.partitions,
        "qos": imported.qos,
        "job_ids": imported.job_names,
    }
    Path(path).write_text(json.dumps(tables, indent=1, sort_keys=True) + "\n", encoding="utf-8")
