"""The scheduling policy: the one artifact that flows from tuning to production.

A ``Policy`` is frozen and validated on construction, so that an invalid
value is reported where it was written, never deep inside a replay. Users,
groups and queues are named as the workload names them (SWF: the numbers of
fields 12, 13 and 15, written as TOML keys such as ``"17"``). The module also
says which fields cannot change a schedule under the others (``INERT_RULES``).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import tomli_w

Order = Literal["fcfs", "sjf", "priority", "multifactor"]
BackfillMode = Literal["none", "easy", "conservative"]
Placement = Literal["first_fit", "best_fit", "spread", "cons_tres"]
FairshareAlgorithm = Literal["classic", "fair_tree"]
Favor = Literal["small", "large"]
FailureAction = Literal["requeue", "fail"]

ORDERS: tuple[str, ...] = ("fcfs", "sjf", "priority", "multifactor")
BACKFILL_MODES: tuple[str, ...] = ("none", "easy", "conservative")
PLACEMENTS: tuple[str, ...] = ("first_fit", "best_fit", "spread", "cons_tres")
FAIRSHARE_ALGORITHMS: tuple[str, ...] = ("classic", "fair_tree")
FAVORS: tuple[str, ...] = ("small", "large")
FAILURE_ACTIONS: tuple[str, ...] = ("requeue", "fail")
LIMIT_NAMES: tuple[str, ...] = ("running_jobs", "cores", "gpus", "queued_jobs")
"""What a limit caps, in the kernel's column order."""

Shares = tuple[tuple[str, float], ...]
"""(name, value) pairs: a mapping kept hashable inside the frozen Policy."""


class PolicyError(ValueError):
    """A policy value is out of range or unknown; the message names the key."""

    def __init__(self, message: str, *, field: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class QoS:
    """A quality of service: a priority factor and caps shared by all its jobs.

    ``queues`` lists the workload's queue numbers (SWF field 15) that map to
    it; a job of no listed queue has no QoS (factor 0, no QoS caps).
    """

    name: str
    priority: float = 0.0
    queues: tuple[int, ...] = ()
    running_jobs: int = 0
    cores: int = 0
    gpus: int = 0
    queued_jobs: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "queues", tuple(self.queues))
        where = f"qos {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            _fail("qos.name", "must be a non-empty string")
        if not _is_number(self.priority) or self.priority < 0:
            _fail(f"{where} priority", f"must be a number >= 0, got {self.priority!r}")
        for queue in self.queues:
            if not isinstance(queue, int) or isinstance(queue, bool):
                _fail(f"{where} queues", f"must be integers, got {queue!r}")
        for name in LIMIT_NAMES:
            _check_count(f"{where} {name}", getattr(self, name))

    @property
    def limits(self) -> tuple[int, int, int, int]:
        return (self.running_jobs, self.cores, self.gpus, self.queued_jobs)


