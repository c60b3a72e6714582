"""200 trials on the first 20,000 jobs of CTC-SP2, both cores, whole study.

Measured: the wall time of the study (the pool's start included), the CPU
time of the parent and of the workers (how busy the two cores were), and the
overhead per replay outside the simulation: the wall time per replay slot
(wall x workers / replays) less the mean replay time inside the workers.
Trials whose effective policy was replayed already reuse that result and
are not replays.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from benchmarks.conftest import log_path, sized
from htcsim.policy import Policy
from htcsim.tune import Study, StudyStore, TrialRunner, parse_objective, split_workload
from htcsim.tune.space import space_from_mapping
from htcsim.workload.swf import read_swf

SPACE = {
    "order": {"choices": ["fcfs", "sjf", "multifactor"]},
    "backfill": {"choices": ["none", "easy", "conservative"]},
    "priority_weight_age": {"low": 0.0, "high": 10000.0},
    "priority_weight_size": {"low": 0.0, "high": 10000.0},
    "priority_favor": {"choices": ["small", "large"]},
}
TRIALS = 200
WORKERS = 2


def test_two_hundred_trials_on_ctc(benchmark, trace_dir: Path, tmp_path: Path) -> None:
    trials = sized(benchmark, TRIALS, 10)
    workload = read_swf(log_path(trace_dir, "CTC-SP2-1996-3.1-cln"), max_jobs=20_000)
    space = space_from_mapping(SPACE, Policy())
    train, test = split_workload(workload, 0.7)
    figures: dict[str, float] = {}

    def study() -> None:
        store = StudyStore(tmp_path / f"study-{time.monotonic_ns()}.sqlite", {"bench": 1})
        began = time.perf_counter()
        cpu_parent = time.process_time()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        with TrialRunner({"train": train, "test": test}, workers=WORKERS) as runner:
            result = Study(
                workload, space, parse_objective(["mean_bsld"]), store=store, runner=runner
            ).run(trials)
        wall = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        worker_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        replay = [r["seconds"] for r in result.trials if r["same_as"] is None]
        figures.update(
            wall_s=wall,
            trials=len(result.trials),
            replays=len(replay),
            cpu_utilization=(worker_cpu + time.process_time() - cpu_parent) / (wall * WORKERS),
            mean_trial_s=sum(replay) / len(replay),
            overhead_per_trial_s=wall * WORKERS / len(replay) - sum(replay) / len(replay),
        )
        store.close()

    benchmark.pedantic(study, rounds=1, iterations=1)
    benchmark.extra_info.update({k: round(v, 3) for k, v in figures.items()})
    print(
        f"\n{trials} trials on CTC-SP2 (20,000 jobs, {WORKERS} workers, {os.cpu_count()} CPUs): "
        f"{figures['replays']:.0f} replays, "
        f"{figures['wall_s']:.1f} s wall, CPU busy {figures['cpu_utilization']:.0%} of "
        f"{WORKERS} cores, {figures['mean_trial_s'] * 1000:.0f} ms per replay in the worker, "
        f"{figures['overhead_per_trial_s'] * 1000:.0f} ms overhead per replay outside it"
    )
