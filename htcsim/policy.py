"""The scheduling policy: the one artifact that flows from tuning to production.

A ``Policy`` is frozen and validated on construction, so that an invalid
value is reported where it was written, never deep inside a replay.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import tomli_w

Order = Literal["fcfs", "sjf", "priority"]
BackfillMode = Literal["none", "easy", "conservative"]
Placement = Literal["first_fit", "best_fit", "spread"]

ORDERS: tuple[str, ...] = ("fcfs", "sjf", "priority")
BACKFILL_MODES: tuple[str, ...] = ("none", "easy", "conservative")
PLACEMENTS: tuple[str, ...] = ("first_fit", "best_fit", "spread")


class PolicyError(ValueError):
    """A policy value is out of range or unknown; the message names the key."""

    def __init__(self, message: str, *, field: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Policy:
    """How the kernel orders the queue, backfills and places jobs.

    ``order``: queue order; ``fcfs`` by submit time, ``sjf`` by requested time,
    ``priority`` by a priority supplied per job (larger first). Ties always end
    on (submit time, job id).
    ``backfill``: ``none`` (strict order), ``easy`` (one reservation for the
    first job that does not fit) or ``conservative`` (a reservation for every
    queued job).
    ``backfill_depth``: how many queued jobs one pass examines (0: all), as
    Slurm's ``bf_max_job_test``; a named variant, off by default.
    """

    order: Order = "fcfs"
    backfill: BackfillMode = "easy"
    backfill_depth: int = 0
    placement: Placement = "first_fit"
    max_running_jobs_per_user: int = 0
    max_cores_per_user: int = 0

    def __post_init__(self) -> None:
        _check_choice("order", self.order, ORDERS)
        _check_choice("backfill", self.backfill, BACKFILL_MODES)
        _check_choice("placement", self.placement, PLACEMENTS)
        for name in ("max_running_jobs_per_user", "max_cores_per_user"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                _fail(name, f"must be an integer >= 0 (0: no limit), got {value!r}")
        if (
            not isinstance(self.backfill_depth, int)
            or isinstance(self.backfill_depth, bool)
            or self.backfill_depth < 0
        ):
            _fail("backfill_depth", f"must be an integer >= 0, got {self.backfill_depth!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        """Short name for tables and plots, e.g. ``fcfs+easy``."""
        return f"{self.order}+{self.backfill}"


def _check_choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(key, f"must be one of {', '.join(allowed)}; got {value!r}")


def _fail(field: str, reason: str) -> None:
    raise PolicyError(f"{field} {reason}", field=field, reason=reason)


# ----------------------------------------------------------------- TOML file
#
# The file groups the fields by what they govern; each TOML key maps to one
# Policy field. Unknown sections or keys are errors (a typo must not silently
# fall back to a default).
TOML_KEYS: dict[str, dict[str, str]] = {
    "queue": {"order": "order"},
    "backfill": {"mode": "backfill", "depth": "backfill_depth"},
    "placement": {"strategy": "placement"},
    "limits": {
        "running_jobs_per_user": "max_running_jobs_per_user",
        "cores_per_user": "max_cores_per_user",
    },
}

_TOML_KEY_OF_FIELD = {
    field: f"{section}.{key}" for section, keys in TOML_KEYS.items() for key, field in keys.items()
}

DEFAULT_POLICY_TOML = """\
# htcsim scheduling policy. The simulator (htcsim simulate --policy FILE) and,
# later, the live agent read this same file.

[queue]
# Order of the pending queue: "fcfs" (submit time), "sjf" (requested time),
# "priority" (a priority per job). Ties break on submit time, then job id.
order = "fcfs"

[backfill]
# "none" (strict order), "easy" (one reservation, for the first job that does
# not fit) or "conservative" (a reservation for every queued job).
mode = "easy"
# Queued jobs examined per pass; 0 examines them all (Slurm: bf_max_job_test).
depth = 0

[limits]
# Per user: running jobs and cores held at once (0: no limit). A job that
# would exceed its user's limit waits with reason UserLimit; it is never the
# job others wait behind, and never gets a reservation.
running_jobs_per_user = 0
cores_per_user = 0

[placement]
# How tasks are put on nodes: "first_fit" (nodes in order), "best_fit" (pack:
# the node left with the fewest free cores) or "spread" (balance: the node with
# the most free cores).
strategy = "first_fit"
"""


def policy_from_mapping(data: dict[str, Any], source: str = "policy") -> Policy:
    """A Policy from parsed TOML, naming ``source`` and the key in every error."""
    fields: dict[str, Any] = {}
    for section, values in data.items():
        if section not in TOML_KEYS:
            known = ", ".join(f"[{name}]" for name in TOML_KEYS)
            raise PolicyError(f"{source}: unknown section [{section}] (known: {known})")
        if not isinstance(values, dict):
            raise PolicyError(f"{source}: {section} must be a [{section}] table")
        for key, value in values.items():
            if key not in TOML_KEYS[section]:
                known = ", ".join(TOML_KEYS[section])
                raise PolicyError(f"{source}: unknown key {section}.{key} (known: {known})")
            fields[TOML_KEYS[section][key]] = value
    try:
        return Policy(**fields)
    except PolicyError as exc:
        key = _TOML_KEY_OF_FIELD.get(exc.field or "", exc.field)
        raise PolicyError(
            f"{source}: {key} {exc.reason}", field=exc.field, reason=exc.reason
        ) from exc


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from exc
    return policy_from_mapping(data, str(path))


def policy_to_toml(policy: Policy) -> str:
    """The TOML text of a policy (every field, grouped as in the file format)."""
    values = policy.to_dict()
    data = {
        section: {key: values[field] for key, field in keys.items()}
        for section, keys in TOML_KEYS.items()
    }
    return tomli_w.dumps(data)


def save_policy(policy: Policy, path: str | Path) -> None:
    Path(path).write_text(policy_to_toml(policy), encoding="utf-8")