@dataclass(frozen=True)
class Policy:
    """How the kernel orders the queue, backfills, limits and places jobs.

    ``order``: ``fcfs`` by submit time, ``sjf`` by requested time, ``priority``
    by a priority supplied per job, ``multifactor`` by the weighted factors
    below (as Slurm's priority/multifactor), recomputed every
    ``priority_interval_s``. Ties always end on (submit time, job id).
    ``backfill``: ``none``, ``easy`` (one reservation, for the first job that
    does not fit) or ``conservative`` (a reservation for every queued job);
    ``backfill_depth`` caps the jobs one pass examines (0: all).
    ``starvation_limit_s``: a job pending longer goes to the front of the
    queue and gets a reservation even under EASY (0: off).
    Limits (0: none) hold a job back with UserLimit/GroupLimit/QOSLimit.
    ``autoscale``: the kernel boots and powers off nodes between a min and a
    max per node type (``autoscale_node_min``/``_max`` by type name, else
    ``autoscale_min_nodes``/``_max_nodes``; a max of 0 is the type's count).
    ``on_node_failure``: a job whose node fails is requeued (at most
    ``max_retries`` times, 0: no limit) or ends failed.
    ``slurm_*`` (``[slurm_compat]``): the replay times its passes as Slurm
    does: a pass ``slurm_reaction_s`` after the event that calls for it,
    backfill only at multiples of ``slurm_backfill_interval_s``, time limits
    rounded up to whole minutes, and (``slurm_priority_phase_s`` >= 0) the
    multifactor priorities recomputed on Slurm's clock: at the first pass at or
    after each ``phase + k * priority_interval_s`` (slurmctld recomputes every
    PriorityCalcPeriod counted from its start; the phase is that start on the
    replay's clock, modulo the interval), not ``priority_interval_s`` after the
    last recomputation (-1, the default). The live agent ignores them: they
    model Slurm's delays, which a scheduler has no reason to copy.
    """

    order: Order = "fcfs"
    backfill: BackfillMode = "easy"
    backfill_depth: int = 0
    starvation_limit_s: int = 0
    placement: Placement = "first_fit"
    # multifactor priority
    priority_weight_age: float = 1000.0
    priority_weight_size: float = 0.0
    priority_weight_fairshare: float = 0.0
    priority_weight_qos: float = 0.0
    priority_max_age_s: int = 7 * 86400
    priority_favor: Favor = "small"
    priority_interval_s: int = 300
    nice: Shares = ()
    # fairshare
    fairshare_algorithm: FairshareAlgorithm = "classic"
    fairshare_half_life_s: int = 7 * 86400
    user_shares: Shares = ()
    group_shares: Shares = ()
    qos: tuple[QoS, ...] = ()
    # limits per user and per group
    max_running_jobs_per_user: int = 0
    max_cores_per_user: int = 0
    max_gpus_per_user: int = 0
    max_queued_jobs_per_user: int = 0
    max_running_jobs_per_group: int = 0
    max_cores_per_group: int = 0
    max_gpus_per_group: int = 0
    max_queued_jobs_per_group: int = 0
    # autoscaling
    autoscale: bool = False
    autoscale_min_nodes: int = 0
    autoscale_max_nodes: int = 0
    autoscale_node_min: Shares = ()
    autoscale_node_max: Shares = ()
    autoscale_wait_s: int = 600
    autoscale_boot_delay_s: int = 300
    autoscale_idle_s: int = 1800
    autoscale_cooldown_s: int = 300
    autoscale_step: int = 16
    autoscale_interval_s: int = 0
    # node failures
    on_node_failure: FailureAction = "requeue"
    max_retries: int = 0
    # Slurm compatibility profile (the simulator only; see slurm_compat_on)
    slurm_reaction_s: int = 0
    slurm_backfill_interval_s: int = 0
    slurm_whole_minute_limits: bool = False
    slurm_priority_phase_s: int = -1

    def __post_init__(self) -> None:
        _check_choice("order", self.order, ORDERS)
        _check_choice("backfill", self.backfill, BACKFILL_MODES)
        _check_choice("placement", self.placement, PLACEMENTS)
        _check_choice("fairshare_algorithm", self.fairshare_algorithm, FAIRSHARE_ALGORITHMS)
        _check_choice("priority_favor", self.priority_favor, FAVORS)
        _check_choice("on_node_failure", self.on_node_failure, FAILURE_ACTIONS)
        for name in ("autoscale", "slurm_whole_minute_limits"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, f"must be true or false, got {getattr(self, name)!r}")
        step = self.autoscale_step
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            _fail("autoscale_step", f"must be an integer >= 1, got {self.autoscale_step!r}")
        for name in (
            "max_retries",
            "autoscale_min_nodes",
            "autoscale_max_nodes",
            "autoscale_wait_s",
            "autoscale_boot_delay_s",
            "autoscale_idle_s",
            "autoscale_cooldown_s",
            "autoscale_interval_s",
            "backfill_depth",
            "starvation_limit_s",
            "fairshare_half_life_s",
            "slurm_reaction_s",
            "slurm_backfill_interval_s",
            *(f"max_{what}_per_{who}" for who in ("user", "group") for what in LIMIT_NAMES),
        ):
            _check_count(name, getattr(self, name))
        for name in ("priority_max_age_s", "priority_interval_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                _fail(name, f"must be an integer >= 1, got {value!r}")
        phase = self.slurm_priority_phase_s
        if (
            not isinstance(phase, int)
            or isinstance(phase, bool)
            or not -1 <= phase < self.priority_interval_s
        ):
            _fail(
                "slurm_priority_phase_s",
                f"must be -1 (off) or an integer from 0 to priority interval_s - 1 "
                f"({self.priority_interval_s - 1}), got {phase!r}",
            )
        for name in (
            "priority_weight_age",
            "priority_weight_size",
            "priority_weight_fairshare",
            "priority_weight_qos",
        ):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                _fail(name, f"must be a number >= 0, got {value!r}")
        for name, positive in (("nice", False), ("user_shares", True), ("group_shares", True)):
            object.__setattr__(self, name, _pairs(name, getattr(self, name), positive))
        for name in ("autoscale_node_min", "autoscale_node_max"):
            pairs = _pairs(name, getattr(self, name), False)
            for key, value in pairs:
                if value < 0 or value != int(value):
                    _fail(name, f"value of {key!r} must be an integer >= 0, got {value!r}")
            object.__setattr__(self, name, pairs)
        if self.autoscale_max_nodes and self.autoscale_min_nodes > self.autoscale_max_nodes:
            _fail("autoscale_min_nodes", "must not exceed autoscale_max_nodes")
        qos = tuple(self.qos)
        object.__setattr__(self, "qos", qos)
        seen: dict[int, str] = {}
        for entry in qos:
            if not isinstance(entry, QoS):
                _fail("qos", f"entries must be QoS, got {entry!r}")
            for queue in entry.queues:
                if queue in seen:
                    _fail("qos", f"queue {queue} maps to both {seen[queue]!r} and {entry.name!r}")
                seen[queue] = entry.name
        if len({entry.name for entry in qos}) != len(qos):
            _fail("qos", "names must be unique")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: mappings as dicts, QoS as a list of dicts."""
        values = asdict(self)
        for name in (*_MAPPING_FIELDS,):
            values[name] = dict(values[name])
        values["qos"] = [{**asdict(q), "queues": list(q.queues)} for q in self.qos]
        return values

    @property
    def slurm_compat_on(self) -> bool:
        """Whether any setting of the Slurm compatibility profile is on."""
        return bool(
            self.slurm_reaction_s
            or self.slurm_backfill_interval_s
            or self.slurm_whole_minute_limits
            or self.slurm_priority_phase_s >= 0
        )

    @property
    def label(self) -> str:
        """Short name for tables and plots, e.g. ``fcfs+easy``."""
        return f"{self.order}+{self.backfill}"

    def autoscale_bounds(self, type_name: str, count: int) -> tuple[int, int]:
        """(min, max) nodes of one node type when autoscaling; ``count`` is the
        type's node count in the cluster (the max when none is given)."""
        low = dict(self.autoscale_node_min).get(type_name, self.autoscale_min_nodes)
        high = dict(self.autoscale_node_max).get(type_name, self.autoscale_max_nodes) or count
        if low > high:
            raise PolicyError(
                f"autoscale: node type {type_name!r} has min {int(low)} above max {int(high)}",
                field="autoscale_node_min",
                reason=f"node type {type_name!r}: min above max",
            )
        return int(low), int(high)

    def limits_of(self, who: str) -> tuple[int, int, int, int]:
        """The caps of every user or group, in the kernel's column order."""
        return tuple(getattr(self, f"max_{what}_per_{who}") for what in LIMIT_NAMES)  # type: ignore[return-value]


# ------------------------------------------------- which fields can matter
#
# Some fields only matter under others: the autoscaler's settings with
# autoscaling on, the multifactor weights under the multifactor order, the
# fairshare settings with a fairshare weight. The rules below are the one
# place that says so (the kernel's passes are what they describe; tests hold
# each rule to the simulator by replaying a policy and its effective form).
# Tuning reads them to warn of a searched field that cannot change anything
# and to replay two policies that differ only in such fields once.

_AUTOSCALE_SETTINGS = (
    "autoscale_min_nodes",
    "autoscale_max_nodes",
    "autoscale_node_min",
    "autoscale_node_max",
    "autoscale_wait_s",
    "autoscale_boot_delay_s",
    "autoscale_idle_s",
    "autoscale_cooldown_s",
    "autoscale_step",
    "autoscale_interval_s",
)
_FAIRSHARE_SETTINGS = (
    "fairshare_algorithm",
    "fairshare_half_life_s",
    "user_shares",
    "group_shares",
)
_MULTIFACTOR_SETTINGS = (
    "priority_weight_age",
    "priority_weight_size",
    "priority_weight_fairshare",
    "priority_weight_qos",
    "priority_max_age_s",
    "priority_favor",
    "priority_interval_s",
    "nice",
    "slurm_priority_phase_s",
    *_FAIRSHARE_SETTINGS,
)


@dataclass(frozen=True)
class InertRule:
    """``fields`` cannot change a schedule when ``applies(policy)``, whatever
    their values: ``because`` says why, ``given`` names the fields it reads."""

    fields: tuple[str, ...]
    given: tuple[str, ...]
    applies: Callable[[Policy], bool]
    because: str


INERT_RULES: tuple[InertRule, ...] = (
    InertRule(_AUTOSCALE_SETTINGS, ("autoscale",), lambda p: not p.autoscale, "autoscaling is off"),
    InertRule(
        _MULTIFACTOR_SETTINGS,
        ("order",),
        lambda p: p.order != "multifactor",
        "the queue order is not multifactor",
    ),
    InertRule(
        _FAIRSHARE_SETTINGS,
        ("priority_weight_fairshare",),
        lambda p: p.priority_weight_fairshare == 0,
        "the fairshare weight is 0",
    ),
    InertRule(
        ("priority_max_age_s",),
        ("priority_weight_age",),
        lambda p: p.priority_weight_age == 0,
        "the age weight is 0",
    ),
    InertRule(
        ("priority_favor",),
        ("priority_weight_size",),
        lambda p: p.priority_weight_size == 0,
        "the size weight is 0",
    ),
    InertRule(("priority_weight_qos",), ("qos",), lambda p: not p.qos, "no QoS is defined"),
    InertRule(
        ("backfill_depth", "slurm_backfill_interval_s"),
        ("backfill",),
        lambda p: p.backfill == "none",
        "backfill is off",
    ),
    InertRule(
        ("max_retries",),
        ("on_node_failure",),
        lambda p: p.on_node_failure == "fail",
        "a job whose node fails is not requeued",
    ),
)
NODE_FAILURE_SETTINGS = ("on_node_failure", "max_retries")
"""Fields that matter only when nodes fail (a replay without failures ignores them)."""


def inert_fields(policy: Policy, *, node_failures: bool = True) -> dict[str, str]:
    """The fields of ``policy`` that cannot change its schedule (which jobs
    start where and when), each with the reason; ``node_failures=False`` for a
    replay in which no node fails. The priorities the agent reports may still
    differ: only the schedule is meant."""
    out: dict[str, str] = {}
    for rule in INERT_RULES:
        if rule.applies(policy):
            for name in rule.fields:
                out.setdefault(name, rule.because)
    if not node_failures:
        for name in NODE_FAILURE_SETTINGS:
            out.setdefault(name, "no node fails in the replay")
    return out


def effective_policy(policy: Policy, *, node_failures: bool = True) -> Policy:
    """``policy`` with every inert field at its default: two policies with the
    same effective policy give the same schedule."""
    inert = inert_fields(policy, node_failures=node_failures)
    return replace(policy, **{name: _DEFAULTS[name] for name in inert})


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))  # type: ignore[arg-type]
    )


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        _fail(name, f"must be an integer >= 0 (0: none), got {value!r}")


