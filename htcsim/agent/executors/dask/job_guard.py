"""Kills a Dask worker's jobs when the worker dies: ``python -m
htcsim.agent.executors.dask.job_guard``, started by the worker, reading its stdin.

Why a process of its own: a worker killed with SIGKILL cannot clean up, and
its jobs (each a session of its own) would go on running, unseen, while the
agent requeues them elsewhere. The worker writes ``+PGID`` when it starts a
job and ``-PGID`` when the job ended; when the worker dies its end of the
pipe closes, and the guard kills every process group still listed (the whole
job, the processes it started included), then exits. It ignores SIGTERM,
SIGINT and SIGHUP (the worker starts it so, see ``worker._tell_guard``): a
batch system that ends the worker's job (``scancel``, its walltime) signals
all of the job's processes, and a guard that died with them would leave a
job the signal missed running on unseen; SIGKILL still ends it. It costs a line per
job start and end, where a wrapper process per job (``setpriv
--pdeathsig``) cost an exec per job and reached the job's first process only.

Only the standard library: it runs beside every worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def main() -> None:
    # the worker starts it with these blocked (worker.GUARD_SPARED); ignored
    # as well, for a guard started by hand
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    live: set[int] = set()
    for line in sys.stdin.buffer:
        text = line.strip()
        if not text:
            continue
        pgid = int(text[1:])
        if text[:1] == b"+":
            live.add(pgid)
        else:
            live.discard(pgid)
    for pgid in live:  # the worker is gone
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    main()
