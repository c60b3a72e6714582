"""What runs inside a Dask worker for the agent: the job processes of that node.

Why these functions: with the Dask backend each worker is a node. The agent
calls them on the worker the kernel chose (``Client.run`` with that worker
only): ``launch_jobs`` starts a pass's jobs there as processes of their own
session, reaped by one thread that polls their pidfds and records the
exits it finds together in one go (one journal write, one word to the
guard); ``wait_exits``
(a coroutine, on the worker's event loop) answers as soon as exits are
there. A job is not a Dask task: the scheduler's task machinery would cost
more than the job (``/bin/true``) and the kernel, not Dask, decides where
and when it runs. The table of what runs and how it ended outlives the
agent's client: an agent restarted after a crash asks every worker what
still runs and how the rest ended, as it asks the local shepherd. A job dies
with its worker process: a worker that is killed is a lost node whose jobs
are requeued elsewhere, and they must not also go on running, unseen, where
it was; a small guard process (``htcsim.agent.executors.dask.job_guard``) that the worker
feeds the process groups of its jobs kills those still running when the
worker's end of its pipe closes, and also when the agent's lease on this
worker ends (``lease.py``): ``renew`` passes each renewal on to it, and a
launch carries one too. A job the guard fenced is reported as lost (the
agent requeues it if it still places it here), never as ended; a launch
that arrives after the lease ended starts nothing.

A worker that stops drains its node (``stop_jobs``, run by its nanny's
``stop_grace`` plugin, or by its own SIGTERM handler without a nanny): its
jobs get SIGTERM and the grace, then SIGKILL; nothing new starts there. A job
that ends meanwhile with an exit status of 128 or less (``exit 0``: completed,
``exit 3``: failed) ended on its own and is reported as it ended, as any exit;
one that ends by a signal, or with a status above 128 (128 + N: how a shell
reports that signal N ended it, ``exit 143`` after a checkpoint on SIGTERM),
was stopped by the drain and is not reported: the worker's loss requeues it
by the policy, as Slurm requeues a preempted job. The drain ends once every
exit reported is released by the agent (at most ``STOP_RELEASE_WAIT_S``): an
exit of a job that ended on its own reaches the agent before the worker goes.

Only the standard library (and the shepherd's record format): it is imported
in the worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from htcsim.agent.executors.base import exit_record
from htcsim.agent.executors.dask.exit_journal import ExitJournal, journal_path
from htcsim.agent.executors.dask.lease import Lease

_lock = threading.Lock()
_running: dict[int, int] = {}  # job id -> pid (the process group id)
_runs: dict[int, str] = {}  # job id -> the agent's token for this run of it
_exits: dict[int, dict[str, Any]] = {}  # ended, not yet released by the agent
_seq = 0  # exits recorded so far; each record carries its number ("seq")
_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
_guard: subprocess.Popen[bytes] | None = None  # kills our jobs if this worker dies
_stopping = False  # the worker drains (stop_jobs): no job starts, drained jobs are not reported
_journal: ExitJournal | None = None  # this worker's exits, in a file that outlives it
_earlier: dict[int, dict[str, Any]] = {}  # exits an earlier process of this worker kept
_lease = Lease()  # the guard's lease, kept here too: no job starts once it ended
_fenced: set[int] = set()  # process groups the guard killed (its ``F PGID`` lines)
_from_guard = b""  # a partial line the guard wrote
GUARD_VAR = "HTCSIM_GUARD"
FENCED = "fenced: the agent's lease on its worker ended (the worker hung or was cut off)"
STOP_KILL_WAIT_S = 5.0
"""After SIGKILL, how long ``stop_jobs`` waits for the jobs to be reaped."""
STOP_RELEASE_WAIT_S = 3.0
"""Once its jobs are gone, how long ``stop_jobs`` waits for the agent to
release the exits this worker reported (the agent releases every half second
once it has recorded them); then the worker stops all the same (the exits
stay in its journal)."""
DRAINED_ABOVE = 128
"""During a drain, a job whose exit status (128 + N for signal N) is above
this was stopped by the drain, and is requeued; at or below, it ended on its
own and is recorded as it ended."""


class _QuietCalls(logging.Filter):
    """Drops the worker's "Run out-of-band function" line for the agent's
    calls that come with every pass: hundreds a second on a busy node, they
    flooded the worker's log and cost it a formatted write each."""

    QUIET = frozenset({"launch_jobs", "wait_exits"})

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (
            record.msg == "Run out-of-band function %r"
            and isinstance(args, tuple)
            and bool(args)
            and args[0] in self.QUIET
        )