def _pairs(name: str, value: object, positive: bool) -> Shares:
    items = value.items() if isinstance(value, dict) else value
    out: list[tuple[str, float]] = []
    try:
        for key, amount in items:  # type: ignore[union-attr,attr-defined]
            if not _is_number(amount) or (positive and amount <= 0):
                need = "a number > 0" if positive else "a number"
                _fail(name, f"value of {key!r} must be {need}, got {amount!r}")
            out.append((str(key), float(amount)))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, PolicyError):
            raise
        _fail(name, f"must map names to numbers, got {value!r}")
    return tuple(sorted(out))


def _check_choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(key, f"must be one of {', '.join(allowed)}; got {value!r}")


def _fail(field: str, reason: str) -> None:
    raise PolicyError(f"{field} {reason}", field=field, reason=reason)


# ----------------------------------------------------------------- TOML file
#
# The file groups the fields by what they govern; each TOML key maps to one
# Policy field. Unknown sections or keys are errors (a typo must not silently
# fall back to a default). ``[[qos]]`` is a list of tables, one per QoS.
TOML_KEYS: dict[str, dict[str, str]] = {
    "queue": {"order": "order"},
    "backfill": {
        "mode": "backfill",
        "depth": "backfill_depth",
        "starvation_limit_s": "starvation_limit_s",
    },
    "priority": {
        "weight_age": "priority_weight_age",
        "weight_size": "priority_weight_size",
        "weight_fairshare": "priority_weight_fairshare",
        "weight_qos": "priority_weight_qos",
        "max_age_s": "priority_max_age_s",
        "favor": "priority_favor",
        "interval_s": "priority_interval_s",
        "nice": "nice",
    },
    "fairshare": {
        "algorithm": "fairshare_algorithm",
        "half_life_s": "fairshare_half_life_s",
        "users": "user_shares",
        "groups": "group_shares",
    },
    "limits": {
        f"{what}_per_{who}": f"max_{what}_per_{who}"
        for who in ("user", "group")
        for what in LIMIT_NAMES
    },
    "placement": {"strategy": "placement"},
    "autoscale": {
        "enabled": "autoscale",
        "min_nodes": "autoscale_min_nodes",
        "max_nodes": "autoscale_max_nodes",
        "scale_up_wait_s": "autoscale_wait_s",
        "boot_delay_s": "autoscale_boot_delay_s",
        "idle_s": "autoscale_idle_s",
        "cooldown_s": "autoscale_cooldown_s",
        "step": "autoscale_step",
        "interval_s": "autoscale_interval_s",
        "min": "autoscale_node_min",
        "max": "autoscale_node_max",
    },
    "failures": {"on_node_failure": "on_node_failure", "max_retries": "max_retries"},
    "slurm_compat": {
        "reaction_s": "slurm_reaction_s",
        "backfill_interval_s": "slurm_backfill_interval_s",
        "whole_minute_limits": "slurm_whole_minute_limits",
        "priority_phase_s": "slurm_priority_phase_s",
    },
}
_MAPPING_FIELDS = {
    "nice",
    "user_shares",
    "group_shares",
    "autoscale_node_min",
    "autoscale_node_max",
}
_QOS_KEYS = tuple(f.name for f in fields(QoS))
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Policy)}

