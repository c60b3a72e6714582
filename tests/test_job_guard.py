"""The Dask worker's job guard alone: a real guard process (and the guard's
rules driven with explicit clock readings) killing real process groups when
the lease the agent renews ends, or when the worker's pipe closes."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from htcsim.agent.executors.dask.job_guard import Guard
from htcsim.agent.executors.dask.lease import Lease
from tests.agent_harness import READY_S, wait_for


def _sleeper() -> subprocess.Popen[bytes]:
    """A job: a process group of its own (the shell and its sleep)."""
    return subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True)


def _alive(group: subprocess.Popen[bytes]) -> bool:
    return group.poll() is None


@pytest.fixture
def groups() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, 9)
        process.wait(READY_S)


class _GuardProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "htcsim.agent.executors.dask.job_guard"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.out = b""

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def fenced(self) -> set[int]:
        """The groups it said it fenced so far (``F PGID`` lines)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            data = os.read(fd, 4096)
            if not data:
                break
            self.out += data
        return {int(line[2:]) for line in self.out.split(b"\n") if line.startswith(b"F ")}

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(READY_S)


def test_silence_after_renewals_kills_the_groups_once_the_lease_ends(
    groups: list[subprocess.Popen[bytes]],
) -> None:
    lease_s = 2.0
    guard = _GuardProcess()
    try:
        job = _sleeper()
        groups.append(job)
        last = 0.0
        for _ in range(4):  # renewals, as the agent sends them (here the same clock)
            last = time.monotonic()
            guard.send(f"L {last!r} {time.monotonic()!r} {lease_s!r}")
            if len(groups) == 1:
                guard.send(f"+{job.pid}")
                other = _sleeper()
                groups.append(other)
                guard.send(f"+{other.pid}")
                guard.send(f"-{other.pid}")  # it ended: no longer the guard's
            time.sleep(lease_s / 4)
        wait_for(lambda: not _alive(job), timeout=READY_S)
        # never before the end of the last renewal's lease (same clock: theta >= 0)
        assert time.monotonic() >= last + lease_s
        wait_for(lambda: job.pid in guard.fenced(), timeout=READY_S)
        assert guard.fenced() == {job.pid}
        assert _alive(groups[1])  # listed, then unlisted: left alone
        assert guard.proc.poll() is None  # it fenced, it goes on guarding
    finally:
        guard.close()


def test_a_late_renewal_does_not_bring_the_lease_back(
    groups: list[subprocess.Popen[bytes]],
) -> None:
    lease_s = 1.0
    guard = _GuardProcess()
    try:
        first = _sleeper()
        groups.append(first)
        sent = time.monotonic()
        guard.send(f"L {sent!r} {sent!r} {lease_s!r}")
        guard.send(f"+{first.pid}")
        wait_for(lambda: first.pid in guard.fenced(), timeout=READY_S)
        # a renewal sent just after the first one, received only now: its
        # lease ended before it arrived; a job listed after it dies at once
        guard.send(f"L {sent + 0.1!r} {time.monotonic()!r} {lease_s!r}")
        second = _sleeper()
        groups.append(second)
        guard.send(f"+{second.pid}")
        wait_for(lambda: second.pid in guard.fenced(), timeout=READY_S)
        wait_for(lambda: not _alive(second), timeout=READY_S)
        # a fresh renewal does: a job listed after it lives on
        fresh = time.monotonic()
        guard.send(f"L {fresh!r} {fresh!r} {600.0!r}")
        third = _sleeper()
        groups.append(third)
        guard.send(f"+{third.pid}")
        guard.send(f"L {fresh!r} {fresh!r} {600.0!r}")  # a line after it: the + was read
        guard.close()  # the worker is gone: its last group is killed
        wait_for(lambda: not _alive(third), timeout=READY_S)
        assert third.pid in guard.fenced()
    finally:
        if guard.proc.poll() is None:
            guard.close()


def test_the_guard_s_rules_on_explicit_clock_readings(
    groups: list[subprocess.Popen[bytes]],
) -> None:
    """Lease and guard driven with made-up clock readings: the agent's clock is
    1000 s behind the worker's, the smallest one-way delay 0.2 s."""
    lease = Lease()
    assert lease.expired(0.0)  # no renewal yet: no lease
    assert lease.renew(100.0, 1100.5, 10.0)  # theta 1000.5
    assert lease.deadline == 1110.5
    assert lease.renew(102.0, 1102.2, 10.0)  # theta 1000.2: a faster message
    assert lease.deadline == 1112.2
    assert not lease.renew(103.0, 1113.5, 10.0)  # it would end at 1113.2: late, ignored
    assert lease.deadline == 1112.2 and lease.theta == pytest.approx(1000.2)

    # a restarted agent on a host booted later (its clock 1100 s behind): its
    # renewals are ones of another clock, not late ones of the first
    assert not lease.renew(5.0, 1105.0, 10.0)  # as the first agent's: ignored
    assert lease.renew(5.0, 1105.0, 10.0, epoch="b")
    assert lease.deadline == 1115.0 and lease.theta == 1100.0

    read, write = os.pipe()
    try:
        guard = Guard(write)
        job = _sleeper()
        groups.append(job)
        guard.line(b"L 100.0 1100.2 10.0 a1b2c3d4", now=1100.2)
        guard.line(f"+{job.pid}".encode(), now=1100.3)
        assert guard.timeout(1105.2) == pytest.approx(5.0)
        guard.line(b"L 101.0 1115.0 10.0 a1b2c3d4", now=1115.0)  # late: no renewal
        assert guard.live == set()  # the lease had ended (1110.2): fenced
        wait_for(lambda: not _alive(job), timeout=READY_S)
        assert os.read(read, 100) == f"F {job.pid}\n".encode()
    finally:
        os.close(read)
        os.close(write)


def test_a_job_started_but_not_yet_listed_dies_with_the_worker(
    groups: list[subprocess.Popen[bytes]],
) -> None:
    """The worker died between starting a job and listing it: the job carries
    the guard's mark in its environment, and the guard finds and kills it."""
    guard = _GuardProcess()
    try:
        marked = subprocess.Popen(
            ["sh", "-c", "sleep 300 & wait"],
            start_new_session=True,
            env=os.environ | {"HTCSIM_GUARD": str(guard.proc.pid)},
        )
        groups.append(marked)
        stranger = _sleeper()  # not this guard's
        groups.append(stranger)
        guard.close()  # the worker is gone
        wait_for(lambda: not _alive(marked), timeout=READY_S)
        assert marked.pid in guard.fenced()
        assert _alive(stranger)
    finally:
        if guard.proc.poll() is None:
            guard.close()
