"""Standard Workload Format (SWF) reader.

SWF is the format of the Parallel Workloads Archive (PWA): one job per line, 18
whitespace-separated numeric fields, ``-1`` for "not known", header lines starting
with ``;`` (``; MaxProcs: 128``). The published scheduling literature replays these
logs under fixed conventions (docs/architecture.md, "SWF conventions"); this module
applies them once, at load time, and accounts for every job it leaves out or alters,
so a result is comparable with the papers and nothing is lost silently. The 18 fields
and the rules a data line must meet are ``htcsim.workload.swf_fields``; writing SWF is
``htcsim.workload.swf_writer``.

Speed matters because experiments reload whole logs (HPC2N: 202,871 jobs) many times.
The bulk of the data is therefore parsed without a Python loop per line: plain data
(every line 18 plain numbers) in one pass over the bytes in C (``htcsim.kernel.
swf_columns``); data that is not quite plain (a whole number written ``12.0``) by
rewriting the whitespace-aligned columns into a comma-separated buffer with NumPy and
bytes operations, which polars parses in Rust. Only when those fast paths meet
something they cannot vouch for (a comment among the data, a blank line, a wrong
field count, a token that is not a number) does the reader fall back to a scan line
by line, whose only job is to find and name the exact bad line.
"""

from __future__ import annotations

import gzip
import logging
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from htcsim.model import JOB_DTYPE, Machine, Workload, empty_jobs
from htcsim.workload.swf_fields import (
    _DATA_LINE,
    _FLOAT_FIELDS,
    _OK,
    _REASONS,
    _WS_SPLIT,
    N_FIELDS,
    SWF_FIELDS,
    _bad_line_detail,
    _row_message,
    _Rows,
    _validate,
)

__all__ = [
    "SWF_FIELDS",
    "SWFError",
    "SWFHeader",
    "read_swf",
    "read_swf_header",
]

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_SPACE_TABLE = bytes.maketrans(b"\t\r\v\f", b"    ")
_WS_CHARS = b" \t\r\v\f"
_HEADER_KEY = re.compile(r";[ \t]{0,2}([A-Za-z][A-Za-z0-9_]*)[ \t]*:(?!//)[ \t]*(.*)$")
_LEADING_INT = re.compile(r"\s*([+-]?\d+)")
_BLANK_LINE = re.compile(rb"\n[ \t\r\v\f]*\n")
_SEMICOLON = ord(";")

_DECIMAL = np.array([j in _FLOAT_FIELDS for j in range(1, N_FIELDS + 1)], dtype=np.int8)


