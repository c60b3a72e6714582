"""The search space of a tuning study: which Policy fields vary, and over what.

A space file names Policy fields (as ``htcsim policy show`` prints them) and,
for each, either a range or a list of choices::

    [order]
    choices = ["fcfs", "sjf", "multifactor"]

    [backfill]
    choices = ["none", "easy", "conservative"]

    [priority_weight_fairshare]
    low = 1.0
    high = 100000.0
    log = true               # sampled evenly in log space

    [autoscale_idle_s]
    low = 60
    high = 7200
    integer = true

Optimizers see every parameter as one coordinate in [0, 1]; ``decode`` maps
a point to Policy values and ``encode`` maps a policy back (to put the
baseline policies into the search). Fields the space does not name keep the
base policy's values.

``inert_parameters`` reads the policy's own rules (``htcsim.policy.INERT_RULES``)
to find the parameters that cannot change the schedule under the space's
other values: searching autoscale_idle_s with autoscaling off, or a
fairshare weight where the order is FCFS, spends trials on nothing.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from htcsim.policy import INERT_RULES, NODE_FAILURE_SETTINGS, InertRule, Policy, PolicyError

_RANGE_KEYS = {"low", "high", "log", "integer"}
_POLICY_FIELDS = {f.name: f for f in fields(Policy)}
_TUNABLE_TYPES = (
    "int",
    "float",
    "bool",
    "Order",
    "BackfillMode",
    "Placement",
    "FairshareAlgorithm",
    "Favor",
    "FailureAction",
)


class SpaceError(ValueError):
    """A search space file is invalid; the message names the file and the parameter."""


@dataclass(frozen=True)
class Parameter:
    """One Policy field and the values it may take."""

    name: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    def decode(self, u: float) -> Any:
        """The value at coordinate ``u`` in [0, 1]."""
        u = min(max(float(u), 0.0), 1.0)
        if self.choices:
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        if self.log:
            value = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            value = self.low + u * (self.high - self.low)
        if self.integer:
            return int(min(max(round(value), math.ceil(self.low)), math.floor(self.high)))
        return float(value)

    def extremes(self) -> tuple[Any, ...]:
        """Every choice, or the two ends of the range: the values that decide
        whether a rule on this field can hold somewhere in the space."""
        if self.choices:
            return self.choices
        return tuple(dict.fromkeys((self.decode(0.0), self.decode(1.0))))

    def encode(self, value: Any) -> float | None:
        """The coordinate of ``value`` (the middle of a choice's interval), or
        None when the value is outside the space."""
        if self.choices:
            if value not in self.choices:
                return None
            return (self.choices.index(value) + 0.5) / len(self.choices)
        if not self.low <= value <= self.high:
            return None
        if self.high == self.low:
            return 0.5
        if self.log:
            return (math.log(value) - math.log(self.low)) / (
                math.log(self.high) - math.log(self.low)
            )
        return (value - self.low) / (self.high - self.low)


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of a study, in file order, over a base policy."""

    parameters: tuple[Parameter, ...]
    base: Policy = field(default_factory=Policy)

    @property
    def dimensions(self) -> int:
        return len(self.parameters)

    def values(self, point: np.ndarray) -> dict[str, Any]:
        """Policy field values at a point of [0, 1]^d."""
        return {p.name: p.decode(u) for p, u in zip(self.parameters, point, strict=True)}

    def policy(self, values: dict[str, Any]) -> Policy:
        """The base policy with ``values`` set (PolicyError if they clash)."""
        return replace(self.base, **values)

    def encode(self, policy: Policy) -> np.ndarray | None:
        """The point of ``policy``, or None if one of its values is outside the
        space or a field the space does not name differs from the base."""
        point = []
        for p in self.parameters:
            u = p.encode(getattr(policy, p.name))
            if u is None:
                return None
            point.append(u)
        named = {p.name for p in self.parameters}
        for name in _POLICY_FIELDS:
            if name not in named and getattr(policy, name) != getattr(self.base, name):
                return None
        return np.array(point, dtype=np.float64)


@dataclass(frozen=True)
class InertParameter:
    """A searched field that cannot change the schedule: ``always``, or only
    where the other values are as ``message`` says."""

    name: str
    always: bool
    message: str


def inert_parameters(space: SearchSpace, *, node_failures: bool = False) -> list[InertParameter]:
    """Each parameter of ``space`` that some of the space's values make inert
    (``node_failures``: whether nodes fail in the replays)."""
    named = {p.name: p for p in space.parameters}
    out = []
    for param in space.parameters:
        if not node_failures and param.name in NODE_FAILURE_SETTINGS:
            out.append(
                InertParameter(
                    param.name,
                    True,
                    f"{param.name} cannot change the schedule: no node fails in the replays",
                )
            )
            continue
        rules = [r for r in INERT_RULES if param.name in r.fields]
        given = sorted({g for r in rules for g in r.given} - {param.name})
        if not rules:
            continue
        options = [named[g].extremes() if g in named else (getattr(space.base, g),) for g in given]
        firing: dict[InertRule, dict[str, set[Any]]] = {}
        total = inert = 0
        for combo in itertools.product(*options):
            try:
                policy = replace(space.base, **dict(zip(given, combo, strict=True)))
            except (PolicyError, TypeError):
                continue
            total += 1
            fired = [r for r in rules if r.applies(policy)]
            inert += bool(fired)
            for rule in fired:
                seen = firing.setdefault(rule, {g: set() for g in rule.given})
                for g in rule.given:
                    seen[g].add(getattr(policy, g))
        if not inert:
            continue
        why = "; ".join(_condition(rule, values, named) for rule, values in firing.items())
        if inert == total:
            message = f"{param.name} cannot change the schedule: {why}"
        else:
            message = (
                f"{param.name} cannot change the schedule where {why}; "
                "those trials reuse one replay per distinct policy"
            )
        out.append(InertParameter(param.name, inert == total, message))
    return out


def _condition(rule: InertRule, values: dict[str, set[Any]], named: dict[str, Any]) -> str:
    """``the queue order is not multifactor (order = fcfs or sjf)``."""
    parts = []
    for g, seen in values.items():
        shown = " or ".join(_shown(v) for v in sorted(seen, key=repr))
        parts.append(f"{g} = {shown}" + ("" if g in named else ", not searched"))
    return f"{rule.because} ({'; '.join(parts)})"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "none" if not value else repr(value)
    return str(value)


def space_from_mapping(data: dict[str, Any], base: Policy, source: str = "space") -> SearchSpace:
    """A SearchSpace from parsed TOML, naming ``source`` and the parameter in errors."""
    if not data:
        raise SpaceError(f"{source}: names no parameter (one table per Policy field)")
    params = []
    for name, table in data.items():
        where = f"{source}: [{name}]"
        if name not in _POLICY_FIELDS:
            known = ", ".join(sorted(_POLICY_FIELDS))
            raise SpaceError(f"{where}: not a Policy field (fields: {known})")
        kind = str(_POLICY_FIELDS[name].type)
        if kind not in _TUNABLE_TYPES:
            raise SpaceError(f"{where}: a {kind} field cannot be searched")
        if not isinstance(table, dict):
            raise SpaceError(f"{where}: must be a table with low/high or choices")
        if "choices" in table:
            params.append(_choices(name, table, where))
        else:
            params.append(_range(name, kind, table, where))
    space = SearchSpace(tuple(params), base)
    for p in space.parameters:  # every value must make a valid policy on its own
        for u in (
            (0.0, 1.0)
            if not p.choices
            else [(k + 0.5) / len(p.choices) for k in range(len(p.choices))]
        ):
            try:
                replace(base, **{p.name: p.decode(u)})
            except (PolicyError, TypeError) as exc:
                raise SpaceError(f"{source}: [{p.name}]: {exc}") from exc
    return space


def _choices(name: str, table: dict[str, Any], where: str) -> Parameter:
    extra = set(table) - {"choices"}
    if extra:
        raise SpaceError(f"{where}: choices takes no {', '.join(sorted(extra))}")
    choices = table["choices"]
    if not isinstance(choices, list) or not choices:
        raise SpaceError(f"{where}: choices must be a non-empty list")
    if len(set(map(repr, choices))) != len(choices):
        raise SpaceError(f"{where}: choices must be distinct")
    return Parameter(name, choices=tuple(choices))


def _range(name: str, kind: str, table: dict[str, Any], where: str) -> Parameter:
    extra = set(table) - _RANGE_KEYS
    if extra:
        raise SpaceError(
            f"{where}: unknown key(s) {', '.join(sorted(extra))} "
            "(known: choices, low, high, log, integer)"
        )
    if kind not in ("int", "float"):
        raise SpaceError(f"{where}: a {kind} field takes choices, not a range")
    for key in ("low", "high"):
        value = table.get(key)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise SpaceError(f"{where}: {key} must be a number, got {value!r}")
    low, high = float(table["low"]), float(table["high"])
    log, integer = table.get("log", False), table.get("integer", kind == "int")
    if not isinstance(log, bool) or not isinstance(integer, bool):
        raise SpaceError(f"{where}: log and integer must be true or false")
    if low > high:
        raise SpaceError(f"{where}: low {low} is above high {high}")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log range needs low > 0, got {low}")
    if kind == "int" and not integer:
        raise SpaceError(f"{where}: {name} is an integer field")
    return Parameter(name, low=low, high=high, log=log, integer=integer)


def load_space(path: str | Path, base: Policy) -> SearchSpace:
    """Read and validate a search space TOML file over ``base``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read the space file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"{path}: not valid TOML: {exc}") from exc
    return space_from_mapping(data, base, str(path))
