"""Policy search: replay a trace under candidate policies and keep the best (uses sim only)."""

from htcsim.tune.objective import Objective, ObjectiveError, parse_objective
from htcsim.tune.output import write_study
from htcsim.tune.space import SearchSpace, SpaceError, load_space
from htcsim.tune.store import StudyStore, StudyStoreError
from htcsim.tune.study import Study, StudyResult, baselines, split_workload
from htcsim.tune.trials import TrialRunner

__all__ = [
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
    "load_space",
    "parse_objective",
    "split_workload",
    "write_study",
]
