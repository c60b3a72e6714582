"""The scheduling policy: the one artifact that flows from tuning to production.

A ``Policy`` is frozen and validated on construction, so that an invalid
value is reported where it was written, never deep inside a replay.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Order = Literal["fcfs", "sjf", "priority"]
BackfillMode = Literal["none", "easy", "conservative"]
Placement = Literal["first_fit"]

ORDERS: tuple[str, ...] = ("fcfs", "sjf", "priority")
BACKFILL_MODES: tuple[str, ...] = ("none", "easy", "conservative")
PLACEMENTS: tuple[str, ...] = ("first_fit",)


class PolicyError(ValueError):
    """A policy value is out of range or unknown; the message names the key."""


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

    def __post_init__(self) -> None:
        _check_choice("order", self.order, ORDERS)
        _check_choice("backfill", self.backfill, BACKFILL_MODES)
        _check_choice("placement", self.placement, PLACEMENTS)
        if not isinstance(self.backfill_depth, int) or self.backfill_depth < 0:
            raise PolicyError(
                f"backfill_depth must be an integer >= 0, got {self.backfill_depth!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        """Short name for tables and plots, e.g. ``fcfs+easy``."""
        return f"{self.order}+{self.backfill}"


def _check_choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise PolicyError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")
