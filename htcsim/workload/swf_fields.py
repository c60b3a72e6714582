"""The 18 fields of an SWF data line and the rules each must meet.

A data line is 18 numbers; the whole-number fields must fit the ``JOB_DTYPE``
column they land in, submit times must be >= 0 and in non-decreasing order. The
check runs over columns (NumPy, one pass per field, no loop per line) once the
reader in ``htcsim.workload.swf`` has parsed them, and each broken line gets a
reason code, the field it concerns and a sentence naming what is wrong, so that
a malformed log is reported by line and field, or its bad lines counted by
reason when they are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

N_FIELDS = 18

SWF_FIELDS: tuple[str, ...] = (
    "job number",
    "submit time",
    "wait time",
    "run time",
    "allocated processors",
    "average CPU time",
    "used memory",
    "requested processors",
    "requested time",
    "requested memory",
    "status",
    "user id",
    "group id",
    "executable id",
    "queue",
    "partition",
    "preceding job",
    "think time",
)
"""Names of the 18 SWF fields, index 0 = field 1, used to make error messages readable."""

_FLOAT_FIELDS = frozenset({6, 7})
"""1-based fields that may hold decimals (average CPU time, used memory); the rest are
whole numbers by the SWF definition."""

_I8 = (-(2**7), 2**7 - 1)
_I32 = (-(2**31), 2**31 - 1)
_I53 = (-(2**53), 2**53)  # int64 columns: keep to integers a float64 holds exactly
_INT_RANGE: dict[int, tuple[int, int]] = {
    1: _I53,
    2: _I53,
    3: _I53,
    4: _I53,
    5: _I32,
    8: _I32,
    9: _I53,
    10: _I53,
    11: _I8,
    12: _I32,
    13: _I32,
    14: _I32,
    15: _I32,
    16: _I32,
    17: _I53,
    18: _I53,
}
"""Range each whole-number field must fit, from the JOB_DTYPE column it lands in (field 10
is not stored yet; it gets the int64-safe range)."""

# Reason codes of a bad line, in the order they are checked.
_OK = 0
_FIELD_COUNT = 1
_NOT_NUMERIC = 2
_NOT_INTEGRAL = 3
_OUT_OF_RANGE = 4
_NEGATIVE_SUBMIT = 5
_UNSORTED_SUBMIT = 6
_REASONS = {
    _FIELD_COUNT: "field_count",
    _NOT_NUMERIC: "not_numeric",
    _NOT_INTEGRAL: "not_integral",
    _OUT_OF_RANGE: "out_of_range",
    _NEGATIVE_SUBMIT: "negative_submit",
    _UNSORTED_SUBMIT: "unsorted_submit",
}

_WS_SPLIT = re.compile(rb"[ \t\r\v\f]+")
_NUMBER_PATTERN = rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = re.compile(_NUMBER_PATTERN)
_DATA_LINE = re.compile(  # 18 numbers separated by blanks (the line already stripped)
    rb"(?:" + _NUMBER_PATTERN + rb")(?:[ \t\r\v\f]+(?:" + _NUMBER_PATTERN + rb")){17}"
)


@dataclass
class _Rows:
    """Data lines as columns, with what the line scan already found wrong."""

    cols: dict[int, np.ndarray]
    line_no: np.ndarray  # 1-based line number in the file of each data line
    code: np.ndarray  # reason code per data line (0 = fine so far)
    field: np.ndarray  # 1-based field the reason refers to
    messages: dict[int, str]  # row index -> message, for problems found while scanning


def _bad_line_detail(text: bytes) -> tuple[int, int, str]:
    """Reason code, field and message for a data line that is not 18 numbers."""
    tokens = _WS_SPLIT.split(text)
    if len(tokens) != N_FIELDS:
        if len(tokens) < N_FIELDS:
            bad = len(tokens) + 1
            what = f"missing: the line has {len(tokens)} fields, SWF has {N_FIELDS}"
        else:
            bad = N_FIELDS + 1
            what = f"unexpected: the line has {len(tokens)} fields, SWF has {N_FIELDS}"
        name = f" ({SWF_FIELDS[bad - 1]})" if bad <= N_FIELDS else ""
        return _FIELD_COUNT, bad, f"field {bad}{name}: {what}"
    for j, token in enumerate(tokens, start=1):
        if not _NUMBER.fullmatch(token):
            shown = token.decode("latin-1")
            return _NOT_NUMERIC, j, f"field {j} ({SWF_FIELDS[j - 1]}): {shown!r} is not a number"
    raise AssertionError("a line of 18 numbers was taken for a bad one")  # pragma: no cover


def _fmt_number(value: float | int) -> str:
    """A value as it would appear in the file: ``12`` rather than ``12.0``."""
    number = float(value)
    if np.isfinite(number) and number == int(number):
        return str(int(number))
    return repr(number)


def _validate(rows: _Rows) -> None:
    """Mark lines whose numbers break the SWF rules; vectorised, one pass per field.

    A line gets the first problem in field order; submit order is checked last, over
    the lines that are otherwise fine, against the running maximum of earlier submits.
    """
    code = rows.code
    field = rows.field
    for j in range(1, N_FIELDS + 1):
        col = rows.cols[j]
        is_float = col.dtype.kind == "f"
        if is_float:
            bad = (code == _OK) & ~np.isfinite(col)
            code[bad] = _NOT_NUMERIC
            field[bad] = j
        if j in _FLOAT_FIELDS:
            continue
        if is_float:
            with np.errstate(invalid="ignore"):
                bad = (code == _OK) & (col != np.floor(col))
            code[bad] = _NOT_INTEGRAL
            field[bad] = j
        lo, hi = _INT_RANGE[j]
        bad = (code == _OK) & ((col < lo) | (col > hi))
        code[bad] = _OUT_OF_RANGE
        field[bad] = j
        if j == 2:
            bad = (code == _OK) & (col < 0)
            code[bad] = _NEGATIVE_SUBMIT
            field[bad] = j
    ok_idx = np.flatnonzero(code == _OK)
    if ok_idx.size > 1:
        submits = rows.cols[2][ok_idx]
        running_max = np.maximum.accumulate(submits)
        late = ok_idx[1:][submits[1:] < running_max[:-1]]
        code[late] = _UNSORTED_SUBMIT
        field[late] = 2


def _row_message(rows: _Rows, i: int) -> str:
    """The ``field N (name): ...`` part of the message for bad row ``i``."""
    if i in rows.messages:
        return rows.messages[i]
    code = int(rows.code[i])
    j = int(rows.field[i])
    value = rows.cols[j][i]
    where = f"field {j} ({SWF_FIELDS[j - 1]}): "
    if code == _NOT_NUMERIC:
        return where + f"{_fmt_number(value)} is not a finite number"
    if code == _NOT_INTEGRAL:
        return where + f"{_fmt_number(value)} is not a whole number, which this field must be"
    if code == _OUT_OF_RANGE:
        lo, hi = _INT_RANGE[j]
        return where + f"{_fmt_number(value)} is outside the range this field can hold ({lo}..{hi})"
    if code == _NEGATIVE_SUBMIT:
        return where + (
            f"{_fmt_number(value)} is negative; submit times count seconds from the log's "
            "start and must be >= 0"
        )
    if code == _UNSORTED_SUBMIT:
        earlier = np.flatnonzero(rows.code[:i] == _OK)
        submits = rows.cols[2][earlier]
        k = int(earlier[int(np.argmax(submits))])
        return where + (
            f"{_fmt_number(value)} is earlier than {_fmt_number(rows.cols[2][k])} on line "
            f"{int(rows.line_no[k])}; SWF lists jobs in non-decreasing submit order"
        )
    return where + _REASONS.get(code, "bad line")
