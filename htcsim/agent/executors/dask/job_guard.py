"""Kills a Dask worker's jobs when the worker dies or its lease expires:
``python -m htcsim.agent.executors.dask.job_guard``, started by the worker,
reading its stdin.

Why a process of its own: a worker killed with SIGKILL cannot clean up, and
one that hangs (stopped, or cut from the network) cannot act at all, while
the agent requeues its jobs elsewhere: they would go on running, unseen, and
the same job would run twice. The worker writes ``+PGID`` when it starts a
job, ``-PGID`` when the job ended, and ``L SENT RECEIVED LEASE_S EPOCH`` for
each lease renewal from the agent (``lease.py``: the agent's clock at send,
the worker's monotonic clock at receipt, this machine's, and the agent's
start). The guard kills every process group still listed (the whole job,
the processes it started included) when the worker's end of the pipe
closes, and also, on its own timer, when its lease ends: a hung worker's
jobs die without the worker's help, before the agent requeues them. A group
listed while the lease has ended is killed at once. Before killing a group
it writes ``F PGID`` on its stdout, so the worker reports that job as fenced
(requeued), not as ended. Every job carries ``HTCSIM_GUARD=<guard pid>`` in
its environment from its exec on, and the guard also kills the processes
that carry it: a worker that died between starting a job and listing it
leaves no job behind.
It ignores SIGTERM, SIGINT and SIGHUP (the worker starts it with them
blocked, see ``worker._spawn_guard``): a batch system that ends the worker's
job (``scancel``, its walltime) signals all of the job's processes, and a
guard that died with them would leave a job the signal missed running on
unseen; SIGKILL still ends it.

Only the standard library: it runs beside every worker.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

from htcsim.agent.executors.dask.lease import Lease

FENCE_LOOK_AGAIN_S = 0.05
"""After a kill, when the guard looks again for processes with its mark."""


class Guard:
    """The process groups of one worker's jobs and the lease they run under."""

    def __init__(self, out: int) -> None:
        self.out = out  # where ``F PGID`` goes (the worker reads it)
        self.live: set[int] = set()
        self.lease = Lease()
        self.marker = f"HTCSIM_GUARD={os.getpid()}".encode()

    def line(self, text: bytes, now: float) -> None:
        """One line from the worker."""
        text = text.strip()
        if not text:
            return
        if text[:1] == b"L":
            sent, received, lease_s, *epoch = text[1:].split()
            self.lease.renew(float(sent), float(received), float(lease_s), b"".join(epoch).decode())
        elif text[:1] == b"+":
            self.live.add(int(text[1:]))
        elif text[:1] == b"-":
            self.live.discard(int(text[1:]))
        if self.live and self.lease.expired(now):
            self.fence("lease expired")

    def fence(self, why: str) -> None:
        """SIGKILL to every listed group and to the group of every process
        that carries this guard's mark (a job started and not yet listed when
        the worker died or hung), each told to the worker first; again until
        a look finds none (a job being started then execs a moment later)."""
        killed: set[int] = set()
        groups = self.live | self.marked()
        while groups - killed:
            for pgid in sorted(groups - killed):
                with contextlib.suppress(OSError):  # the worker is gone: nobody reads
                    os.write(self.out, f"F {pgid}\n".encode())
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
            killed |= groups
            time.sleep(FENCE_LOOK_AGAIN_S)
            groups = self.marked()
        self.live = set()
        if killed:
            print(f"htcsim job guard: {why}: killed {len(killed)} job(s)", file=sys.stderr)

    def marked(self) -> set[int]:
        """The process groups of the processes whose environment has this
        guard's mark (``HTCSIM_GUARD``, set by the worker on each job)."""
        out: set[int] = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if self.marker in f.read().split(b"\0"):
                        out.add(os.getpgid(int(entry)))
            except OSError:  # gone, or not ours
                continue
        return out

    def timeout(self, now: float) -> float | None:
        """How long to wait for input: until the lease ends while groups live."""
        return self.lease.left(now) if self.live else None


def main() -> None:
    # the worker starts it with these blocked (worker.GUARD_SPARED); ignored
    # as well, for a guard started by hand
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    source = sys.stdin.fileno()
    os.set_blocking(sys.stdout.fileno(), False)  # a hung worker's full pipe never blocks a kill
    guard = Guard(sys.stdout.fileno())
    pending = b""
    while True:
        ready, _, _ = select.select([source], [], [], guard.timeout(time.monotonic()))
        if not ready:  # the lease ended with no word from the worker
            guard.fence("lease expired")
            continue
        data = os.read(source, 65536)
        if not data:
            break
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            guard.line(line, time.monotonic())
    guard.fence("the worker is gone")


if __name__ == "__main__":
    main()
