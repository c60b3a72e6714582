"""The local executor: runs the agent's jobs as real processes on this machine.

Every job runs under a tiny POSIX ``sh`` wrapper in its own session (so its
own process group)::

    htcsim-job-<id> -c 'trap true TERM INT ...; [ulimit -v KIB;] "$@"; rc=$?;
                        echo $rc > RUN_DIR/<id>.exit; exit $rc' htcsim-job-<id> ARGV...

Why a wrapper rather than exec'ing the job directly:

* the job outlives a crash of the agent (own session, nothing ties it to the
  agent), and the wrapper writes the job's exit code to ``<id>.exit``, so an
  agent restarted after ``kill -9`` still learns how the job ended;
* its argv[0] ``htcsim-job-<id>`` (the script names the exit file, which ties
  it to this run dir) lets :meth:`LocalExecutor.recover` find a job that is
  still running by scanning /proc, without trusting a stored pid that may
  have been reused;
* the trap keeps the wrapper alive when the whole group is signalled (SIGTERM
  at cancel, SIGUSR1 before the walltime...), so it still records the exit
  code, while the job itself gets the default action: a caught trap is reset
  to default in the child (``trap '' SIG`` would be inherited as ignored).

Spawning uses :class:`subprocess.Popen` without ``preexec_fn`` so CPython
keeps its fast vfork path; CPU pinning is inherited from the spawning
thread's own affinity, set just around the spawn.

Processes are watched through pidfds (one poll loop in one daemon thread):
a readable pidfd means the process has exited, and the executor then reaps
exactly that pid with ``os.wait4(pid, WNOHANG)`` for its rusage. Why not the
``wait4(-1)`` loop: it would also reap children that other code of the agent
spawns (and fight ``subprocess`` over them), and it cannot be woken up to
stop; pidfds work for adopted processes (not our children) too, without
polling. Where pidfds are unavailable (Linux < 5.3) the loop polls every
0.2 s instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import select
import shlex
import signal as signal_mod
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import psutil

logger = logging.getLogger(__name__)

MARKER_PREFIX = "htcsim-job-"
"""argv[0] (and ``$0``) of every job wrapper; ``recover`` matches on it."""

_WRAPPER_SHELL = "/bin/sh"
_POLL_FALLBACK_S = 0.2
_TRAPPED_SIGNALS = "TERM INT HUP QUIT USR1 USR2 ALRM"
"""Signals the engine may send to a job's group that must not kill the
wrapper before it writes the exit file. SIGKILL cannot be trapped: a job
killed that way has no exit file, its exit comes from the wait status (or,
for an adopted job, from remembering that we sent it)."""

MemoryLimitMode = Literal["cgroup-v2", "rlimit-as", "off"]


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one job; the caller has expanded placeholders."""

    job_id: int
    argv: list[str]
    cwd: str
    env: dict[str, str]
    """The complete environment of the job (nothing is inherited from the agent)."""
    stdout: str
    """Absolute path, opened in append mode; its folder must exist."""
    stderr: str
    cpus: tuple[int, ...] = ()
    """Physical CPU ids to pin to; empty: no pinning."""
    mem_limit_mib: int = 0
    """0: no limit."""


@dataclass(frozen=True)
class JobExit:
    """How a job ended, as the engine records it.

    ``exit_code`` follows the shell convention (128+N when killed by signal N);
    -1 means unknown: an adopted job whose wrapper left no exit file (killed
    with SIGKILL by someone else, or the machine lost the file). The engine
    applies its requeue policy for unknown exits.
    """

    job_id: int
    exit_code: int
    signal: int
    """N if the job was killed by signal N, else 0. Derived from the exit code
    when the wrapper reports it, so a job that voluntarily exits with 129..192
    looks signalled: the shell cannot tell the two apart either."""
    end_time: float
    cpu_time_s: float
    """user+system of the job and its waited children; -1 if unknown."""
    max_rss_mib: float
    """Peak resident set of the largest process of the job (rusage semantics); -1 if unknown."""
    recovered: bool = False
    """Read back after an agent restart (so no rusage)."""


