"""What one value of ``sacct --parsable2`` output means: Slurm's value grammars.

Each grammar is a polars expression from the raw text column to a typed column, so a
whole accounting year converts without a Python loop per job. An expression gives
null both for "not known" (``Unknown``, ``None``, an empty field) and for text that
breaks the grammar; :func:`malformed` tells the two apart, which is how the reader
(:mod:`htcsim.workload.sacct`) finds a bad line to name instead of guessing.

The grammars, as Slurm prints them (``sacct`` man page; ``slurm_time.c``,
``sacct/print.c``):

- job id: ``123`` a job, ``123_4`` array task 4, ``123_[5-9]`` array tasks still
  pending as one record, ``123+0`` component 0 of a heterogeneous job, and any of
  these followed by ``.step`` (``.batch``, ``.extern``, ``.0``) for a job step;
- date and time: ``2024-03-01T08:00:00`` (local time of the cluster, the default
  ``SLURM_TIME_FORMAT``) or whole seconds since the epoch (``SLURM_TIME_FORMAT=%s``);
- duration: Slurm's time string, ``M`` (minutes), ``M:S``, ``H:M:S``, ``D-H``,
  ``D-H:M``, ``D-H:M:S``, the seconds optionally with a fraction (``05:03.250``),
  which is rounded to the nearest second;
- count: ``16``, or ``1K`` (x 1024), as sacct prints large node counts;
- memory: ``4000M``, ``4G``, ``1.50T`` (K, M, G, T, P are powers of 1024, no unit is
  M), then ``c`` (per CPU), ``n`` (per node) or nothing (the job's total: Slurm
  21.08 and later print the job's requested-memory TRES);
- TRES list: ``billing=4,cpu=4,gres/gpu=2,mem=16G,node=1``; GPUs are the untyped
  ``gres/gpu=N`` or, without one, the sum of the typed ``gres/gpu:a100=N`` entries.
"""

from __future__ import annotations

import polars as pl

MISSING = ("Unknown", "None")
"""Texts sacct prints for a time it does not know (besides an empty field)."""

NO_TIME_LIMIT = ("UNLIMITED", "Partition_Limit", "INFINITE", "NONE", "INVALID")
"""Timelimit texts that state no limit of the job's own."""

JOB_ID = (
    r"^(?P<base>\d+)"
    r"(?:_(?:(?P<task>\d+)|(?P<range>\[[^\]]*\])))?"
    r"(?:\+(?P<het>\d+))?"
    r"(?P<step>\..+)?$"
)
"""A Slurm job id, split into its parts (all null when the text is not one)."""

_DURATION = (
    r"^(?:\d+-\d+(?::\d+(?::\d+(?:\.\d+)?)?)?"  # D-H, D-H:M, D-H:M:S[.f]
    r"|\d+(?::\d+(?::\d+)?(?:\.\d+)?)?)$"  # M, M:S[.f], H:M:S[.f]
)
_COUNT = r"^(?P<n>\d+)(?P<k>[KMG]?)$"
_MEMORY = r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[KMGTP]?)(?P<per>[cn]?)$"
_ISO_TIME = "%Y-%m-%dT%H:%M:%S"
_POWERS_1024 = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_MIB_PER_UNIT = {"K": 1 / 1024, "": 1.0, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}

ENDED_STATUS = {
    "COMPLETED": 1,
    "FAILED": 0,
    "TIMEOUT": 0,
    "NODE_FAIL": 0,
    "OUT_OF_MEMORY": 0,
    "BOOT_FAIL": 0,
    "DEADLINE": 0,
    "PREEMPTED": 0,
    "CANCELLED": 5,
}
"""Final states of a job that ran, and the SWF status each becomes (field 11: 1
completed, 0 failed, 5 cancelled). Preempted and deadline jobs were ended by the
system, not by success, so they count as failed."""

UNFINISHED_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "CONFIGURING",
        "COMPLETING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "SPECIAL_EXIT",
        "RESV_DEL_HOLD",
        "POWER_UP_NODE",
        "LAUNCH_FAILED",
        "RECONFIG_FAIL",
        "UPDATE_DB",
    }
)
"""States of a job whose record is not final yet (it will be written again when the
job ends, or it was requeued and pends again): no run time to replay."""

OTHER_STATES = frozenset({"REVOKED"})
"""A federated job's sibling that another cluster ran: not a job of this cluster."""

KNOWN_STATES = frozenset(ENDED_STATUS) | UNFINISHED_STATES | OTHER_STATES


