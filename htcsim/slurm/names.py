"""Workload ids and Slurm names: the tables ``htcsim import sacct --names`` writes.

A policy names users, groups and queues as the workload does: a log imported
from sacct numbers them 1..N in name order, and the policy tuned on it says
``"17"``. Slurm knows ``alice``. The name tables bridge the two: the export
writes the Slurm names of the ids (an id without a name stays as it is), the
import turns Slurm names back into the workload's ids (a name the tables do
not hold stays a name). Without tables, names pass through unchanged.

Groups: a policy's groups become Slurm accounts (fairshare is per account).
A workload imported from sacct groups jobs by their Unix group, so its group
names are Unix group names; the export uses them as account names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from htcsim.slurm.errors import SlurmError

KINDS = ("users", "groups", "partitions", "qos")


@dataclass(frozen=True)
class Names:
    """id (as text) -> Slurm name, for each kind; empty tables change nothing."""

    tables: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_slurm(self, kind: str, key: str) -> str:
        return self.tables.get(kind, {}).get(key, key)

    def from_slurm(self, kind: str, name: str) -> str:
        for key, value in self.tables.get(kind, {}).items():
            if value == name:
                return key
        return name

    def known(self, kind: str, name: str) -> bool:
        return name in self.tables.get(kind, {}).values()

    def ids(self, kind: str, name: str) -> list[int]:
        """Workload ids that carry ``name`` (a QOS or partition name -> its numbers)."""
        return sorted(int(k) for k, v in self.tables.get(kind, {}).items() if v == name)

    def __bool__(self) -> bool:
        return any(self.tables.values())


def load_names(path: str | Path) -> Names:
    """The JSON of ``htcsim import sacct --names``; other keys (job ids) are ignored."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SlurmError(f"{path}: cannot read the name tables ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise SlurmError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise SlurmError(f"{path}: expected an object of name tables ({', '.join(KINDS)})")
    tables: dict[str, dict[str, str]] = {}
    for kind in KINDS:
        table = data.get(kind, {})
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and k.lstrip("-").isdigit() and isinstance(v, str)
            for k, v in table.items()
        ):
            raise SlurmError(f"{path}: {kind} must map workload ids to names")
        tables[kind] = dict(table)
    return Names(tables)