_TOML_KEY_OF_FIELD = {
    field: f"{section}.{key}" for section, keys in TOML_KEYS.items() for key, field in keys.items()
}

DEFAULT_POLICY_TOML = """\
# htcsim scheduling policy. The simulator (htcsim simulate --policy FILE) and
# the live agent read this same file. Users, groups and queues are named as
# the workload names them (SWF: the numbers of fields 12, 13 and 15, as "17").

[queue]
# Order of the pending queue: "fcfs" (submit time), "sjf" (requested time),
# "priority" (a priority given per job) or "multifactor" (the [priority]
# factors below). Ties break on submit time, then job id.
order = "fcfs"

[backfill]
# "none" (strict order), "easy" (one reservation, for the first job that does
# not fit) or "conservative" (a reservation for every queued job).
mode = "easy"
# Queued jobs examined per pass; 0 examines them all (Slurm: bf_max_job_test).
depth = 0
# Starvation guard: a job pending longer than this many seconds goes to the
# front of the queue and gets a reservation, even under EASY (0: off).
starvation_limit_s = 0

[priority]
# Multifactor priority (order = "multifactor"), as Slurm's: each factor is
# normalized to [0, 1] and weighted; nice is subtracted as it is.
weight_age = 1000.0        # time eligible, capped at max_age_s
weight_size = 0.0          # cores asked, relative to the cluster
weight_fairshare = 0.0     # the user's fairshare factor
weight_qos = 0.0           # the QoS's priority over the highest QoS priority
max_age_s = 604800
favor = "small"            # size factor favors "small" or "large" jobs
interval_s = 300           # seconds between recomputations of every priority

[priority.nice]
# user = nice value subtracted from that user's priorities, e.g. "17" = 100.0

[fairshare]
# "classic": 2^(-effective usage / share); "fair_tree": users ranked by
# groups then users, each by share over usage (Slurm's fair tree).
algorithm = "classic"
half_life_s = 604800       # usage (core-seconds) halves every this many seconds; 0: never

[fairshare.users]
# user = shares within the user's group (default 1), e.g. "17" = 2.0

[fairshare.groups]
# group = shares among groups (default 1)

# One [[qos]] table per QoS: a priority factor and caps for all its jobs;
# queues lists the workload queue numbers that map to it. For example:
# [[qos]]
# name = "high"
# priority = 100.0
# queues = [1]
# running_jobs = 0
# cores = 0
# gpus = 0
# queued_jobs = 0

[limits]
# Caps per user and per group (0: none): running jobs, cores and GPUs held at
# once, and pending jobs considered. A job beyond a cap waits with reason
# UserLimit or GroupLimit; it is never the job others wait behind, never
# gets a reservation and is not counted as demand.
running_jobs_per_user = 0
cores_per_user = 0
gpus_per_user = 0
queued_jobs_per_user = 0
running_jobs_per_group = 0
cores_per_group = 0
gpus_per_group = 0
queued_jobs_per_group = 0

[placement]
# How tasks are put on nodes: "first_fit" (nodes in order), "best_fit" (pack:
# the node left with the fewest free cores), "spread" (balance: the node with
# the most free cores) or "cons_tres" (as Slurm's cons_tres: the run of
# consecutive nodes with room that fits the job most tightly, and in it the
# node with the fewest free cores that holds the job; ties to the first).
strategy = "first_fit"

[autoscale]
# The node pool follows the demand: nodes boot when pending jobs that could run
# on a new node (not held by dependencies, limits or their reservation) have
# waited scale_up_wait_s, as many as that demand needs (at most step per node
# type and decision); a node idle for idle_s is drained and powered off; a
# node type takes no new action for cooldown_s after one.
enabled = false
min_nodes = 0              # per node type, unless [autoscale.min] names it
max_nodes = 0              # per node type, unless [autoscale.max] names it; 0: its count
scale_up_wait_s = 600
boot_delay_s = 300
idle_s = 1800
cooldown_s = 300
step = 16
# Decide only at the first pass on or after each multiple of interval_s, as
# an autoscaler loop that wakes up periodically (0: after every pass).
interval_s = 0

[autoscale.min]
# node type name = its min, e.g. cpu = 2

[autoscale.max]
# node type name = its max, e.g. cpu = 240

[failures]
# A job whose node fails is "requeue"d (from its last checkpoint, if it has
# one) or ends as failed ("fail"); max_retries caps the requeues per job
# (0: no limit), after which it fails.
on_node_failure = "requeue"
max_retries = 0

[slurm_compat]
# Replay as a Slurm cluster would run the policy (the simulator only; the live
# agent ignores this section). htcsim import slurm-conf writes it from a
# slurm.conf; all 0/false (the default) is the plain simulator.
# Seconds between an event (submission, completion) and the pass that serves
# it; events until then share that pass. Slurm 22.05 measured: median ~1 s.
reaction_s = 0
# Backfill only at multiples of this many seconds (Slurm's bf_interval); the
# passes in between start jobs in strict queue order. 0: backfill every pass.
backfill_interval_s = 0
# Round time limits up to whole minutes, as Slurm stores them.
whole_minute_limits = false
# Multifactor: recompute the priorities at phase + k * [priority] interval_s
# (Slurm: PriorityCalcPeriod counted from slurmctld's start, this phase being
# that start on the replay's clock modulo the interval). -1: every interval_s
# after the last recomputation.
priority_phase_s = -1
"""