def job_id_parts(raw: pl.Expr) -> pl.Expr:
    """Struct of ``base``, ``task``, ``range``, ``het``, ``step`` (text) of a job id."""
    return raw.str.extract_groups(JOB_ID)


def state(raw: pl.Expr) -> pl.Expr:
    """The state word (``CANCELLED by 1234`` -> ``CANCELLED``), null when unknown."""
    word = raw.str.extract(r"^([A-Z_]+)(?:\s|$)", 1)
    return pl.when(word.is_in(list(KNOWN_STATES))).then(word)


def epoch_s(raw: pl.Expr, timezone: str) -> pl.Expr:
    """Seconds since the epoch of a date and time printed in ``timezone``.

    A repeated hour (the autumn clock change) is read as its first occurrence;
    Slurm never prints an hour the spring change skipped, so that is null (malformed).
    """
    parsed = (
        raw.str.strptime(pl.Datetime("us"), _ISO_TIME, strict=False)
        .dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
        .dt.epoch("s")
    )
    digits = raw.str.contains(r"^\d+$")
    return pl.when(digits).then(raw.cast(pl.Int64, strict=False)).otherwise(parsed)


def duration_s(raw: pl.Expr) -> pl.Expr:
    """Whole seconds of a Slurm time string (fractions rounded to nearest), else null.

    The grammar is checked with one regular-expression match; the numbers are then
    taken apart by splitting, several times faster than capture groups.
    """
    has_days = raw.str.contains("-", literal=True)
    halves = raw.str.split_exact("-", 1)
    days = (
        pl.when(has_days)
        .then(halves.struct.field("field_0").cast(pl.Int64, strict=False))
        .otherwise(0)
    )
    clock = pl.when(has_days).then(halves.struct.field("field_1")).otherwise(raw).str.split(":")
    n_parts = clock.list.len()
    p0, p1, p2 = (
        clock.list.get(k, null_on_oob=True).cast(pl.Float64, strict=False) for k in range(3)
    )
    seconds = (
        pl.when(has_days)
        .then(p0 * 3_600 + p1.fill_null(0) * 60 + p2.fill_null(0))  # D-H, D-H:M, D-H:M:S
        .when(n_parts == 3)
        .then(p0 * 3_600 + p1 * 60 + p2)  # H:M:S
        .when(n_parts == 2)
        .then(p0 * 60 + p1)  # M:S
        .otherwise(p0 * 60)  # M: minutes, as Slurm reads a bare number
    )
    whole = (seconds + 0.5).floor().cast(pl.Int64, strict=False) + days * 86_400
    return pl.when(raw.str.contains(_DURATION)).then(whole)


def count(raw: pl.Expr) -> pl.Expr:
    """A whole count, ``1K`` meaning 1024, else null."""
    parts = raw.str.extract_groups(_COUNT)
    scale = parts.struct.field("k").replace_strict(_POWERS_1024, return_dtype=pl.Int64)
    return parts.struct.field("n").cast(pl.Int64, strict=False) * scale


def memory(raw: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """MiB (float) and what they are per: ``"c"`` CPU, ``"n"`` node, ``""`` job total."""
    parts = raw.str.extract_groups(_MEMORY)
    scale = parts.struct.field("unit").replace_strict(_MIB_PER_UNIT, return_dtype=pl.Float64)
    return parts.struct.field("n").cast(pl.Float64, strict=False) * scale, parts.struct.field("per")


def gpus(raw: pl.Expr) -> pl.Expr:
    """GPUs in a TRES list: 0 when it names none, null when a gpu entry has no count."""
    untyped = raw.str.extract(r"(?:^|,)gres/gpu=(\d+)(?:,|$)", 1).cast(pl.Int64, strict=False)
    typed = (
        raw.str.extract_all(r"(?:^|,)gres/gpu:[^=,]+=\d+")
        .list.eval(pl.element().str.extract(r"=(\d+)$", 1).cast(pl.Int64, strict=False))
        .list.sum()
    )
    mentions = raw.str.contains("gres/gpu", literal=True)
    has_typed = raw.str.contains(r"(?:^|,)gres/gpu:[^=,]+=\d+")
    return (
        pl.when(untyped.is_not_null())
        .then(untyped)
        .when(has_typed)
        .then(typed)
        .when(mentions.not_())
        .then(0)
    )


def malformed(raw: pl.Expr, parsed: pl.Expr, allowed: tuple[str, ...] = MISSING) -> pl.Expr:
    """True where the text is there, is not one of ``allowed``, and did not parse."""
    return raw.is_not_null() & raw.is_in(list(allowed)).not_() & parsed.is_null()
