"""Durations and memory sizes as people write them: "1h30m", "2-00:00:00", "8G".

One parser per quantity for every place that reads one (command-line flags,
pipeline files, ``htcsim submit``, usage reports), so "8G" and "1h" mean the
same everywhere. Pure Python: the agent's client imports it and must start in
milliseconds.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration", "parse_duration_s", "parse_mem_mib"]

_DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(min|[smhdw])?", re.IGNORECASE)
_MEM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_MIB_PER_UNIT = {"k": 1 / 1024, "": 1.0, "m": 1.0, "g": 1024.0, "t": 1024.0**2}
_SLURM_TIME = re.compile(
    r"(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?)"  # D-H[:M[:S]]
    r"|(?:(?P<h>\d+):(?P<m>\d+):(?P<s>\d+))"  # H:M:S
    r"|(?:(?P<mm>\d+):(?P<ss>\d+))"  # M:S
)


def parse_duration(text: str) -> float:
    """Seconds from "2h", "30m", "90s", "1.5d", "1h30m" or a bare number of seconds.

    Policy files give times in seconds; command-line flags take this form,
    because people write hours.
    """
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned:
        raise ValueError("empty duration; give e.g. 2h, 30m, 90s or 1h30m")
    total = 0.0
    at = 0
    while at < len(cleaned):
        match = _DURATION_PART.match(cleaned, at)
        if match is None or match.end() == at:
            raise ValueError(
                f"cannot read {text!r} as a duration; give e.g. 2h, 30m, 90s, 1.5d or 1h30m"
            )
        unit = match.group(2) or "s"
        total += float(match.group(1)) * _DURATION_UNITS[unit]
        at = match.end()
    return total


def parse_mem_mib(text: str | int) -> int:
    """MiB from "512M", "8G", "1.5G", "100K", "1T" or a bare number of MiB ("2048").

    Units are binary (G = 1024 M) as in Slurm's --mem; a fraction of a MiB is
    rounded up so a request is never smaller than what was written. One parser
    for every place a memory size is read, so "8G" means the same everywhere.
    """
    if isinstance(text, bool):
        raise ValueError(f"cannot read {text!r} as a memory size; give e.g. 512M, 8G or 2048")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"memory size {text} is negative")
        return text
    match = _MEM.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(
            f"cannot read {text!r} as a memory size; give e.g. 512M, 8G, 1.5G or 2048 (MiB)"
        )
    return math.ceil(float(match.group(1)) * _MIB_PER_UNIT[match.group(2).lower()])


def parse_duration_s(text: str | int) -> int:
    """Whole seconds from "90", "30m", "1h", "1d", "1h30m", "1:30:00" or "2-00:00:00".

    The unit forms are htcsim's one duration syntax (:func:`parse_duration`,
    what the command-line flags take: a bare number is seconds); the colon forms
    are Slurm's (M:S, H:M:S, D-H, D-H:M, D-H:M:S), because people copy their
    ``--time`` from batch scripts. Fractions of a second are rounded up, so a
    limit is never shorter than written.
    """
    if isinstance(text, bool):
        raise ValueError(f"cannot read {text!r} as a duration; give e.g. 90, 30m, 1h or 1:30:00")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"duration {text} is negative")
        return text
    cleaned = str(text).strip()
    slurm = _SLURM_TIME.fullmatch(cleaned)
    if slurm is not None:
        g = {k: int(v) for k, v in slurm.groupdict().items() if v is not None}
        if "days" in g:
            return g["days"] * 86_400 + g["dh"] * 3_600 + g.get("dm", 0) * 60 + g.get("ds", 0)
        if "h" in g:
            return g["h"] * 3_600 + g["m"] * 60 + g["s"]
        return g["mm"] * 60 + g["ss"]
    try:
        seconds = parse_duration(cleaned)
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a duration; give e.g. 90 (seconds), 30m, 1h, 1d, "
            "1:30:00 or 2-00:00:00"
        ) from None
    return math.ceil(seconds)
