"""Read a site's slurm.conf as Slurm reads it: includes, comments, continuations, any case.

Why our own reader: the translation needs every setting with the file and
line it came from (an error, or a setting left untranslated, is reported
there), and Slurm's rules are few:

- ``#`` starts a comment to the end of the line (``\\#`` is a literal ``#``);
  a line ending in ``\\`` continues on the next one (the backslash and the line
  break are removed, nothing else); blank lines are skipped.
- A line is ``Key=Value``; keys are case-insensitive; a value is a word or a
  double-quoted string; a setting given twice keeps its last value.
- ``NodeName``, ``PartitionName``, ``NodeSet``, ``DownNodes`` and
  ``FrontendName`` lines are records: several ``Key=Value`` pairs on one line,
  kept in order (``NodeName=DEFAULT`` and ``PartitionName=DEFAULT`` set
  defaults for the lines after them; the reader of records applies them).
- ``Include FILE`` reads another file in place; a relative path is taken from
  the directory of the file that includes it; a glob pattern includes every
  file it matches, in name order; ``%c`` is replaced by the ClusterName set
  so far, in lower case. A pattern that matches nothing, a missing file or an
  include cycle is an error.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

from htcsim.slurm.errors import SlurmError

RECORD_KEYS = ("nodename", "partitionname", "nodeset", "downnodes", "frontendname")
"""Lines that hold a record of several Key=Value pairs rather than one setting."""

_PAIR = re.compile(r'\s*([A-Za-z0-9_.]+)\s*([-*+/]?)=\s*(?:"([^"]*)"|(\S+))(?=\s|$)')
_INCLUDE = re.compile(r"^include\s+(\S+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Setting:
    """One ``Key=Value`` line: the key as written, its value, and where it is."""

    key: str
    value: str
    path: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Record:
    """A NodeName/PartitionName/... line: its pairs in order (keys in lower case)."""

    kind: str  # the first key, lower case: "nodename", "partitionname", ...
    name: str  # its value: node names, a partition name, or DEFAULT
    params: dict[str, str]
    path: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class SlurmConf:
    """Everything a slurm.conf and its includes say, in reading order."""

    settings: dict[str, Setting] = field(default_factory=dict)  # by lower-case key, the last
    every_setting: list[Setting] = field(default_factory=list)  # each line, in reading order
    records: list[Record] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def get(self, key: str) -> Setting | None:
        return self.settings.get(key.lower())

    def of_kind(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.kind == kind]


def read_slurm_conf(path: str | Path) -> SlurmConf:
    """Read ``path`` and everything it includes."""
    conf = SlurmConf()
    _read_file(Path(path), conf, stack=())
    return conf


def _read_file(path: Path, conf: SlurmConf, stack: tuple[Path, ...]) -> None:
    shown = str(path)
    try:
        resolved = path.resolve()
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SlurmError(f"{shown}: cannot read it ({exc.strerror or exc})") from exc
    if resolved in stack:
        raise SlurmError(f"{shown}: included again from itself (an include cycle)")
    conf.files.append(shown)
    for number, line in _logical_lines(text):
        include = _INCLUDE.match(line)
        if include is not None:
            for target in _include_targets(include.group(1), path, conf, f"{shown}:{number}"):
                _read_file(target, conf, (*stack, resolved))
            continue
        pairs = _pairs(line, f"{shown}:{number}")
        kind = pairs[0][0].lower()
        if kind in RECORD_KEYS:
            params: dict[str, str] = {}
            for key, value in pairs:
                params[key.lower()] = value
            conf.records.append(Record(kind, pairs[0][1], params, shown, number))
            continue
        if len(pairs) > 1:
            raise SlurmError(
                f"{shown}:{number}: one setting per line, found {len(pairs)} "
                f"({', '.join(k for k, _ in pairs)})"
            )
        key, value = pairs[0]
        setting = Setting(key, value, shown, number)
        conf.settings[key.lower()] = setting
        conf.every_setting.append(setting)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of every non-blank line, comments removed and
    continuation lines joined."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).rstrip("\r")
        if not pending:
            start = number
        if line.endswith("\\"):  # joined as Slurm joins it: the backslash and newline removed
            pending += line[:-1]
            continue
        joined = (pending + line).strip()
        pending = ""
        if joined:
            out.append((start, joined))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def _strip_comment(line: str) -> str:
    out = []
    k = 0
    while k < len(line):
        ch = line[k]
        if ch == "\\" and k + 1 < len(line) and line[k + 1] == "#":
            out.append("#")
            k += 2
            continue
        if ch == "#":
            break
        out.append(ch)
        k += 1
    return "".join(out)


def _pairs(line: str, where: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(line):
        if line[pos:].strip() == "":
            break
        match = _PAIR.match(line, pos)
        if match is None:
            bad = line[pos:].strip().split()[0]
            what = "a Key=Value setting" if not pairs else f"a Key=Value pair after {pairs[-1][0]}"
            raise SlurmError(f"{where}: {bad!r} is not {what}")
        value = match.group(3) if match.group(3) is not None else match.group(4)
        pairs.append((match.group(1), value))
        pos = match.end()
    return pairs


def _include_targets(pattern: str, including: Path, conf: SlurmConf, where: str) -> list[Path]:
    if "%c" in pattern:
        cluster = conf.get("ClusterName")
        if cluster is None:
            raise SlurmError(f"{where}: include {pattern} uses %c before ClusterName is set")
        pattern = pattern.replace("%c", cluster.value.lower())
    target = Path(pattern)
    if not target.is_absolute():
        target = including.parent / target
    if glob.has_magic(str(target)):
        matches = sorted(Path(p) for p in glob.glob(str(target)))
        if not matches:
            raise SlurmError(f"{where}: include {pattern}: the pattern matches no file")
        return matches
    if not target.exists():
        raise SlurmError(f"{where}: include {pattern}: no such file ({target})")
    return [target]