logging.getLogger("distributed.worker").addFilter(_QuietCalls())


def drained(record: dict[str, Any]) -> bool:
    """Whether a job that ended during a drain was stopped by it (a signal, a
    status above 128, or fenced by the guard): requeued, not recorded."""
    return bool(record.get("lost")) or int(record.get("code", 0)) > DRAINED_ABOVE


def _tell_guard(line: str) -> None:
    """``+PGID`` (a job started) or ``-PGID`` (it ended) to the guard, started
    at the first job (and again if it died); under ``_lock``."""
    global _guard
    for _ in range(2):
        if _guard is None or _guard.poll() is not None:
            _guard = _spawn_guard()
        assert _guard.stdin is not None
        try:
            _guard.stdin.write(line.encode() + b"\n")
            _guard.stdin.flush()
            return
        except OSError:
            _guard = None


GUARD_SPARED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""Signals the guard never receives: a batch system ending the worker's job
(``scancel``, a walltime) signals every process of it, and the guard must
outlive the worker to kill the jobs those signals missed. SIGKILL still ends it."""


def _spawn_guard() -> subprocess.Popen[bytes]:
    """The guard, started with ``GUARD_SPARED`` blocked: a signal mask is
    inherited through fork and exec, so they are blocked from its first
    instruction (a handler or a shell ``trap`` set once it runs leaves a
    window in which a signal sent to the whole job kills it). The calling
    thread blocks them for the instant of the fork only; one sent meanwhile
    is delivered when the mask is restored."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, GUARD_SPARED)
    try:
        guard = subprocess.Popen(
            [sys.executable, "-m", "htcsim.agent.executors.dask.job_guard"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # ``F PGID``: the groups it fenced
            start_new_session=True,  # not in the worker's group: it outlives it
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    assert guard.stdout is not None
    os.set_blocking(guard.stdout.fileno(), False)
    return guard


def _guard_pid() -> str:
    """The guard's pid, which every job carries in ``HTCSIM_GUARD`` from its
    exec on: a worker that dies after starting a job and before listing it
    (``+PGID``) leaves a job its guard still finds and kills."""
    with _lock:
        if _guard is None or _guard.poll() is not None:
            _tell_guard("")  # starts it
        assert _guard is not None
        return str(_guard.pid)


def _read_fenced() -> None:
    """The groups the guard says it fenced (it writes before it kills, so a
    job reaped after its kill is found here); under ``_lock``."""
    global _from_guard
    if _guard is None or _guard.stdout is None:
        return
    fd = _guard.stdout.fileno()
    while True:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            return
        if not data:
            break
        *lines, _from_guard = (_from_guard + data).split(b"\n")
        for line in lines:
            if line.startswith(b"F "):
                _fenced.add(int(line[2:]))


def renew(sent: float, lease_s: float, epoch: str) -> bool:
    """A lease renewal from the agent (its clock at ``sent``; ``epoch``: its
    start): stamped with this machine's monotonic clock and passed on to the
    guard. False if it came too late to extend the lease (ignored)."""
    received = time.monotonic()
    with _lock:
        _tell_guard(f"L {sent!r} {received!r} {lease_s!r} {epoch}")
        return _lease.renew(sent, received, lease_s, epoch)


def _record(
    job_id: int, run: str, code: int, sig: int, cpu: float, rss: float, lost: str = ""
) -> None:
    """One exit (``_record_many``)."""
    _record_many([(job_id, run, code, sig, cpu, rss, lost)])


Ended = tuple[int, str, int, int, float, float, str]
"""An exit to record: job id, run, code, signal, CPU seconds, peak MiB, lost (why)."""


def _record_many(ended: list[Ended]) -> None:
    """Keep these exits (each numbered, with its run's token: a job requeued
    and placed here again is another run), journaled in one write before any
    is reported, and wake whoever waits for exits. A job the guard fenced is
    reported lost: the agent requeues it."""
    global _seq
    with _lock:
        pids = {job_id: _running.pop(job_id, None) for job_id, *_ in ended}
        gone = [f"-{pid}" for pid in pids.values() if pid is not None]
        if gone:
            _tell_guard("\n".join(gone))
            _read_fenced()
        records = []
        for job_id, run, code, sig, cpu, rss, lost in ended:
            pid = pids[job_id]
            if pid is not None and pid in _fenced:
                _fenced.discard(pid)
                lost = FENCED
            record = exit_record(job_id, code, sig, cpu, rss, lost=lost)
            record["run"] = run
            _runs.pop(job_id, None)
            if _stopping and drained(record):  # stopped by the drain: the worker's loss requeues it
                continue
            _seq += 1
            record["seq"] = _seq
            _exits[job_id] = record
            records.append(record)
        if not records:
            return
        if _journal is not None:
            _journal.append_many(records)
        waiters = list(_waiters)
    for loop, event in waiters:
        with contextlib.suppress(RuntimeError):  # its loop closed
            loop.call_soon_threadsafe(event.set)


def _attach(dask_worker: Any) -> None:
    """Open this worker's exit journal (once; ``dask_worker``: the Worker,
    which the ``run`` handler passes to a function that names it) and take in
    the exits an earlier process of this worker recorded and the agent did
    not release. Under ``_lock``."""
    global _journal
    if _journal is not None or dask_worker is None:
        return
    scheduler = str(getattr(getattr(dask_worker, "scheduler", None), "address", ""))
    journal = ExitJournal(journal_path(scheduler, str(dask_worker.name)))
    _earlier.update(journal.load())
    journal.rewrite(_earlier)  # what a new line of this process's joins
    _journal = journal


def launch_jobs(
    jobs: list[dict[str, Any]], sent: float, lease_s: float, epoch: str, dask_worker: Any = None
) -> list[int]:
    """Start these jobs here (``Client.run``: on the worker's event loop
    thread); returns their pids, 0 for a job that could not start (its exit,
    126 or 127 with the reason in its stderr, is recorded at once). The call
    is a lease renewal too (``sent``: the agent's clock, ``epoch``: its start); once the lease has
    ended nothing starts and each job is reported lost (the agent requeues it,
    or has already). While the worker stops nothing starts (0, no exit): the
    worker's loss requeues them."""
    if _stopping:
        return [0 for _ in jobs]
    with _lock:
        _attach(dask_worker)
    renew(sent, lease_s, epoch)
    marker = {GUARD_VAR: _guard_pid()}
    pids = []
    started: list[tuple[int, str, subprocess.Popen[bytes]]] = []
    for job in jobs:
        with _lock:
            fenced = _lease.expired(time.monotonic())
        if fenced:
            _record(int(job["job"]), str(job.get("run", "")), -1, 0, -1.0, -1.0, FENCED)
            pids.append(0)
            continue
        process = _start(job, marker)
        pids.append(0 if process is None else process.pid)
        if process is not None:
            started.append((int(job["job"]), str(job.get("run", "")), process))
    if started:
        # listed with the guard in one write for the batch (until then each
        # carries the guard's mark, which the guard also kills by), then
        # watched: an exit is recorded only once its job is listed
        with _lock:
            for job_id, run, process in started:
                _running[job_id] = process.pid
                _runs[job_id] = run
            _tell_guard("\n".join(f"+{process.pid}" for _, _, process in started))
        for job_id, run, process in started:
            _watch(job_id, run, process)
    return pids


async def stop_jobs(grace_s: float) -> int:
    """The worker is stopping: drain its node. SIGTERM to every job's process
    group, then, after ``grace_s`` seconds, SIGKILL to those left; a job
    stopped so is not reported (the agent requeues it when the worker is gone,
    as for any lost node), one that ended on its own is (``drained``). Once
    the jobs are gone, waits (at most ``STOP_RELEASE_WAIT_S``) for the agent
    to release every exit reported, so that none leaves with the worker.
    Returns how many jobs ran. A coroutine: the worker's event loop (its
    heartbeats, the agent's calls) goes on meanwhile, so the node is not lost
    while its jobs still run. A second call (a nanny's teardown and the
    worker's own SIGTERM handler) waits as long and sends nothing again."""
    global _stopping
    loop = asyncio.get_running_loop()
    with _lock:
        again = _stopping
        _stopping = True
        groups = list(_running.values())
    steps = () if again else ((signal.SIGTERM, grace_s), (signal.SIGKILL, STOP_KILL_WAIT_S))
    for sig, wait_s in steps:
        with _lock:
            left = list(_running.values())
        for pgid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            with _lock:
                if not _running:
                    break
            await asyncio.sleep(0.05)
        else:
            continue
        break
    deadline = loop.time() + (grace_s + STOP_KILL_WAIT_S if again else 0.0) + STOP_RELEASE_WAIT_S
    while loop.time() < deadline:
        with _lock:
            if not _running and not _exits:
                break
        await asyncio.sleep(0.05)
    return len(groups)


LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def _open_log(path: str) -> int:
    """A job's log, opened for appending (its directory made on first use:
    no look at it for every job)."""
    try:
        return os.open(path, LOG_FLAGS, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, LOG_FLAGS, 0o666)


def _start(job: dict[str, Any], marker: dict[str, str]) -> subprocess.Popen[bytes] | None:
    """Start one job (``marker``: the guard's mark for its environment); None
    if it could not start, its exit (126 or 127) recorded at once."""
    job_id = int(job["job"])
    run = str(job.get("run", ""))
    fds: list[int] = []
    try:
        fds.append(_open_log(job["stdout"]))
        same = job["stderr"] == job["stdout"]
        fds.append(fds[0] if same else _open_log(job["stderr"]))
        try:
            # Popen, not posix_spawn: it changes to the job's directory in the
            # child (a worker's threads share one current directory)
            return subprocess.Popen(
                job["argv"],
                cwd=job["cwd"],
                env=job["env"] | marker,
                stdin=subprocess.DEVNULL,
                stdout=fds[0],
                stderr=fds[1],
                start_new_session=True,
            )
        except OSError as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            message = f"htcsim: cannot run {job['argv'][0]}: {exc.strerror}\n"
            with contextlib.suppress(OSError):
                os.write(fds[-1], message.encode())
            _record(job_id, run, code, 0, -1.0, -1.0)
            return None
    except OSError as exc:  # the log files
        _record(job_id, run, 126, 0, -1.0, -1.0)
        with contextlib.suppress(OSError), open(job["stderr"], "ab") as err:
            err.write(f"htcsim: cannot open the job's logs: {exc}\n".encode())
        return None
    finally:
        for fd in set(fds):
            os.close(fd)


_reaper: select.epoll | None = None  # one thread reaps every job whose pidfd is readable
_watched: dict[int, tuple[int, str, subprocess.Popen[bytes]]] = {}  # pidfd -> job, run, process


def _watch(job_id: int, run: str, process: subprocess.Popen[bytes]) -> None:
    """Reap the job when it ends and record its exit: through a pidfd that
    the one reaper thread polls (a thread per job, where pidfds are missing).
    The process object is kept until it is reaped: one dropped unreaped is
    waited for by ``subprocess``'s own clean-up, and its rusage lost."""
    global _reaper
    try:
        fd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # no pidfds (not Linux >= 5.3), or no fd left
        threading.Thread(target=_wait, args=(job_id, run, process), daemon=True).start()
        return
    with _lock:
        if _reaper is None:
            _reaper = select.epoll()
            threading.Thread(
                target=_reap, args=(_reaper,), name="htcsim-reaper", daemon=True
            ).start()
        _watched[fd] = (job_id, run, process)
        _reaper.register(fd, select.EPOLLIN)


def _reap(poller: select.epoll) -> None:
    """The reaper thread: every job whose process ended (its pidfd readable)
    is reaped, and the exits found together are recorded together."""
    while True:
        ready = poller.poll()
        ended: list[Ended] = []
        for fd, _ in ready:
            with _lock:
                entry = _watched.pop(fd, None)
                if entry is not None:
                    poller.unregister(fd)
            if entry is None:
                continue
            os.close(fd)
            job_id, run, process = entry
            ended.append((job_id, run, *_reaped(process)))
        if ended:
            _record_many(ended)


def _wait(job_id: int, run: str, process: subprocess.Popen[bytes]) -> None:
    _record(job_id, run, *_reaped(process))


def _reaped(process: subprocess.Popen[bytes]) -> tuple[int, int, float, float, str]:
    """Wait for the process (it has ended, or is about to): code, signal, CPU
    seconds and peak MiB (rusage), and why it is lost ("" if it is not)."""
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except ChildProcessError:  # reaped by someone else: its status is unknown
        process.returncode = -1
        return -1, 0, -1.0, -1.0, "its status was taken by another waiter in the worker"
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, for rusage
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    code = 128 + sig if sig else os.WEXITSTATUS(status)
    return code, sig, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, ""


async def wait_exits(after: int, timeout: float, linger: float = 0.0) -> list[dict[str, Any]]:
    """The exits numbered above ``after``, as soon as there is one (at most
    ``timeout`` seconds; then maybe none), and those that follow it within
    ``linger`` seconds: one answer for exits that come close together."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    waiter = (loop, event)
    with _lock:
        _waiters.append(waiter)
    try:
        deadline = loop.time() + timeout
        while True:
            event.clear()  # before looking: a set() after the look wakes the wait
            with _lock:
                new = [r for r in _exits.values() if r["seq"] > after]
            left = deadline - loop.time()
            if new and linger > 0:
                await asyncio.sleep(linger)
                linger = 0.0
                continue
            if new or left <= 0:
                return sorted(new, key=lambda r: int(r["seq"]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), left)
    finally:
        with _lock:
            _waiters.remove(waiter)


def signal_job(job_id: int, sig: int) -> bool:
    """Signal a job's whole process group; False if it does not run here."""
    with _lock:
        pid = _running.get(job_id)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    return True


def job_table(dask_worker: Any = None) -> dict[str, Any]:
    """What runs here and the exits not yet released (for an agent's
    restart), and apart, ``earlier``: those an earlier process of this worker
    recorded (the agent takes one only for the very run it placed)."""
    with _lock:
        _attach(dask_worker)
        return {
            "running": dict(_running),
            "runs": dict(_runs),
            "exits": list(_exits.values()),
            "earlier": list(_earlier.values()),
        }


def release_jobs(job_ids: list[int]) -> None:
    """The agent recorded these exits: forget them."""
    with _lock:
        mine = [j for j in map(int, job_ids) if j in _exits or j in _earlier]
        for job_id in mine:
            _exits.pop(job_id, None)
            _earlier.pop(job_id, None)
        if mine and _journal is not None:  # every worker hears of every release
            _journal.release(mine, _earlier | _exits)


def read_log(path: str, tail: int) -> bytes:
    """The last ``tail`` bytes of a log file of this node."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - tail, 0))
        return f.read()
