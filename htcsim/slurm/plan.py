"""The export's plan: the settings to write, the accounting to set, one row per policy key.

The translation modules (``map_order``, ``map_limits``, ``map_nodes``) fill a
:class:`Plan`; the writers render it (``conf_write``, ``sacctmgr_write``,
``mapping``). A :class:`Row` is ``exact`` when Slurm does what the simulator
does with that value, ``approximate`` when it does something close (its note
says how it differs), ``impossible`` when nothing in Slurm expresses it (the
note says why; the export writes the nearest setting, or nothing, and
warns). ``round_trips`` says whether ``htcsim import slurm-conf`` reads the
same value back from what was written: every exact row does, some
approximate ones too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from htcsim.policy import TOML_KEYS, Policy
from htcsim.slurm.names import Names

Status = Literal["exact", "approximate", "impossible"]

LIMITS_QOS = "htcsim_limits"
"""The partition QOS that carries the policy's per-user and per-group limits."""
MAX_BF_JOB_TEST = 1_000_000
"""Slurm's largest bf_max_job_test: what a depth of 0 (every job) is written as."""
UINT32_MAX = 4_294_967_295


@dataclass(frozen=True)
class Row:
    """One policy key: its value, what it became, and how faithfully."""

    key: str
    value: str
    slurm: str
    status: Status
    note: str = ""
    round_trips: bool = True


@dataclass(frozen=True)
class QosSpec:
    """A QOS the script creates and sets: its settings in order."""

    name: str
    settings: tuple[tuple[str, str], ...]
    comment: str = ""
    partition: bool = False  # the partition QOS of every partition (the limits)


@dataclass
class Plan:
    """Everything the export writes, and the table that explains it."""

    settings: list[tuple[str, str, str]] = field(default_factory=list)  # (section, key, value)
    accounts: list[tuple[str, int]] = field(default_factory=list)
    users: list[tuple[str, int]] = field(default_factory=list)
    qos: list[QosSpec] = field(default_factory=list)
    partition_options: list[tuple[str, str]] = field(default_factory=list)  # every partition
    rows: list[Row] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)  # settings written without a policy key

    @property
    def impossible(self) -> list[Row]:
        return [row for row in self.rows if row.status == "impossible"]

    def add(self, section: str, key: str, value: object) -> None:
        self.settings.append((section, key, str(value)))


def key_values(policy: Policy) -> dict[str, Any]:
    """Every policy key (``section.key``, ``qos.NAME.field``) with its value, as the TOML
    file holds it: what a round trip compares."""
    values = policy.to_dict()
    out: dict[str, Any] = {}
    for section, keys in TOML_KEYS.items():
        for key, name in keys.items():
            out[f"{section}.{key}"] = values[name]
    for entry in values["qos"]:
        for name, value in entry.items():
            if name != "name":
                out[f"qos.{entry['name']}.{name}"] = value
    return out


def text(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {text(v)}' for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(text(v) for v in value) + "]"
    return str(value)


def uint32(value: float) -> tuple[int, bool]:
    """An unsigned 32-bit integer for ``value``, and whether it is ``value`` exactly."""
    number = min(max(int(value + 0.5), 0), UINT32_MAX)
    return number, float(number) == float(value)


def minutes_note(seconds: int, what: str) -> str:
    return "" if seconds % 60 == 0 else f"{what} is kept in whole minutes: {seconds} s rounded up"


def slurm_name(names: Names, kind: str, key: str) -> tuple[str, str]:
    """The Slurm name of a workload name, and a note when the database's lower case
    changes it."""
    name = names.to_slurm(kind, key)
    if name != name.lower():
        return name.lower(), f"Slurm's database keeps names in lower case: {name} is {name.lower()}"
    return name, ""