@dataclass(frozen=True)
class Recovered:
    """What an agent restart finds for a job its store says is running."""

    job_id: int
    status: Literal["running", "exited", "lost"]
    pid: int | None
    exit: JobExit | None
    """Set for "exited"."""


class LaunchError(RuntimeError):
    """A job could not be started; the message names the job and the cause."""


def cpu_ids() -> list[int]:
    """The CPUs this agent may use (its affinity), for the node inventory."""
    return sorted(os.sched_getaffinity(0))


def total_memory_mib() -> int:
    """Physical memory of the machine in MiB, for the node inventory."""
    return int(psutil.virtual_memory().total // 2**20)


def detect_memory_cgroup(
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    cgroup_root: Path = Path("/sys/fs/cgroup"),
) -> tuple[Path | None, str]:
    """The cgroup v2 folder under which per-job cgroups can be made, and why (not).

    Needs the unified hierarchy mounted at ``cgroup_root``, the agent's own
    cgroup (the ``0::/path`` line) writable, and the memory controller enabled
    for its children (enabling it is tried). The second value is a one-line
    explanation for the log. The paths are parameters so that tests can point
    them at a fake tree.
    """
    if not (cgroup_root / "cgroup.controllers").is_file():
        return None, f"no cgroup v2 unified hierarchy at {cgroup_root}"
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError as exc:
        return None, f"cannot read {proc_cgroup}: {exc}"
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    if rel is None:
        return None, f"{proc_cgroup} has no cgroup v2 entry"
    base = cgroup_root / rel.strip().lstrip("/")
    if not base.is_dir() or not os.access(base, os.W_OK):
        return None, f"the agent's cgroup {base} is not writable"
    subtree = base / "cgroup.subtree_control"
    try:
        if "memory" not in subtree.read_text().split():
            # Fails with EBUSY when the cgroup holds processes and is not the
            # root (cgroup v2's no-internal-processes rule): then run the
            # agent in a delegated cgroup of its own (e.g. systemd-run
            # --scope -p Delegate=yes) to get cgroup limits.
            subtree.write_text("+memory")
            if "memory" not in subtree.read_text().split():
                return None, f"memory controller not enabled in {subtree}"
    except OSError as exc:
        return None, f"cannot enable the memory controller in {subtree}: {exc}"
    return base, f"cgroup v2: per-job cgroups under {base} with memory.max"


def _exit_from_code(job_id: int, code: int, end_time: float, recovered: bool = False) -> JobExit:
    """JobExit (without rusage) for a shell-convention exit code; see JobExit.signal."""
    sig = code - 128 if 128 < code <= 128 + 64 else 0
    return JobExit(job_id, code, sig, end_time, -1.0, -1.0, recovered)


def _exit_from_wait(job_id: int, status: int, ru: resource.struct_rusage | None) -> JobExit:
    """JobExit of a reaped wrapper from its wait status and rusage (None: unknown)."""
    now = time.time()
    if ru is None:
        return JobExit(job_id, -1, 0, now, -1.0, -1.0)
    if os.WIFSIGNALED(status):  # the wrapper itself died (SIGKILL): the job with it
        sig = os.WTERMSIG(status)
        code = 128 + sig
    else:  # the wrapper exits with the job's code, 128+N when the job died of N
        code = os.WEXITSTATUS(status)
        sig = code - 128 if 128 < code <= 128 + 64 else 0
    # ru_maxrss is in KiB on Linux
    return JobExit(job_id, code, sig, now, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024)


def _read_exit_file(path: Path) -> tuple[int, float] | None:
    """(exit code, mtime) from a complete exit file, else None.

    Complete means one integer and its newline: the wrapper writes it with a
    single ``echo``, so a file without the newline was cut short.
    """
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except OSError:
        return None
    if not text.endswith("\n"):
        return None
    try:
        return int(text.strip()), mtime
    except ValueError:
        return None


@dataclass
class _Job:
    """The executor's record of one job it launched or adopted."""

    job_id: int
    pid: int
    popen: subprocess.Popen[bytes] | None
    """None for an adopted job (not our child: no wait, no rusage)."""
    pidfd: int | None
    """None when pidfds are unavailable: then polled."""
    create_time: float = 0.0
    cgroup: Path | None = None
    sent_kill: bool = False
    registered: bool = field(default=False)
    """Whether the watcher thread has put its pidfd into its poll set."""


class LocalExecutor:
    """Starts jobs as real processes, signals them and reports their exits.

    Threads: one daemon watcher thread notices exits and calls ``on_exit``
    (from that thread, outside the executor's lock, so ``on_exit`` may call
    ``launch``/``signal``/``running``; it should be quick: hand the exit to
    the engine's own thread). ``launch``, ``signal``, ``running`` and
    ``recover`` are safe to call from any thread.

    Exit files outlive the report: an exit handed to ``on_exit`` is usually
    queued, not yet committed, and an agent killed in between must still find
    it on restart (else the job looks lost and is requeued: it would run
    twice). So the file of a reported exit is removed ``exit_file_grace_s``
    later, or at once by ``release`` (call it once the exit is committed), or
    by the next ``recover`` (the files of jobs the store no longer calls
    running), or when the same job id is launched again.
    """

    memory_limit_mode: MemoryLimitMode
    memory_limit_note: str

    def __init__(
        self,
        run_dir: Path,
        on_exit: Callable[[JobExit], None],
        memory_limit: str = "auto",
        *,
        exit_file_grace_s: float = 60.0,
    ) -> None:
        """Make ``run_dir`` (for the exit files) and start the watcher thread.

        ``memory_limit``: "auto" (cgroup v2 if usable, else RLIMIT_AS),
        "cgroup-v2", "rlimit-as" or "off". ``exit_file_grace_s``: how long
        the exit file of a reported job is kept (see the class docstring).
        """
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._on_exit = on_exit
        self._cgroup_base: Path | None = None
        self._setup_memory_limit(memory_limit)
        self._lock = threading.Lock()
        self._jobs: dict[int, _Job] = {}
        self._grace_s = exit_file_grace_s
        self._expiring: deque[tuple[float, int]] = deque()
        """(monotonic deadline, job id) of reported exits, oldest first."""
        self._reported: dict[int, float] = {}
        """Job id -> deadline of its exit file; an older queue entry for a
        relaunched id no longer matches, so it cannot remove the newer file."""
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread = threading.Thread(target=self._watch, name="htcsim-executor", daemon=True)
        self._thread.start()

    def _setup_memory_limit(self, mode: str) -> None:
        """Pick the memory limit mechanism once, and say why for the log."""
        if mode == "off":
            self.memory_limit_mode, self.memory_limit_note = "off", "memory limits off (asked)"
            return
        if mode not in ("auto", "cgroup-v2", "rlimit-as"):
            raise ValueError(
                f"memory_limit must be auto, cgroup-v2, rlimit-as or off, not {mode!r}"
            )
        why = "asked"
        if mode in ("auto", "cgroup-v2"):
            base, why = detect_memory_cgroup()
            if base is not None:
                self._cgroup_base = base
                self.memory_limit_mode, self.memory_limit_note = "cgroup-v2", why
                return
            if mode == "cgroup-v2":
                raise ValueError(f"cgroup v2 memory limits unavailable: {why}")
        self.memory_limit_mode = "rlimit-as"
        self.memory_limit_note = (
            f"RLIMIT_AS ({why}): limits virtual address space, not resident memory, "
            "so programs that reserve much address space (JVMs, many threads) need headroom"
        )

    # -- paths -------------------------------------------------------------

    def exit_path(self, job_id: int) -> Path:
        """Where the wrapper of ``job_id`` writes the exit code."""
        return self.run_dir / f"{job_id}.exit"

    def _cgroup_path(self, job_id: int) -> Path | None:
        """The per-job cgroup (cgroup v2 mode only)."""
        if self._cgroup_base is None:
            return None
        return self._cgroup_base / f"{MARKER_PREFIX}{job_id}"

    def _script(self, spec: LaunchSpec, cgroup: Path | None) -> str:
        """The wrapper script; paths are shell-quoted, the job's argv goes via "$@"."""
        exit_file = shlex.quote(str(self.exit_path(spec.job_id)))
        parts = [f'fail() {{ echo "htcsim: $1" >&2; echo 125 > {exit_file}; exit 125; }}']
        if cgroup is not None:
            procs = shlex.quote(str(cgroup / "cgroup.procs"))
            parts.append(f"echo $$ > {procs} || fail 'cannot enter the job cgroup'")
        parts.append(f"trap true {_TRAPPED_SIGNALS}")
        if spec.mem_limit_mib > 0 and self.memory_limit_mode == "rlimit-as":
            parts.append(f"ulimit -v {spec.mem_limit_mib * 1024} || fail 'cannot set RLIMIT_AS'")
        parts.append(f'"$@"; rc=$?; echo $rc > {exit_file}; exit $rc')
        return "\n".join(parts)

    def _make_cgroup(self, spec: LaunchSpec) -> Path | None:
        """Create the job's cgroup with its memory.max (cgroup v2 mode only)."""
        cgroup = self._cgroup_path(spec.job_id)
        if cgroup is None:
            return None
        with contextlib.suppress(OSError):
            cgroup.rmdir()  # stale, from a previous run of the same job id
        try:
            cgroup.mkdir(exist_ok=True)
            limit = str(spec.mem_limit_mib * 2**20) if spec.mem_limit_mib > 0 else "max"
            (cgroup / "memory.max").write_text(limit)
            swap = cgroup / "memory.swap.max"
            if spec.mem_limit_mib > 0 and swap.exists():
                swap.write_text("0")  # else the limit only moves the job to swap
        except OSError as exc:
            raise LaunchError(f"job {spec.job_id}: cannot set up cgroup {cgroup}: {exc}") from exc
        return cgroup

    # -- launch ----------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> int:
        """Start the job and return the wrapper's pid (also the job's process group id)."""
        jid = spec.job_id
        if not spec.argv:
            raise LaunchError(f"job {jid}: empty command")
        if not os.path.isdir(spec.cwd):
            raise LaunchError(f"job {jid}: working directory {spec.cwd} does not exist")
        for what, path in (("stdout", spec.stdout), ("stderr", spec.stderr)):
            if not os.path.isabs(path):
                raise LaunchError(f"job {jid}: {what} path {path} is not absolute")
            if not os.path.isdir(os.path.dirname(path)):
                raise LaunchError(f"job {jid}: folder of {what} file {path} does not exist")
        marker = f"{MARKER_PREFIX}{jid}"
        with self._lock:
            if self._closed:
                raise LaunchError(f"job {jid}: executor closed")
            if jid in self._jobs:
                raise LaunchError(f"job {jid}: already running as pid {self._jobs[jid].pid}")
            self._reported.pop(jid, None)
            with contextlib.suppress(FileNotFoundError):
                self.exit_path(jid).unlink()  # stale, from an earlier run of this id
            cgroup = self._make_cgroup(spec)
            args = [marker, "-c", self._script(spec, cgroup), marker, *spec.argv]
            try:
                popen = self._spawn(spec, args)
            except LaunchError:
                if cgroup is not None:
                    _remove_cgroup(cgroup)
                raise
            try:
                pidfd: int | None = os.pidfd_open(popen.pid)
            except (OSError, AttributeError):
                pidfd = None
            self._jobs[jid] = _Job(jid, popen.pid, popen, pidfd, cgroup=cgroup)
        self._wake()
        return popen.pid

    def _spawn(self, spec: LaunchSpec, args: list[str]) -> subprocess.Popen[bytes]:
        """Popen with the logs opened in append mode and the thread pinned around it.

        The calling thread's own affinity is set to the job's CPUs and
        restored right after, so the child is pinned from birth without a
        preexec_fn (which would cost CPython its vfork path). Caller holds the
        lock, so concurrent launches cannot interleave their affinities.
        """
        jid = spec.job_id
        saved = os.sched_getaffinity(0) if spec.cpus else None
        out: IO[bytes] | None = None
        err: IO[bytes] | None = None
        try:
            out = open(spec.stdout, "ab")  # noqa: SIM115 - closed in finally, after the spawn
            err = out if spec.stderr == spec.stdout else open(spec.stderr, "ab")  # noqa: SIM115
            if spec.cpus:
                os.sched_setaffinity(0, spec.cpus)
            return subprocess.Popen(
                args,
                executable=_WRAPPER_SHELL,
                cwd=spec.cwd,
                env=spec.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise LaunchError(f"job {jid}: cannot start: {exc}") from exc
        finally:
            if saved is not None:
                os.sched_setaffinity(0, saved)
            for f in {id(x): x for x in (out, err) if x is not None}.values():
                f.close()

    # -- signals and queries ---------------------------------------------------------

    def signal(self, job_id: int, sig: int) -> bool:
        """Send ``sig`` to the job's whole process group (and its cgroup for SIGKILL).

        False if the job is not running here. Done under the lock so the
        watcher cannot reap the wrapper (freeing its pid for reuse) meanwhile.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return False
            if job.popen is None and job.pidfd is not None and _pidfd_ready(job.pidfd):
                return False  # adopted and already gone: its pid may be reused
            if sig == signal_mod.SIGKILL:
                job.sent_kill = True
                if job.cgroup is not None:
                    with contextlib.suppress(OSError):
                        (job.cgroup / "cgroup.kill").write_text("1")
            try:
                os.killpg(job.pid, sig)
            except ProcessLookupError:
                return False
            return True

    def running(self) -> dict[int, int]:
        """Job id -> wrapper pid of the jobs launched or adopted and not yet reported."""
        with self._lock:
            return {jid: job.pid for jid, job in self._jobs.items()}

    # -- recovery ----------------------------------------------------------------

    def recover(self, job_ids: Sequence[int]) -> list[Recovered]:
        """Find out what became of jobs the store says are running, after a restart.

        ``job_ids`` must be every job the store says is running: the exit
        files of all other ids in the run dir are left over from exits the
        store has recorded, and are removed.

        A complete exit file means "exited"; else a live wrapper (found by its
        argv[0] marker in one /proc scan) means "running", and it is adopted:
        watched, signalable, and reported through ``on_exit`` with
        ``recovered=True`` when it ends; else "lost". The exit files of
        "exited" jobs are kept like those of reported exits (see the class
        docstring), for the engine may crash again before it records them.
        """
        results: dict[int, Recovered] = {}
        with self._lock:
            known = {jid: job.pid for jid, job in self._jobs.items()}
        todo: list[int] = []
        for jid in job_ids:
            if jid in known:
                results[jid] = Recovered(jid, "running", known[jid], None)
            elif (done := self._exited(jid)) is not None:
                results[jid] = done
            else:
                todo.append(jid)
        found = self._scan(todo) if todo else {}
        for jid in todo:
            rec = None
            if jid in found:
                pid, create_time = found[jid]
                rec = self._adopt(jid, pid, create_time)
            if rec is None:
                # Gone since the first look (or never found): the exit file
                # may have appeared in between.
                rec = self._exited(jid) or Recovered(jid, "lost", None, None)
            results[jid] = rec
        self._collect_garbage(set(job_ids))
        self._wake()
        return [results[jid] for jid in job_ids]

    def _collect_garbage(self, keep: set[int]) -> None:
        """Remove exit files of ids neither in ``keep`` nor running nor in their grace."""
        with self._lock:
            keep |= self._jobs.keys() | self._reported.keys()
            for path in self.run_dir.glob("*.exit"):
                if path.stem.isdigit() and int(path.stem) not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()

    def _exited(self, job_id: int) -> Recovered | None:
        """Recovered "exited" from a complete exit file, else None."""
        read = _read_exit_file(self.exit_path(job_id))
        if read is None:
            return None
        code, mtime = read
        return Recovered(job_id, "exited", None, _exit_from_code(job_id, code, mtime, True))

    def _scan(self, job_ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        """Job id -> (pid, create time) of live wrappers of this run dir, in one /proc pass."""
        wanted = {f"{MARKER_PREFIX}{jid}": jid for jid in job_ids}
        found: dict[int, tuple[int, float]] = {}
        for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
            cmd = proc.info.get("cmdline") or []
            if len(cmd) < 3 or cmd[0] not in wanted or cmd[1] != "-c":
                continue
            jid = wanted[cmd[0]]
            if shlex.quote(str(self.exit_path(jid))) in cmd[2]:
                found[jid] = (proc.info["pid"], proc.info["create_time"])
        return found

    def _adopt(self, job_id: int, pid: int, create_time: float) -> Recovered | None:
        """Watch a wrapper that is not our child; None if it is gone already.

        The pidfd is opened first and the create time checked after, so the
        pidfd surely refers to the scanned process, not a reuse of its pid.
        """
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        except (OSError, AttributeError):
            pidfd = None
        try:
            same = psutil.Process(pid).create_time() == create_time
        except psutil.Error:
            same = False
        if not same or (pidfd is not None and _pidfd_ready(pidfd)):
            if pidfd is not None:
                os.close(pidfd)
            return None
        cgroup = self._cgroup_path(job_id)
        job = _Job(
            job_id, pid, None, pidfd, create_time, cgroup if cgroup and cgroup.is_dir() else None
        )
        with self._lock:
            self._jobs[job_id] = job
        return Recovered(job_id, "running", pid, None)

    # -- the watcher thread ----------------------------------------------------------

    def _wake(self) -> None:
        """Make the watcher look at its job table again."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _watch(self) -> None:
        """Poll the pidfds (and the wake pipe); finish each job whose process ended.

        Only this thread touches the poll object.
        """
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        by_fd: dict[int, int] = {}
        while True:
            with self._lock:
                if self._closed:
                    return
                polled = False
                for jid, job in self._jobs.items():
                    if job.pidfd is None:
                        polled = True
                    elif not job.registered:
                        poller.register(job.pidfd, select.POLLIN)
                        by_fd[job.pidfd] = jid
                        job.registered = True
                self._expire()
                due = self._expiring[0][0] - time.monotonic() if self._expiring else None
            waits = [w for w in (_POLL_FALLBACK_S if polled else None, due) if w is not None]
            timeout = max(0, int(min(waits) * 1000) + 1) if waits else None
            ended: list[int] = []
            for fd, _ev in poller.poll(timeout):
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 4096):
                            pass
                elif fd in by_fd:
                    poller.unregister(fd)
                    ended.append(by_fd.pop(fd))
            if polled:
                with self._lock:
                    ended += [j.job_id for j in self._jobs.values() if j.pidfd is None]
            for jid in ended:
                try:
                    self._finish(jid)
                except Exception:  # the watcher must survive a bad callback
                    logger.exception("job %s: handling its exit failed", jid)

    def _finish(self, job_id: int) -> None:
        """Reap (or confirm the end of) one job, report it, then clean up after it."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            if job.popen is not None:
                try:
                    pid, status, ru = os.wait4(job.pid, os.WNOHANG)
                except ChildProcessError:  # reaped behind our back: exit unknown
                    pid, status, ru = job.pid, -1, None
                if pid == 0:  # still running (polled mode, or a spurious wake-up)
                    job.registered = False
                    return
                job.popen.returncode = os.waitstatus_to_exitcode(status) if ru else -1
            elif job.pidfd is None and _alive(job.pid, job.create_time):
                return
            del self._jobs[job_id]
            if job.pidfd is not None:
                os.close(job.pidfd)
        if job.popen is not None:
            exit_ = _exit_from_wait(job_id, status, ru)
        else:
            exit_ = self._adopted_exit(job)
        if job.cgroup is not None:
            _remove_cgroup(job.cgroup)
        try:
            self._on_exit(exit_)
        finally:
            with self._lock:
                if job_id not in self._jobs:  # not relaunched from on_exit meanwhile
                    deadline = time.monotonic() + self._grace_s
                    self._reported[job_id] = deadline
                    self._expiring.append((deadline, job_id))

    def _expire(self) -> None:
        """Remove the exit files whose grace has passed. Caller holds the lock."""
        now = time.monotonic()
        while self._expiring and self._expiring[0][0] <= now:
            deadline, job_id = self._expiring.popleft()
            if self._reported.get(job_id) == deadline and job_id not in self._jobs:
                del self._reported[job_id]
                with contextlib.suppress(FileNotFoundError):
                    self.exit_path(job_id).unlink()

    def release(self, job_id: int) -> None:
        """Remove a reported job's exit file now: its exit is durably recorded.

        Does nothing while the job (or a relaunch of its id) is running.
        """
        with self._lock:
            if job_id in self._jobs:
                return
            self._reported.pop(job_id, None)
            with contextlib.suppress(FileNotFoundError):
                self.exit_path(job_id).unlink()

    def _adopted_exit(self, job: _Job) -> JobExit:
        """The exit of an adopted job, from its exit file (no rusage: not our child)."""
        read = _read_exit_file(self.exit_path(job.job_id))
        if read is not None:
            return _exit_from_code(job.job_id, read[0], read[1], recovered=True)
        if job.sent_kill:  # SIGKILL leaves no exit file, but we know who sent it
            return _exit_from_code(job.job_id, 128 + signal_mod.SIGKILL, time.time(), True)
        return JobExit(job.job_id, -1, 0, time.time(), -1.0, -1.0, recovered=True)

    def close(self) -> None:
        """Stop the watcher thread. Running jobs are NOT killed, nor reported any more."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._thread.join(timeout=5)
        with self._lock:
            for job in self._jobs.values():
                if job.pidfd is not None:
                    os.close(job.pidfd)
                    job.pidfd = None
        os.close(self._wake_r)
        os.close(self._wake_w)


def _pidfd_ready(pidfd: int) -> bool:
    """Whether the process behind ``pidfd`` has exited (its pidfd is readable)."""
    readable, _, _ = select.select([pidfd], [], [], 0)
    return bool(readable)


def _alive(pid: int, create_time: float) -> bool:
    """Polling fallback for adopted jobs: same process, and not a zombie."""
    try:
        proc = psutil.Process(pid)
        return bool(proc.create_time() == create_time and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _remove_cgroup(cgroup: Path) -> None:
    """Kill what is left in a finished job's cgroup and remove it.

    Stragglers (daemons the job left behind) go with the job, as in Slurm. A
    cgroup that still cannot be removed after a short wait is left behind
    and logged; the next launch of the same id retries.
    """
    with contextlib.suppress(OSError):
        (cgroup / "cgroup.kill").write_text("1")
    for _ in range(20):
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
    logger.warning("could not remove cgroup %s", cgroup)
