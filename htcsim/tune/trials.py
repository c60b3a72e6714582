"""Running trials: replays of workload parts under candidate policies, in parallel.

A trial is (part, policy): the part's workload replayed under the policy on
the study's cluster, reduced to its metrics. Trials run in a local process
pool by default (each worker receives the workloads once, through the pool's
initializer; a task carries only the part name and the policy), in-process
with one worker, or on an existing Dask cluster (the workloads are scattered
to every worker once). Each trial is handed to the caller as it ends (so a
study stores it at once), and the batch comes back in the order asked,
whatever order the trials ended in, so a study is deterministic however it
runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass
from typing import Any

from htcsim.cluster import Cluster
from htcsim.model import Workload
from htcsim.policy import Policy
from htcsim.sim.worker_pool import WorkerPool

_COST_HINT = {"none": 1, "easy": 1, "conservative": 3}
"""Relative replay cost by backfill mode, to start the long trials of a batch first."""

TrialOutcome = tuple[dict[str, float] | None, str | None, float]
"""(metrics, error message, seconds the replay took)."""


@dataclass(frozen=True)
class _Replayer:
    """What every worker holds: the workload of each part and the cluster."""

    parts: dict[str, Workload]
    cluster: Cluster | None

    def __call__(self, part: str, policy: Policy) -> TrialOutcome:
        from htcsim.kernel import KernelInputError
        from htcsim.sim import simulate
        from htcsim.tune.objective import trial_metrics

        began = time.perf_counter()
        try:
            result = simulate(self.parts[part], policy, cluster=self.cluster, series_every_s=None)
        except KernelInputError as exc:  # e.g. a job too large for the policy's pool
            return None, str(exc), time.perf_counter() - began
        return trial_metrics(result), None, time.perf_counter() - began


def _run_on_dask(replayer: _Replayer, part: str, policy: Policy) -> TrialOutcome:
    return replayer(part, policy)


class TrialRunner:
    """Runs batches of trials: in-process (workers=1), in a process pool, or on Dask."""

    def __init__(
        self,
        parts: dict[str, Workload],
        cluster: Cluster | None = None,
        *,
        workers: int = 1,
        dask_address: str | None = None,
        dask_security: Any = None,
    ) -> None:
        """``dask_security``: the client's ``distributed.Security`` (TLS), or
        None for a plain ``tcp://`` scheduler."""
        self._replayer = _Replayer(parts, cluster)
        self._pool: WorkerPool | None = None
        self._client: Any = None
        self._scattered: Any = None
        if dask_address is not None:
            from distributed import Client

            self._client = Client(dask_address, security=dask_security)
            self._scattered = self._client.scatter(self._replayer, broadcast=True)
        elif workers > 1:
            self._pool = WorkerPool(self._replayer, workers)

    def run(
        self,
        trials: Sequence[tuple[str, Policy]],
        on_done: Callable[[int, TrialOutcome], None] | None = None,
    ) -> list[TrialOutcome]:
        """Every (part, policy), results in the order given; ``on_done(k, outcome)``
        is called in this thread as each trial ends (in the order they end), so
        that the caller can store it at once."""
        if not trials:
            return []
        out: list[TrialOutcome | None] = [None] * len(trials)

        def done(k: int, outcome: TrialOutcome) -> None:
            out[k] = outcome
            if on_done is not None:
                on_done(k, outcome)

        if self._client is not None:
            from distributed import as_completed as dask_completed

            on_dask = [
                self._client.submit(_run_on_dask, self._scattered, part, policy, pure=False)
                for part, policy in trials
            ]
            index = {future.key: k for k, future in enumerate(on_dask)}
            for future in dask_completed(on_dask):
                done(index[future.key], future.result())
        elif self._pool is not None:
            # longest first (conservative backfilling costs the most), so that the
            # batch does not end with one worker busy and the other idle
            order = sorted(range(len(trials)), key=lambda k: -_COST_HINT[trials[k][1].backfill])
            futures = {self._pool.submit(*trials[k]): k for k in order}
            for future in as_completed(futures):
                done(futures[future], future.result())
        else:
            for k, (part, policy) in enumerate(trials):
                done(k, self._replayer(part, policy))
        return [outcome for outcome in out if outcome is not None]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> TrialRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