def policy_from_mapping(data: dict[str, Any], source: str = "policy") -> Policy:
    """A Policy from parsed TOML, naming ``source`` and the key in every error."""
    values: dict[str, Any] = {}
    for section, content in data.items():
        if section == "qos":
            values["qos"] = _qos_from_toml(content, source)
            continue
        if section not in TOML_KEYS:
            known = ", ".join([f"[{name}]" for name in TOML_KEYS] + ["[[qos]]"])
            raise PolicyError(f"{source}: unknown section [{section}] (known: {known})")
        if not isinstance(content, dict):
            raise PolicyError(f"{source}: {section} must be a [{section}] table")
        for key, value in content.items():
            if key not in TOML_KEYS[section]:
                known = ", ".join(TOML_KEYS[section])
                raise PolicyError(f"{source}: unknown key {section}.{key} (known: {known})")
            name = TOML_KEYS[section][key]
            if name in _MAPPING_FIELDS and not isinstance(value, dict):
                raise PolicyError(f"{source}: {section}.{key} must be a [{section}.{key}] table")
            values[name] = value
    try:
        return Policy(**values)
    except PolicyError as exc:
        key = _TOML_KEY_OF_FIELD.get(exc.field or "", exc.field)
        raise PolicyError(
            f"{source}: {key} {exc.reason}", field=exc.field, reason=exc.reason
        ) from exc