class SWFError(ValueError):
    """Malformed SWF input, located as ``path:line: field N (name): what is wrong``.

    The location is kept in attributes too, so callers (the CLI, tests) can point at
    the line without parsing the message.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        line: int | None = None,
        field: int | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class SWFHeader:
    """What a log's header says, and how many job lines follow, without parsing the jobs.

    ``max_procs``/``max_nodes``/``unix_start_time`` are the leading integers of the
    header values (``; MaxNodes: 338 (batch partition; 512 total)`` -> 338), ``None``
    when the line is absent or says ``-1``/``0``.
    """

    header: dict[str, str]
    max_procs: int | None
    max_nodes: int | None
    unix_start_time: int | None
    n_data_lines: int


# --------------------------------------------------------------------------- helpers


def _load_bytes(path: Path, shown: str) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by magic number, not by suffix),
    without a UTF-8 byte-order mark (which would otherwise make line 1 a bad line)."""
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SWFError(f"{shown}: not a readable gzip file ({exc})", path=shown) from exc
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def _decode(line: bytes) -> str:
    """Header text: UTF-8 when it is, Latin-1 otherwise (old logs predate UTF-8)."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def _split_header(data: bytes) -> tuple[list[tuple[int, str]], int, int]:
    """Comment lines at the top, the number of lines they span, and where data starts.

    Loops over header lines only (tens of them), never over job lines.
    """
    comments: list[tuple[int, str]] = []
    pos = 0
    lineno = 0
    size = len(data)
    while pos < size:
        end = data.find(b"\n", pos)
        if end < 0:
            end = size
        stripped = data[pos:end].strip(_WS_CHARS)
        if stripped and not stripped.startswith(b";"):
            break
        lineno += 1
        if stripped:
            comments.append((lineno, _decode(stripped)))
        pos = end + 1
    return comments, lineno, min(pos, size)


def _parse_header(comments: list[tuple[int, str]]) -> tuple[dict[str, str], dict[str, int]]:
    """``; Key: value`` lines into a dict, and the line where each key first appears.

    A repeated key (``Queue``, ``Note``, ``Information``) keeps every value, joined by
    newlines; an indented comment line without its own key (``;        http://...``,
    the filter lines of a cleaned log's note) continues the previous key. A bare ``;``
    ends a continuation; other free text (``; replayed with EASY``) goes to ``Comment``.
    """
    header: dict[str, str] = {}
    first_line: dict[str, int] = {}
    last_key: str | None = None
    for lineno, text in comments:
        match = _HEADER_KEY.match(text)
        if match:
            key, value = match.group(1), match.group(2).rstrip()
            header[key] = f"{header[key]}\n{value}" if key in header else value
            first_line.setdefault(key, lineno)
            last_key = key
            continue
        body = text[1:].strip()
        if not body:
            last_key = None
            continue
        indented = len(text) - len(text[1:].lstrip()) > 2  # "; " plus at least one more
        key = last_key if (indented and last_key) else "Comment"
        header[key] = f"{header[key]}\n{body}" if key in header else body
        first_line.setdefault(key, lineno)
    return header, first_line


def _header_int(
    header: dict[str, str], first_line: dict[str, int], key: str, shown: str
) -> int | None:
    """Leading integer of a header value; ``None`` when absent or not positive (-1 = unknown)."""
    if key not in header:
        return None
    match = _LEADING_INT.match(header[key])
    if not match:
        line = first_line.get(key)
        raise SWFError(
            f"{shown}:{line}: header {key}: {header[key].splitlines()[0]!r} does not start "
            "with an integer",
            path=shown,
            line=line,
            reason="bad_header",
        )
    value = int(match.group(1))
    return value if value > 0 else None


def _count_data_lines(rest: bytes) -> int:
    """Lines that are neither blank nor ``;`` comments, counted without a loop per line
    in the usual case (no comment or blank line among the data)."""
    stripped = rest.rstrip()
    if not stripped:
        return 0
    if b";" not in stripped and not _BLANK_LINE.search(stripped):
        return stripped.count(b"\n") + 1
    count = 0
    for line in stripped.split(b"\n"):  # unusual files only
        text = line.strip(_WS_CHARS)
        if text and not text.startswith(b";"):
            count += 1
    return count


def _lift_comments(
    rest: bytes, first_line: int
) -> tuple[bytes, np.ndarray | None, list[tuple[int, str]]]:
    """Take ``;`` comment lines and blank lines out of the data, for the fast path.

    Returns the data lines alone, the line number of each (None when nothing was
    taken out: they follow ``first_line`` on), and the comments with their line
    numbers. Some logs carry notes among or after their jobs, or blank lines;
    they are well formed and must not push a long log to the line-by-line scan
    (a regular expression per line). The loop per line here runs only when the
    data has such a line, and does no more than strip and look at one byte.
    """
    if b";" not in rest and not _BLANK_LINE.search(rest):
        return rest, None, []
    lines = rest.split(b"\n")
    texts = [raw.strip(_WS_CHARS) for raw in lines]
    keep = np.fromiter((bool(t) and t[0] != _SEMICOLON for t in texts), bool, len(texts))
    comments = [
        (first_line + k, _decode(texts[k])) for k in np.flatnonzero(~keep).tolist() if texts[k]
    ]
    kept = np.flatnonzero(keep)
    data = b"\n".join(lines[k] for k in kept.tolist()).rstrip(_WS_CHARS)
    return data, kept + first_line, comments


def _cut_lines(rest: bytes, max_lines: int) -> bytes:
    """The first ``max_lines`` lines of ``rest`` (all of it if it has fewer)."""
    if max_lines <= 0:
        return b""
    newlines = np.flatnonzero(np.frombuffer(rest, dtype=np.uint8) == ord("\n"))
    if newlines.size < max_lines:
        return rest
    return rest[: int(newlines[max_lines - 1])]


# ------------------------------------------------------------------------ data parsing


_CHUNK_BYTES = 1 << 22


def _fast_columns(rest: bytes) -> dict[int, np.ndarray] | None:
    """Parse data lines (no comments expected) into 18 columns, or ``None`` to fall back:
    in C when the data is plain (``_plain_columns``), else through polars (``_csv_columns``)."""
    if not rest:
        return None
    plain = _plain_columns(rest)
    return plain if plain is not None else _csv_columns(rest)


def _csv_columns(rest: bytes) -> dict[int, np.ndarray] | None:
    """Parse data lines (no comments expected) into 18 columns, or ``None`` to fall back.

    The first blank after every token becomes a comma (NumPy, in place) and
    ``bytes.translate`` deletes the other blanks, turning the aligned columns into CSV
    that polars parses in Rust. Line ends are inspected with NumPy too: two-byte
    substring searches on text this full of blanks cost as much as the parse itself.

    ``None`` means "something unusual is there": a ``;`` or ``,`` in the data, a blank
    line, a missing or extra field, a token that is not a number. The caller then scans
    line by line to report it precisely; this path never guesses. ``rest`` must start
    with a data line and not end with blanks.
    """
    if not rest or b";" in rest or b"," in rest:
        return None
    import polars as pl  # (only here: plain logs never need it)

    if any(ch in rest for ch in (b"\t", b"\r", b"\v", b"\f")):
        rest = rest.translate(_SPACE_TABLE)
    buf = bytearray(rest)
    view = np.frombuffer(buf, dtype=np.uint8)
    n_lines = 1  # rest starts with a data line, so view[0] is not a line end
    trailing_blanks = False
    # In chunks, so the masks stay a few MB whatever the log's size; each chunk
    # looks at its bytes and, unmodified, the byte before each of them.
    for a in range(1, len(view), _CHUNK_BYTES):
        b = min(len(view), a + _CHUNK_BYTES)
        cur = view[a:b]
        prev = view[a - 1 : b - 1].copy()
        newline = cur == ord("\n")
        n_lines += int(np.count_nonzero(newline))
        trailing_blanks = trailing_blanks or bool(np.any(prev[newline] == ord(" ")))
        after_token = cur == ord(" ")
        after_token &= prev > ord(" ")
        np.putmask(cur, after_token, ord(","))
    del view
    squeezed = buf.translate(None, b" ")
    del buf
    csv = bytes(squeezed)
    del squeezed
    if trailing_blanks:  # the first blank after a line's last token became a comma
        csv = csv.replace(b",\n", b"\n")
    typed = {f"f{j}": pl.Float64 if _DECIMAL[j - 1] else pl.Int64 for j in range(1, N_FIELDS + 1)}
    floats = {f"f{j}": pl.Float64 for j in range(1, N_FIELDS + 1)}
    frame: pl.DataFrame | None = None
    for schema in (typed, floats):  # float retry: "12.0" in a whole field
        try:
            frame = pl.read_csv(
                csv, has_header=False, separator=",", schema=schema, quote_char=None
            )
            break
        except pl.exceptions.PolarsError:
            continue
    # A blank line is a row of nulls (or no row, depending on the polars version), a
    # short line a row with nulls: either way, leave it to the line scan.
    if frame is None or frame.height != n_lines or any(frame.null_count().row(0)):
        return None
    return {j: frame.get_column(f"f{j}").to_numpy() for j in range(1, N_FIELDS + 1)}


def _plain_columns(rest: bytes) -> dict[int, np.ndarray] | None:
    """The 18 columns of plain data (plain integers, plain decimals in the decimal
    fields), parsed in C; ``None`` when the data is anything else."""
    from htcsim.kernel import swf_columns  # (loads the compiled module: not for headers)

    parsed = swf_columns(rest, _DECIMAL)
    if parsed is None:
        return None
    whole, decimal = parsed
    rows = np.cumsum(_DECIMAL) - 1, np.cumsum(1 - _DECIMAL) - 1
    return {
        j: decimal[rows[0][j - 1]] if _DECIMAL[j - 1] else whole[rows[1][j - 1]]
        for j in range(1, N_FIELDS + 1)
    }


def _slow_rows(data: bytes, max_jobs: int | None) -> tuple[_Rows, list[tuple[int, str]]]:
    """Scan line by line: the fallback that names bad lines and finds comments anywhere.

    The loop per line only classifies it (blank, comment, 18 numbers, or bad, with one
    regular-expression match); the numbers of the good lines are then parsed in bulk by
    the fast path, so a long log with one bad line is not parsed token by token.
    """
    comments: list[tuple[int, str]] = []
    good_text: list[bytes] = []
    good_rows: list[int] = []
    line_nos: list[int] = []
    codes: list[int] = []
    fields: list[int] = []
    messages: dict[int, str] = {}
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        text = raw.strip(_WS_CHARS)
        if not text:
            continue
        if text.startswith(b";"):
            comments.append((lineno, _decode(text)))
            continue
        if max_jobs is not None and len(line_nos) >= max_jobs:
            break
        row_idx = len(line_nos)
        line_nos.append(lineno)
        if _DATA_LINE.fullmatch(text):
            good_text.append(text)
            good_rows.append(row_idx)
            codes.append(_OK)
            fields.append(0)
        else:
            code, field, message = _bad_line_detail(text)
            codes.append(code)
            fields.append(field)
            messages[row_idx] = message
    n = len(line_nos)
    good_cols = _fast_columns(b"\n".join(good_text)) if good_text else None
    if good_cols is None and good_text:  # not expected: the regex admits plain numbers only
        parsed = np.array(
            [[float(tok) for tok in _WS_SPLIT.split(text)] for text in good_text],
            dtype=np.float64,
        )
        good_cols = {j: parsed[:, j - 1] for j in range(1, N_FIELDS + 1)}
    index = np.array(good_rows, dtype=np.int64)
    cols: dict[int, np.ndarray] = {}
    for j in range(1, N_FIELDS + 1):
        col = np.zeros(n, dtype=np.float64)
        if good_cols is not None:
            col[index] = good_cols[j]
        cols[j] = col
    rows = _Rows(
        cols=cols,
        line_no=np.array(line_nos, dtype=np.int64),
        code=np.array(codes, dtype=np.int8),
        field=np.array(fields, dtype=np.int8),
        messages=messages,
    )
    return rows, comments


def _workload_name(path: Path) -> str:
    """``KTH-SP2-1996-2.1-cln`` for ``.../KTH-SP2-1996-2.1-cln.swf.gz``."""
    name = path.name
    for suffix in (".gz", ".swf"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


# ---------------------------------------------------------------------------- readers

_SWF_COLUMNS: tuple[tuple[str, int], ...] = (
    ("job_id", 1),
    ("submit_s", 2),
    ("recorded_wait_s", 3),
    ("recorded_alloc", 5),
    ("avg_cpu_s", 6),
    ("used_mem_kib", 7),
    ("status", 11),
    ("user_id", 12),
    ("group_id", 13),
    ("executable_id", 14),
    ("queue_id", 15),
    ("partition_id", 16),
    ("preceding_job_id", 17),
    ("think_time_s", 18),
)
"""JOB_DTYPE columns copied straight from an SWF field."""

_FILLED_COLUMNS = {name for name, _ in _SWF_COLUMNS} | {
    "run_s",
    "walltime_s",
    "n_tasks",
    "cores_per_task",
    "mem_mib_per_task",
    "gpus_per_task",
}
"""Every JOB_DTYPE column read_swf writes; checked against the dtype at run time."""


def read_swf_header(path: str | Path) -> SWFHeader:
    """Header and data-line count of an SWF log, without parsing the jobs.

    For catalogs (``htcsim traces``): reading a header and counting lines costs the
    decompression and a few byte scans, not a parse.
    """
    path = Path(path)
    shown = str(path)
    data = _load_bytes(path, shown)
    comments, header_lines, start = _split_header(data)
    rest = data[start:]
    n_data = _count_data_lines(rest)
    if b";" in rest:  # comments among the data still belong to the header
        for lineno, raw in enumerate(rest.split(b"\n"), start=header_lines + 1):
            text = raw.strip(_WS_CHARS)
            if text.startswith(b";"):
                comments.append((lineno, _decode(text)))
    header, first_line = _parse_header(comments)
    return SWFHeader(
        header=header,
        max_procs=_header_int(header, first_line, "MaxProcs", shown),
        max_nodes=_header_int(header, first_line, "MaxNodes", shown),
        unix_start_time=_header_int(header, first_line, "UnixStartTime", shown),
        n_data_lines=n_data,
    )


def read_swf(
    path: str | Path,
    *,
    max_procs: int | None = None,
    skip_bad_lines: bool = False,
    max_jobs: int | None = None,
    machine: Machine | None = None,
) -> Workload:
    """Load an SWF log (``.swf`` or ``.swf.gz``) as a :class:`Workload`.

    Applies the conventions of docs/architecture.md ("SWF conventions") so results
    compare with the literature: a job's size is its requested processors (field 8),
    or the allocated ones (field 5) when the request is unknown; its walltime is the
    requested time (field 9), or its run time when that is unknown; jobs that never
    ran, have no size, or are larger than the machine are dropped. Every dropped job
    is counted by reason in ``dropped`` and every altered one in ``changed``, so that
    ``len(jobs) + sum(dropped.values())`` equals the data lines read. With
    ``skip_bad_lines`` malformed lines are left out as ``dropped["bad_line:<reason>"]``
    (and counted in ``skipped_lines``); without it the first one raises
    :class:`SWFError` naming the file, line and field.

    ``max_procs`` overrides the header's machine size; ``max_jobs`` keeps only the
    first N data lines of the file (before anything is dropped). ``machine``
    replaces the log's machine altogether (a replay on a cluster file): no job
    is dropped for its size then, since what fits is the replay's nodes to say
    (``htcsim.sim.fit``).
    """
    path = Path(path)
    shown = str(path)
    given_machine = machine is not None
    if max_jobs is not None and max_jobs < 0:
        raise ValueError(f"max_jobs must be >= 0, got {max_jobs}")
    data = _load_bytes(path, shown)
    comments, header_lines, start = _split_header(data)
    end = len(data)
    while end > start and data[end - 1] in b" \t\r\n\v\f":  # trailing blanks only
        end -= 1
    rest, line_no, inner = _lift_comments(data[start:end], header_lines + 1)
    if max_jobs is not None:
        rest = _cut_lines(rest, max_jobs)
        if line_no is not None and len(line_no) > max_jobs:
            # comments from the first data line left out on are not read (as by the line scan)
            beyond = int(line_no[max_jobs])
            inner = [(k, text) for k, text in inner if k < beyond]
    comments = comments + inner

    cols = _fast_columns(rest) if rest else {j: np.zeros(0) for j in range(1, N_FIELDS + 1)}
    if cols is not None:
        n = cols[1].shape[0]
        rows = _Rows(
            cols=cols,
            line_no=(
                np.arange(header_lines + 1, header_lines + 1 + n, dtype=np.int64)
                if line_no is None
                else line_no[:n].astype(np.int64)
            ),
            code=np.zeros(n, dtype=np.int8),
            field=np.zeros(n, dtype=np.int8),
            messages={},
        )
    else:
        rows, comments = _slow_rows(data, max_jobs)
    _validate(rows)

    header, first_line = _parse_header(comments)
    header_procs = _header_int(header, first_line, "MaxProcs", shown)
    header_nodes = _header_int(header, first_line, "MaxNodes", shown)
    unix_start = _header_int(header, first_line, "UnixStartTime", shown)

    dropped: Counter[str] = Counter()
    changed: Counter[str] = Counter()
    bad_rows = np.flatnonzero(rows.code != _OK)
    if bad_rows.size:
        first = int(bad_rows[0])
        message = f"{shown}:{int(rows.line_no[first])}: {_row_message(rows, first)}"
        if not skip_bad_lines:
            raise SWFError(
                message,
                path=shown,
                line=int(rows.line_no[first]),
                field=int(rows.field[first]),
                reason=_REASONS[int(rows.code[first])],
            )
        codes, counts = np.unique(rows.code[bad_rows], return_counts=True)
        for c, k in zip(codes.tolist(), counts.tolist(), strict=True):
            dropped[f"bad_line:{_REASONS[c]}"] = k
        logger.warning("%s: skipped %d bad lines; the first: %s", shown, bad_rows.size, message)
    good: np.ndarray | slice = (
        slice(None) if bad_rows.size == 0 else np.flatnonzero(rows.code == _OK)
    )

    def column(j: int) -> np.ndarray:
        return rows.cols[j][good].astype(np.int64, copy=False)

    run = column(4)
    requested_procs = column(8)
    allocated = column(5)
    size_from_alloc = (requested_procs <= 0) & (allocated > 0)
    size = np.where(size_from_alloc, allocated, requested_procs)
    requested_time = column(9)
    walltime_from_run = requested_time <= 0
    walltime = np.where(walltime_from_run, run, requested_time)

    if machine is None:
        machine = _log_machine(header_procs, header_nodes, max_procs, size, run, changed, shown)
    never_ran = run < 0
    no_size = ~never_ran & (size <= 0)
    too_large = ~never_ran & ~no_size & (size > machine.total_cores)
    if given_machine:  # the replay's nodes judge what fits (htcsim.sim.fit)
        too_large[:] = False
    keep = ~(never_ran | no_size | too_large)
    for reason, mask in (
        ("run_time_unknown", never_ran),
        ("size_unknown_or_zero", no_size),
        ("larger_than_machine", too_large),
    ):
        count = int(np.count_nonzero(mask))
        if count:
            dropped[reason] = count
    for reason, mask in (
        ("size_from_allocated", size_from_alloc),
        ("walltime_from_run_time", walltime_from_run),
        ("run_exceeds_walltime", run > walltime),
    ):
        count = int(np.count_nonzero(mask & keep))
        if count:
            changed[reason] = count

    all_kept = bool(keep.all())

    def kept(values: np.ndarray) -> np.ndarray:
        return values if all_kept else values[keep]

    n_jobs = int(np.count_nonzero(keep))
    # np.empty is safe only while every column is written below; a column added to
    # JOB_DTYPE later gets empty_jobs' default instead of garbage.
    jobs = (
        np.empty(n_jobs, dtype=JOB_DTYPE)
        if set(JOB_DTYPE.names or ()) <= _FILLED_COLUMNS
        else empty_jobs(n_jobs)
    )
    for name, j in _SWF_COLUMNS:
        jobs[name] = kept(rows.cols[j][good])
    jobs["run_s"] = kept(run)
    jobs["walltime_s"] = kept(walltime)
    jobs["n_tasks"] = kept(size)
    jobs["cores_per_task"] = 1
    # SWF field 10: requested memory in KB per processor (-1 unknown), kept as
    # MiB per task (rounded up); the simulator uses it only on a cluster that
    # declares memory, so a cores-only replay is unchanged.
    requested_kib = kept(rows.cols[10][good]).astype(np.int64)
    jobs["mem_mib_per_task"] = np.where(requested_kib > 0, -(-requested_kib // 1024), 0)
    jobs["gpus_per_task"] = 0

    submit = jobs["submit_s"]
    ids = jobs["job_id"]
    if submit.size > 1 and np.any((submit[1:] == submit[:-1]) & (ids[1:] < ids[:-1])):
        jobs = jobs[np.lexsort((ids, submit))]

    return Workload(
        name=_workload_name(path),
        jobs=jobs,
        machine=machine,
        unix_start_time=unix_start,
        header=header,
        dropped=dropped,
        changed=changed,
        skipped_lines=int(bad_rows.size),
    )


def _log_machine(
    header_procs: int | None,
    header_nodes: int | None,
    max_procs: int | None,
    size: np.ndarray,
    run: np.ndarray,
    changed: Counter[str],
    shown: str,
) -> Machine:
    """The machine the log describes: ``max_procs``, else the header, else the largest job."""
    if max_procs is not None:
        return Machine.from_procs(max_procs, header_nodes)
    if header_procs is not None:
        return Machine.from_procs(header_procs, header_nodes)
    if header_nodes is not None:
        return Machine.from_procs(header_nodes, header_nodes)
    candidates = size[(run >= 0) & (size > 0)]
    if candidates.size == 0:
        raise SWFError(
            f"{shown}: no MaxProcs or MaxNodes header and no job with a known size; "
            "pass max_procs to say how large the machine is",
            path=shown,
            reason="machine_size_unknown",
        )
    changed["machine_size_from_largest_job"] = 1
    return Machine.from_procs(int(candidates.max()), None)
