"""The guard beside each Dask worker survives the signals a batch system sends
to every process of the worker's job, from the instant it exists.

Found on a real Slurm: ``scancel`` of a worker's batch job 40 ms after the
worker started the guard (with its first job) killed the guard before it
ignored SIGTERM; the job, in a session of its own, ran on unseen and, requeued
by the agent, completed twice. The guard is now started with those signals
blocked, so a SIGTERM sent the moment ``Popen`` returns finds it deaf; when
the worker dies (its end of the pipe closes), the guard kills the job.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator

import pytest

from htcsim.agent.executors.dask import worker
from tests.agent_harness import READY_S


@pytest.fixture
def job() -> Iterator[subprocess.Popen[bytes]]:
    """A job as the worker starts one: a session (and process group) of its own."""
    process = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(READY_S)


@pytest.mark.parametrize("sig", worker.GUARD_SPARED, ids=lambda s: signal.Signals(s).name)
def test_a_signal_sent_as_the_guard_starts_leaves_it_to_kill_the_job(
    job: subprocess.Popen[bytes], sig: int
) -> None:
    with worker._lock:
        worker._tell_guard(f"+{job.pid}")
        guard = worker._guard
        worker._guard = None  # the next test starts its own
    assert guard is not None and guard.stdin is not None
    try:
        guard.send_signal(sig)  # at once: before the guard has run a line of its own
        guard.stdin.close()  # the worker is gone
        assert job.wait(READY_S) == -signal.SIGKILL, "the guard killed the job"
        assert guard.wait(READY_S) == 0, "the guard ended on its own, not by the signal"
    finally:
        if guard.poll() is None:
            guard.kill()
            guard.wait(READY_S)


def test_the_worker_s_own_signal_mask_is_restored(job: subprocess.Popen[bytes]) -> None:
    """Blocking the signals is for the guard's fork only: the worker's thread
    answers them as before."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with worker._lock:
        worker._tell_guard(f"+{job.pid}")
        guard = worker._guard
        worker._guard = None
    assert guard is not None and guard.stdin is not None
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    guard.stdin.close()
    guard.wait(READY_S)