def _qos_from_toml(content: object, source: str) -> tuple[QoS, ...]:
    if not isinstance(content, list):
        raise PolicyError(f"{source}: qos must be a list of [[qos]] tables")
    out = []
    for k, table in enumerate(content):
        where = f"{source}: [[qos]] #{k + 1}"
        if not isinstance(table, dict):
            raise PolicyError(f"{where} must be a table")
        for key in table:
            if key not in _QOS_KEYS:
                raise PolicyError(f"{where}: unknown key {key} (known: {', '.join(_QOS_KEYS)})")
        if "name" not in table:
            raise PolicyError(f"{where}: needs a name")
        try:
            out.append(QoS(**table))
        except PolicyError as exc:
            raise PolicyError(f"{where}: {exc}", field=exc.field, reason=exc.reason) from exc
    return tuple(out)


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
    data: dict[str, Any] = {}
    for section, keys in TOML_KEYS.items():
        data[section] = {key: values[name] for key, name in keys.items()}
    if policy.qos:
        data["qos"] = values["qos"]
    return tomli_w.dumps(data)


def save_policy(policy: Policy, path: str | Path) -> None:
    Path(path).write_text(policy_to_toml(policy), encoding="utf-8")


__all__ = [
    "DEFAULT_POLICY_TOML",
    "INERT_RULES",
    "InertRule",
    "Policy",
    "PolicyError",
    "QoS",
    "effective_policy",
    "inert_fields",
    "load_policy",
    "policy_from_mapping",
    "policy_to_toml",
    "save_policy",
]
