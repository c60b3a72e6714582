"""Constraints of a study: bounds a trial must meet to be chosen, whatever its objective.

An objective alone can be bought with starvation: a policy that lets a few
jobs wait for weeks can lower the mean bounded slowdown of all the others.
A constraint bounds one metric, by a number or by a multiple of the
baseline's value (the base policy replayed on the same part)::

    max_wait_s <= 1.5 * baseline
    fairness >= 0.8 * baseline
    p99_wait_s <= 2d              (a duration, for a metric in seconds)
    utilization >= 0.7

It is read with a regular expression, never evaluated as code. A trial that
breaks a constraint is infeasible: never chosen, and marked in the outputs.
Every study carries ``DEFAULT_GUARD`` unless it is turned off, so that no
tuned policy lengthens the longest wait much beyond the baseline's.
"""

from __future__ import annotations

import contextlib
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from htcsim.tune.objective import METRICS
from htcsim.units import parse_duration

DEFAULT_GUARD = "max_wait_s <= 1.5 * baseline"
"""The guard every study carries (``--no-guard`` drops it; a constraint of the
user's on the same metric replaces it)."""

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}
_SHAPE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>|==|=|!=)\s*(.*?)\s*$")
_NUMBER = r"(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
_RELATIVE = re.compile(rf"^(?:{_NUMBER}\s*\*\s*)?baseline(?:\s*\*\s*{_NUMBER})?$", re.IGNORECASE)
_EXAMPLE = 'e.g. "max_wait_s <= 1.5 * baseline" or "fairness >= 0.2"'


class ConstraintError(ValueError):
    """A constraint that cannot be read; the message quotes it."""


@dataclass(frozen=True)
class Constraint:
    """``metric op value``, or ``metric op value * baseline`` when ``relative``."""

    metric: str
    op: str
    value: float
    relative: bool
    default: bool = False  # the study's default guard

    @property
    def text(self) -> str:
        if self.relative:
            rhs = "baseline" if self.value == 1 else f"{self.value:g} * baseline"
        else:
            rhs = f"{self.value:g}"
        return f"{self.metric} {self.op} {rhs}"

    def bound(self, baseline: dict[str, float]) -> float:
        """The number the metric is held to (nan when the baseline lacks it)."""
        if not self.relative:
            return self.value
        return self.value * float(baseline.get(self.metric, math.nan))

    def violation(self, metrics: dict[str, float], baseline: dict[str, float]) -> float:
        """0 when met; else how far off, relative to the bound (inf when the
        metric is undefined: a trial whose jobs never ran meets nothing)."""
        value = float(metrics.get(self.metric, math.nan))
        bound = self.bound(baseline)
        if not math.isfinite(value) or math.isnan(bound):
            return math.inf
        if _COMPARE[self.op](value, bound):
            return 0.0
        scale = abs(bound) if bound != 0 else 1.0
        # a strict bound met with equality is broken, by a hair
        return max(abs(value - bound) / scale, 1e-9)


def parse_constraint(text: str, *, default: bool = False) -> Constraint:
    """One constraint from its text (see the module docstring)."""
    shape = _SHAPE.match(text)
    if shape is None:
        raise ConstraintError(f"constraint {text!r}: write METRIC <= VALUE, {_EXAMPLE}")
    metric, op, rhs = shape.groups()
    if metric not in METRICS:
        raise ConstraintError(
            f"constraint {text!r}: unknown metric {metric!r} (known: {', '.join(sorted(METRICS))})"
        )
    if op not in _COMPARE:
        raise ConstraintError(f"constraint {text!r}: compare with <=, <, >= or >, not {op}")
    if not rhs:
        raise ConstraintError(f"constraint {text!r}: no value after {op}; {_EXAMPLE}")
    relative = _RELATIVE.match(rhs)
    if relative is not None:
        before, after = relative.groups()
        if before is not None and after is not None:
            raise ConstraintError(f"constraint {text!r}: one factor of baseline, not two")
        factor = float(before or after or 1.0)
        if not (math.isfinite(factor) and factor > 0):
            raise ConstraintError(f"constraint {text!r}: the factor of baseline must be > 0")
        return Constraint(metric, op, factor, True, default)
    return Constraint(metric, op, _absolute(text, metric, rhs), False, default)


def _absolute(text: str, metric: str, rhs: str) -> float:
    try:
        value = float(rhs)
    except ValueError:
        value = math.nan
        if metric.endswith("_s"):
            with contextlib.suppress(ValueError):
                value = parse_duration(rhs)
    if math.isnan(value):
        what = "a number, a duration (2d, 12h)" if metric.endswith("_s") else "a number"
        raise ConstraintError(
            f"constraint {text!r}: cannot read {rhs!r}; give {what} or FACTOR * baseline"
        )
    if not math.isfinite(value):
        raise ConstraintError(f"constraint {text!r}: the bound must be finite")
    return value


def study_constraints(texts: list[str], *, guard: bool = True) -> tuple[Constraint, ...]:
    """The user's constraints, after the default guard (unless ``guard`` is off
    or the user bounds its metric too)."""
    given = tuple(parse_constraint(t) for t in texts)
    default = parse_constraint(DEFAULT_GUARD, default=True)
    if guard and all(c.metric != default.metric for c in given):
        return (default, *given)
    return given


def total_violation(
    constraints: tuple[Constraint, ...], metrics: dict[str, float], baseline: dict[str, float]
) -> float:
    """The sum of every constraint's violation (0: feasible)."""
    return float(sum(c.violation(metrics, baseline) for c in constraints))


def broken(
    constraints: tuple[Constraint, ...], metrics: dict[str, float], baseline: dict[str, float]
) -> list[Constraint]:
    """The constraints ``metrics`` break."""
    return [c for c in constraints if c.violation(metrics, baseline) > 0]
