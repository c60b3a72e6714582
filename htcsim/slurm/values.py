"""Slurm's value grammars: durations, yes/no, TRES lists, host lists.

Why a module of its own: slurm.conf, sacctmgr's dump and its QOS listing spell
the same values the same way, and a value read one way must be written back
the same way for the round trip to hold. Every parser raises ``ValueError``
with a message that says what the text is not; the caller adds the file and
line.

Durations follow Slurm's time strings: ``MM``, ``MM:SS``, ``HH:MM:SS``,
``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``; ``INFINITE``/``UNLIMITED`` mean no
limit. The priority settings (PriorityMaxAge, PriorityDecayHalfLife,
PriorityCalcPeriod) are kept in whole minutes by Slurm, which rounds a part
of a minute up; so does :func:`to_minutes`.
"""

from __future__ import annotations

import math
import re

INFINITE = ("infinite", "unlimited")
_DURATION = re.compile(
    r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
    r"|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$"
)


def parse_duration(text: str) -> int | None:
    """Seconds of a Slurm time string; None for INFINITE or UNLIMITED."""
    value = text.strip()
    if value.lower() in INFINITE:
        return None
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(
            f"{text!r} is not a Slurm duration (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, "
            "D-HH:MM:SS or INFINITE)"
        )
    g = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    if "d" in g:
        return ((g["d"] * 24 + g["dh"]) * 60 + g.get("dm", 0)) * 60 + g.get("ds", 0)
    if "c" in g:  # HH:MM:SS
        return (g["a"] * 60 + g["b"]) * 60 + g["c"]
    if "b" in g:  # MM:SS
        return g["a"] * 60 + g["b"]
    return g["a"] * 60  # MM


def to_minutes(seconds: int) -> int:
    """Whole minutes, a part of a minute rounded up (as Slurm keeps these settings)."""
    return math.ceil(seconds / 60)


def format_dhm(seconds: int) -> str:
    """``D-HH:MM`` (Slurm's days-hours:minutes), a part of a minute rounded up."""
    minutes = to_minutes(seconds)
    days, rest = divmod(minutes, 24 * 60)
    return f"{days}-{rest // 60:02d}:{rest % 60:02d}"


def parse_yes_no(text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "y", "1", "true", "up"):
        return True
    if value in ("no", "n", "0", "false", "down"):
        return False
    raise ValueError(f"{text!r} is not YES or NO")


def parse_int(text: str, what: str = "a whole number") -> int:
    """A non-negative integer; ``-1`` (sacctmgr's "no limit") is returned as -1."""
    value = text.strip()
    if re.fullmatch(r"-1|\d+", value) is None:
        raise ValueError(f"{text!r} is not {what}")
    return int(value)


# ------------------------------------------------------------------------------ TRES

TRES_CPU = "cpu"
TRES_GPU = "gres/gpu"


def parse_tres(text: str) -> dict[str, int]:
    """``cpu=64,gres/gpu=4,mem=100G`` -> counts by TRES name (lower case). A GPU TRES of
    any type (``gres/gpu:a100=2``) adds to ``gres/gpu``; memory becomes MiB; -1 (no
    limit) stays -1."""
    out: dict[str, int] = {}
    if not text.strip():
        return out
    for item in text.split(","):
        name, sep, amount = item.strip().partition("=")
        if not sep or not name:
            raise ValueError(f"{item!r} is not NAME=COUNT (a TRES, as cpu=64 or gres/gpu=4)")
        key = name.strip().lower()
        if key.startswith("gres/gpu:"):
            key = TRES_GPU
        count = _tres_count(amount.strip(), key, item)
        if count == -1 or key not in out or out[key] == -1:
            out[key] = count
        else:
            out[key] += count
    return out


def _tres_count(amount: str, key: str, item: str) -> int:
    if amount == "-1":
        return -1
    match = re.fullmatch(r"(\d+)([KMGTP]?)", amount, re.IGNORECASE)
    if match is None:
        raise ValueError(f"{item!r}: {amount!r} is not a count")
    number, unit = int(match.group(1)), match.group(2).upper()
    if key == "mem":
        scale = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}[unit]
        return math.ceil(number * scale)
    if unit:
        raise ValueError(f"{item!r}: {key} takes a plain count, not {amount!r}")
    return number


def format_tres(counts: dict[str, int]) -> str:
    """``cpu=64,gres/gpu=4`` in a fixed order (cpu first), every value as given."""
    order = sorted(counts, key=lambda k: (k != TRES_CPU, k))
    return ",".join(f"{k}={counts[k]}" for k in order)


# ------------------------------------------------------------------------- host lists

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


def valid_node_prefix(name: str) -> bool:
    """Whether ``name`` can start Slurm node names: a host name (letters, digits, - _ .)
    that starts and ends with a letter, so that the node numbers after it read back."""
    return _NAME.match(name) is not None and name[-1].isalpha()


def hostlist(prefix: str, first: int, count: int) -> str:
    """``prefix[first-last]`` for ``count`` nodes (``prefix1`` for one)."""
    if count == 1:
        return f"{prefix}{first}"
    return f"{prefix}[{first}-{first + count - 1}]"


def expand_hostlist(text: str) -> list[str]:
    """Every host of a Slurm host list: ``n[01-03,7],gpu[1-2]x[a]`` -> names in order.

    Commas outside brackets separate expressions; inside brackets they separate
    ranges; a range keeps the zero padding of its first number; several bracket
    groups in one name multiply (``r[1-2]n[1-2]`` is four hosts)."""
    out: list[str] = []
    for expression in _split_top(text):
        names = [""]
        rest = expression
        while rest:
            open_at = rest.find("[")
            if open_at < 0:
                names = [n + rest for n in names]
                break
            close_at = rest.find("]", open_at)
            if close_at < 0:
                raise ValueError(f"{text!r}: an unclosed '[' in a host list")
            head, body, rest = rest[:open_at], rest[open_at + 1 : close_at], rest[close_at + 1 :]
            names = [n + head + item for n in names for item in _ranges(body, text)]
        out.extend(n for n in names if n)
    return out


def _split_top(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text.strip():
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in (p.strip() for p in parts) if p]


def _ranges(body: str, text: str) -> list[str]:
    items: list[str] = []
    for part in body.split(","):
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"{text!r}: [{body}] is not a list of numbers and ranges")
        width = len(low)
        if not sep:
            items.append(low)
            continue
        if int(high) < int(low):
            raise ValueError(f"{text!r}: the range {part} runs backwards")
        items.extend(f"{k:0{width}d}" for k in range(int(low), int(high) + 1))
    return items
