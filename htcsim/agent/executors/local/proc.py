"""Processes known by pid *and* start time, so that a reused pid is never mistaken for them.

Why: the shepherd and the agent act on processes they did not just create (a
job adopted after a restart of the shepherd, the shepherd itself seen from
the agent), and Linux reuses pids (``pid_max`` may be as low as 32768). A
process is therefore recorded as (pid, start time in clock ticks since boot,
field 22 of ``/proc/<pid>/stat``) and acted on through a pidfd opened while
that pair still matched: a pidfd keeps naming the same process even after its
pid is reused, its signals cannot reach another one, and it becomes readable
when the process exits (Linux 5.3).

Only the standard library: the shepherd imports it and must start fast.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import time
from typing import NamedTuple

PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, arg: int | bytes) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def become_subreaper() -> None:
    """Make this process a child subreaper: orphans of its descendants are
    reparented to it (not to init), so it can wait for them."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_name(name: str) -> None:
    """This process's name as ``ps -o comm`` and ``/proc/<pid>/comm`` show it (15 bytes)."""
    with contextlib.suppress(OSError):
        _prctl(PR_SET_NAME, name.encode()[:15])


class Stat(NamedTuple):
    """What ``/proc/<pid>/stat`` says of a process (the fields the shepherd uses)."""

    ppid: int
    pgrp: int
    sid: int
    state: str
    """R, S, D, T (stopped), Z (zombie: ended, not yet reaped)..."""
    start: int
    """Start time, clock ticks after boot: with the pid, the process's identity."""


def _parse(data: bytes) -> Stat:
    rest = data[data.rindex(b")") + 2 :].split()
    return Stat(int(rest[1]), int(rest[2]), int(rest[3]), rest[0].decode(), int(rest[19]))


def stat(pid: int) -> Stat | None:
    """The process ``pid`` as ``/proc`` shows it now, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return _parse(f.read())
    except (OSError, ValueError, IndexError):
        return None


def cpu_ticks(pid: int) -> int | None:
    """User plus system CPU time of ``pid`` so far, clock ticks; None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        rest = data[data.rindex(b")") + 2 :].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, ValueError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` (see ``Stat.start``), None if it does not exist."""
    found = stat(pid)
    return None if found is None else found.start


def proc_table() -> dict[int, Stat]:
    """pid -> Stat of every process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                table[int(name)] = _parse(f.read())
        except (OSError, ValueError, IndexError):
            continue
    return table


def environ_job(pid: int) -> int | None:
    """The HTCSIM_JOB_ID a process was started with, if it kept it."""
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/environ", "rb") as f:
        for item in f.read().split(b"\0"):
            if item.startswith(b"HTCSIM_JOB_ID="):
                return int(item.split(b"=", 1)[1])
    return None


def readable(fd: int, timeout: float = 0.0) -> bool:
    """Whether ``fd`` is readable within ``timeout`` seconds (a pidfd: its process ended)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(timeout, 0.0) * 1000))


class Process:
    """A process held by a pidfd, opened only if its start time is the one recorded."""

    def __init__(self, pid: int, start: int, fd: int) -> None:
        self.pid, self.start, self.fd = pid, start, fd

    @classmethod
    def open(cls, pid: int, start: int) -> Process | None:
        """The process (pid, start), or None if it is gone (or ``pid`` is now another's)."""
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return None
        # checked after the open: the pidfd names whatever had the pid then
        if start_time(pid) != start:
            os.close(fd)
            return None
        return cls(pid, start, fd)

    def ended(self, timeout: float = 0.0) -> bool:
        """Whether it has exited (a zombie has: it runs nothing any more)."""
        return self.fd < 0 or readable(self.fd, timeout)

    def state(self) -> str:
        """Its ``/proc`` state letter, "" once it has ended."""
        if self.ended():
            return ""
        found = stat(self.pid)
        return found.state if found is not None and found.start == self.start else ""

    def kill(self, sig: int = signal.SIGKILL) -> bool:
        """Send ``sig`` to this process (never to one that reused its pid); False if it ended."""
        if self.fd < 0:
            return False
        try:
            signal.pidfd_send_signal(self.fd, sig)
        except ProcessLookupError:
            return False
        return True

    def kill_and_wait(self, timeout: float) -> bool:
        """SIGKILL, then wait up to ``timeout`` seconds for it to end; True once it has."""
        self.kill()
        deadline = time.monotonic() + timeout
        while not self.ended(0.05):
            if time.monotonic() > deadline:
                return False
        return True

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
