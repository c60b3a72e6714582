"""Policy search: replay a trace under candidate policies and keep the best (uses sim only)."""

from htcsim.tune.constraints import (
    DEFAULT_GUARD,
    Constraint,
    ConstraintError,
    parse_constraint,
    study_constraints,
)
from htcsim.tune.objective import Objective, ObjectiveError, parse_objective
from htcsim.tune.output import write_study
from htcsim.tune.space import SearchSpace, SpaceError, inert_parameters, load_space
from htcsim.tune.store import StudyStore, StudyStoreError
from htcsim.tune.study import NoFeasibleTrial, Study, StudyResult, baselines, split_workload
from htcsim.tune.trials import TrialRunner

__all__ = [
    "DEFAULT_GUARD",
    "Constraint",
    "ConstraintError",
    "NoFeasibleTrial",
    "Objective",
    "ObjectiveError",
    "SearchSpace",
    "SpaceError",
    "Study",
    "StudyResult",
    "StudyStore",
    "StudyStoreError",
    "TrialRunner",
    "baselines",
    "inert_parameters",
    "load_space",
    "parse_constraint",
    "parse_objective",
    "split_workload",
    "study_constraints",
    "write_study",
]
