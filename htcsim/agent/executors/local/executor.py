"""The local executor: the agent's side of the shepherd, which runs the jobs.

The jobs themselves are started, watched and reaped by the shepherd
(``htcsim.agent.executors.local.shepherd``), a small process of its own that outlives the
agent; see its docstring for why. This module starts the shepherd when none
serves the run directory, sends it launches and signals, and turns its
reports into ``JobExit`` records for the engine. After a crash of the agent,
``recover`` answers from what the shepherd tells on connection: which jobs
still run (re-adopted as they are) and how the others ended, with their
exit codes and resource use: nothing is guessed.

The shepherd is supervised (``supervisor``): one that dies or hangs is
noticed within a second and restarted, its running jobs adopted by the new
worker with their exit statuses kept (by its keeper, see ``keeper``); a job
whose status could not be kept is killed, every process of it, and reported
*lost* (``JobExit.lost``): the engine requeues it, never fails it.

Every job runs in its own session (so its own process group: a signal
reaches the whole job), pinned to its CPUs from birth, with its memory limit
(cgroup v2 where the agent's cgroup is delegated, else RLIMIT_AS), and
contained: every process it starts dies with it (a cgroup v2 per job where
one can be made, else the shepherd as a child subreaper; ``containment``),
and denied the device files of GPUs not its own where the cgroup v1
``devices`` controller is writable (``devices_mode``, ``devices_note``).

Only the agent talks to its shepherd: the run directory is 0700, the
shepherd accepts connections of its own uid only, and a connection must
present the secret kept in ``shepherd.secret`` (0600) before it replaces the
agent's. ``health`` says whether this executor's connection is up, ``status``
what /healthz shows of the shepherd.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from htcsim.agent.executors.base import (
    JobExit,
    LaunchError,
    LaunchSpec,
    Recovered,
    exit_from_record,
)
from htcsim.agent.executors.local.runfiles import LOG_FILE, SECRET_FILE, secure_dir
from htcsim.agent.executors.local.shepherd import detect_devices_cgroup
from htcsim.agent.executors.local.supervisor import Connection, Restart, Supervisor

logger = logging.getLogger(__name__)

MemoryLimitMode = Literal["cgroup-v2", "rlimit-as", "off"]
ContainmentMode = Literal["cgroup", "subreaper"]
CONTAINMENT_SETTINGS = ("auto", "cgroup", "subreaper")


def cgroup2_mount(mounts: Path = Path("/proc/self/mounts")) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` on a unified
    system, ``/sys/fs/cgroup/unified`` on a hybrid one), or None."""
    with contextlib.suppress(OSError):
        for line in mounts.read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    return None


def own_cgroup(proc_cgroup: Path, cgroup_root: Path) -> Path | None:
    """This process's cgroup v2 folder (its ``0::/path`` line) under ``cgroup_root``."""
    lines = proc_cgroup.read_text().splitlines()
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    return None if rel is None else cgroup_root / rel.strip().lstrip("/")


def detect_job_cgroup(
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    mounts: Path = Path("/proc/self/mounts"),
) -> tuple[Path | None, str]:
    """The cgroup v2 folder under which a cgroup per job can be made and killed
    (``cgroup.kill``, Linux 5.14), and why (not)."""
    root = cgroup2_mount(mounts)
    if root is None:
        return None, "no cgroup v2 hierarchy mounted"
    try:
        base = own_cgroup(proc_cgroup, root)
    except OSError as exc:
        return None, f"cannot read {proc_cgroup}: {exc}"
    if base is None:
        return None, f"{proc_cgroup} has no cgroup v2 entry"
    if not base.is_dir() or not os.access(base, os.W_OK):
        return None, f"the agent's cgroup {base} is not writable"
    probe = base / f"htcsim-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        probe.mkdir()
        try:
            killable = (probe / "cgroup.kill").exists()
        finally:
            probe.rmdir()
    except OSError as exc:
        return None, f"cannot make a cgroup under {base}: {exc}"
    if not killable:
        return None, f"no cgroup.kill under {base} (Linux < 5.14)"
    return base, f"a cgroup v2 per job under {base}, killed with cgroup.kill"


def detect_memory_cgroup(
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    cgroup_root: Path | None = None,
) -> tuple[Path | None, str]:
    """The cgroup v2 folder under which per-job cgroups can be made, and why (not).

    Needs the unified hierarchy mounted at ``cgroup_root``, the agent's own
    cgroup (the ``0::/path`` line) writable, and the memory controller enabled
    for its children (enabling it is tried). The second value is a one-line
    explanation for the log. The paths are parameters so that tests can point
    them at a fake tree; by default ``cgroup_root`` is where cgroup2 is mounted.
    """
    if cgroup_root is None:
        cgroup_root = cgroup2_mount() or Path("/sys/fs/cgroup")
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


def _lost(job_id: int, cause: str) -> JobExit:
    """The exit of a job whose process the executor lost (the engine requeues it)."""
    return JobExit(job_id, -1, 0, time.time(), -1.0, -1.0, recovered=True, lost=cause)


class LocalExecutor:
    """Runs jobs on this machine through its shepherd process.

    Threads: the supervisor's thread receives the shepherd's reports and
    calls ``on_exit`` (and ``on_restart`` after a restart of the shepherd)
    from there: they should be quick (hand the event to the engine's
    thread). ``launch_many``, ``signal``, ``running``, ``release`` are safe
    from any thread; while the shepherd restarts, a launch waits for it and
    signals and releases are kept and sent to the new worker. ``close``
    disconnects; the shepherd and the jobs keep running, and the next
    executor on the same run directory (a restarted agent) reconnects to
    them.
    """

    memory_limit_mode: MemoryLimitMode
    memory_limit_note: str
    containment_mode: ContainmentMode
    containment_note: str
    devices_mode: Literal["cgroup-v1", "off"]
    devices_note: str
    """Whether a job is denied other GPUs' device files, and how or why not."""

    def __init__(
        self,
        run_dir: Path,
        on_exit: Callable[[JobExit], None],
        memory_limit: str = "auto",
        *,
        containment: str = "auto",
        connect_timeout_s: float = 20.0,
        on_restart: Callable[[Restart], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        secure_dir(self.run_dir)  # 0700: the socket and the secret are the agent's alone
        self._on_exit = on_exit
        self._cgroup_base: Path | None = None
        self._job_cgroup_base: Path | None = None
        self._setup_memory_limit(memory_limit)
        self._setup_containment(containment)
        self._devices_base, why = detect_devices_cgroup()
        self.devices_mode = "cgroup-v1" if self._devices_base is not None else "off"
        self.devices_note = why if self._devices_base is not None else f"off: {why}"
        self._secret = self._load_secret()
        self._lock = threading.Lock()
        self._launch_lock = threading.Lock()
        self._running: dict[int, int] = {}
        self._replies: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._inflight: tuple[list[int], Connection] | None = None  # a launch without reply
        self._dirs_seen: dict[str, float] = {}
        self._ended_early: set[int] = set()  # exits read before their launch reply
        self._untracked: set[int] = set()  # killed: running, but no job the agent runs
        self._sup = Supervisor(
            self.run_dir,
            self._secret,
            self._start_shepherd,
            self._message,
            self._reconnected,
            on_restart,
            connect_timeout_s,
            self._when_idle,
        )
        self.hello = self._sup.conn.hello
        if self.hello.get("containment", self.containment_mode) != self.containment_mode:
            # a shepherd started by an earlier agent with another setting: it decides
            self.containment_mode = self.hello["containment"]
            self.containment_note = f"{self.containment_mode} (the running shepherd's)"
        shepherd_devices = str(self.hello.get("devices_cgroup", ""))
        if shepherd_devices != str(self._devices_base or ""):
            # a shepherd started by an earlier agent: what it does is what holds
            self._devices_base = Path(shepherd_devices) if shepherd_devices else None
            self.devices_mode = "cgroup-v1" if shepherd_devices else "off"
            self.devices_note = (
                f"devices cgroup v1 at {shepherd_devices} (the running shepherd's)"
                if shepherd_devices
                else "off: the running shepherd (started earlier) has no devices cgroup"
            )
        self._sup.start()

    @property
    def shepherd_pid(self) -> int:
        """The pid of the shepherd worker serving this executor now."""
        return self._sup.conn.pid

    @property
    def keeper_pid(self) -> int | None:
        """The pid of its keeper, None when it has none (it died)."""
        keeper = self._sup.conn.peers.keeper
        return keeper.pid if keeper is not None else None

    def _setup_memory_limit(self, mode: str) -> None:
        """Pick the memory limit mechanism once, and say why for the log."""
        if mode == "off":
            self.memory_limit_mode, self.memory_limit_note = "off", "memory limits off (asked)"
            return
        if mode not in ("auto", "cgroup", "cgroup-v2", "rlimit", "rlimit-as"):
            raise ValueError(f"memory_limit must be auto, cgroup, rlimit or off, not {mode!r}")
        why = "asked"
        if mode in ("auto", "cgroup", "cgroup-v2"):
            base, why = detect_memory_cgroup()
            if base is not None:
                self._cgroup_base = base
                self.memory_limit_mode, self.memory_limit_note = "cgroup-v2", why
                return
            if mode != "auto":
                raise ValueError(f"cgroup v2 memory limits unavailable: {why}")
        self.memory_limit_mode = "rlimit-as"
        self.memory_limit_note = (
            f"RLIMIT_AS ({why}): limits virtual address space, not resident memory, "
            "so programs that reserve much address space (JVMs, many threads) need headroom"
        )

    def _setup_containment(self, mode: str) -> None:
        """Pick how a job's processes are kept together (and killed together)."""
        if mode not in CONTAINMENT_SETTINGS:
            raise ValueError(f"containment must be auto, cgroup or subreaper, not {mode!r}")
        why = "asked"
        if mode != "subreaper":
            base, why = detect_job_cgroup()
            if base is not None:
                self._job_cgroup_base = base
                self.containment_mode, self.containment_note = "cgroup", why
                return
            if mode == "cgroup":
                raise ValueError(f"cgroup v2 containment unavailable: {why}")
        self.containment_mode = "subreaper"
        self.containment_note = (
            f"the shepherd as child subreaper, sampling /proc for each job's processes ({why})"
        )

    def _load_secret(self) -> str:
        """The shepherd's secret: made once (0600, in the 0700 run directory),
        read again by a restarted agent."""
        path = self.run_dir / SECRET_FILE
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            tmp = self.run_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            try:
                os.link(tmp, path)  # atomic: two agents starting at once agree
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            fd = os.open(path, flags)
        with os.fdopen(fd) as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid():
                raise LaunchError(f"{path} belongs to uid {st.st_uid}, not to this agent")
            if st.st_mode & 0o077:
                os.fchmod(f.fileno(), 0o600)
            secret = f.read().strip()
        if len(secret) < 32:
            raise LaunchError(f"{path} does not hold a secret; remove it and restart")
        return secret

    # ------------------------------------------------------------------ the shepherd

    def _start_shepherd(self) -> subprocess.Popen[bytes]:
        """Start a shepherd (its keeper, which forks the worker) for the run directory."""
        log = open(self.run_dir / LOG_FILE, "ab")  # noqa: SIM115 (the child keeps it)
        options = {
            "cgroup": str(self._job_cgroup_base or self._cgroup_base or ""),
            "containment": self.containment_mode,
            "memory_cgroup": self._cgroup_base is not None,
            "devices_cgroup": str(self._devices_base or ""),
        }
        try:
            shepherd = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "htcsim.agent.executors.local.shepherd",
                    str(self.run_dir),
                    json.dumps(options),
                ],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                cwd=self.run_dir,
                start_new_session=True,  # it outlives the agent
            )
            assert shepherd.stdin is not None
            with contextlib.suppress(OSError):  # one that exits at once is reported by _connect
                shepherd.stdin.write(self._secret.encode() + b"\n")
                shepherd.stdin.close()
        finally:
            log.close()
        return shepherd

    def _message(self, message: dict[str, Any]) -> None:
        """A report of the shepherd (the supervisor's thread): a launch's reply, an exit."""
        op = message["op"]
        if op == "started":
            with self._lock:
                self._inflight = None  # answered: no reconciliation will answer it again
            self._replies.put(message)
        elif op == "exit":
            job_id = int(message["job"])
            with self._lock:
                if job_id in self._untracked:  # killed as no job of the agent's: forget it
                    self._untracked.discard(job_id)
                    untracked = True
                else:
                    untracked = False
                    if self._running.pop(job_id, None) is None:
                        self._ended_early.add(job_id)
            if untracked:
                self.release_many([job_id])
                return
            self._on_exit(exit_from_record(message))

    def _reconnected(self, hello: dict[str, Any], why: str) -> list[dict[str, Any]]:
        """A new worker serves after a lost one: settle what the agent thinks runs
        with what it says (running: adopted as is; ended: its exit; unknown to
        it: lost, its processes verifiably gone since a new worker kills every
        process of a job it does not adopt), answer a launch left without reply,
        and kill what runs that the agent does not run. Returns the messages to
        send first."""
        running_now = {int(j): int(pid) for j, pid in hello.get("running", {}).items()}
        exits_now = {int(r["job"]): r for r in hello.get("exits", [])}
        deliver: list[JobExit] = []
        first: list[dict[str, Any]] = []
        lost = f"lost when the shepherd was restarted ({why})"
        with self._lock:
            self.hello = hello
            for job_id in list(self._running):
                if job_id in running_now:
                    self._running[job_id] = running_now[job_id]
                    continue
                del self._running[job_id]
                record = exits_now.get(job_id)
                deliver.append(exit_from_record(record, True) if record else _lost(job_id, lost))
            inflight, self._inflight = self._inflight, None
            launched = inflight[0] if inflight is not None else []
            if inflight is not None:
                results: list[dict[str, Any]] = []
                for job_id in launched:
                    if job_id in running_now:
                        results.append({"job": job_id, "pid": running_now[job_id]})
                        continue
                    record = exits_now.get(job_id)
                    results.append({"job": job_id, "pid": 0})  # no process: its exit says why
                    deliver.append(
                        exit_from_record(record, True)
                        if record
                        else _lost(job_id, f"not started: the shepherd was restarted ({why})")
                    )
                self._replies.put({"op": "started", "jobs": results})
            known = set(self._running) | set(launched)
            for job_id in running_now:
                if job_id not in known:
                    self._untracked.add(job_id)
                    first.append({"op": "signal", "job": job_id, "sig": 9})
        if first:
            logger.error(
                "the restarted shepherd runs jobs %s the agent does not run: killed",
                sorted(m["job"] for m in first),
            )
        for exit_ in deliver:
            self._on_exit(exit_)
        return first

    def _when_idle(self, action: Callable[[], None]) -> bool:
        """Run ``action`` if no job runs and none is being launched, holding off
        launches meanwhile; whether it ran."""
        if not self._launch_lock.acquire(blocking=False):
            return False
        try:
            with self._lock:
                if self._running or self._inflight is not None:
                    return False
            action()
            return True
        finally:
            self._launch_lock.release()

    def health(self) -> tuple[bool, str]:
        """Whether the executor can run jobs now (a shepherd worker connected, this
        agent's), and why not."""
        status = self._sup.status()
        if status["connected"]:
            return True, f"the shepherd {status['pid']} is connected"
        return False, "; ".join(status["reasons"])

    @property
    def identity(self) -> dict[str, Any]:
        """Who serves now, from the worker's hello: its keeper ``[pid, start]``
        (None without one), the keeper's ``generation`` (its worker restarts),
        the last restart's reason and time, and ``replaced`` (the first worker
        of a new shepherd that found its predecessor killed: what it found)."""
        with self._lock:
            hello = self.hello
        keeper = hello.get("keeper") or None
        restart = hello.get("restart") or {}
        return {
            "keeper": [keeper["pid"], keeper["start"]] if keeper else None,
            "generation": int(hello.get("generation") or 0),
            "restart_reason": str(restart.get("reason") or ""),
            "restart_time": float(restart.get("time") or 0.0),
            "replaced": str(hello.get("replaced") or ""),
        }

    def status(self) -> dict[str, Any]:
        """The shepherd's health for /healthz: ``state`` (ok, degraded, down),
        ``reasons``, worker and keeper pids, restarts seen by this executor."""
        return self._sup.status()

    # ------------------------------------------------------------------ jobs

    def _is_dir(self, path: str) -> bool:
        """``os.path.isdir``, remembered for a second (thousands of jobs share a cwd)."""
        now = time.monotonic()
        if self._dirs_seen.get(path, 0.0) > now:
            return True
        if not os.path.isdir(path):
            return False
        if len(self._dirs_seen) > 1024:
            self._dirs_seen.clear()
        self._dirs_seen[path] = now + 1.0
        return True

    def _check(self, spec: LaunchSpec) -> None:
        jid = spec.job_id
        if not spec.argv or not spec.argv[0]:
            raise LaunchError(f"job {jid}: empty command")
        if not self._is_dir(spec.cwd):
            raise LaunchError(f"job {jid}: working directory {spec.cwd} does not exist")
        for what, path in (("stdout", spec.stdout), ("stderr", spec.stderr)):
            if not os.path.isabs(path):
                raise LaunchError(f"job {jid}: {what} path {path} is not absolute")
            if not self._is_dir(os.path.dirname(path)):
                raise LaunchError(f"job {jid}: folder of {what} file {path} does not exist")

    def launch_many(self, specs: Sequence[LaunchSpec]) -> list[int | LaunchError]:
        """Start jobs; per job its pid, or the LaunchError that kept it from starting.

        A program that cannot be executed (not found, not executable) is not
        a launch error: the job ran and failed with 127 or 126, as under a
        shell, and its exit is reported (its pid is 0).
        """
        out: list[int | LaunchError] = []
        jobs = []
        for spec in specs:
            try:
                self._check(spec)
            except LaunchError as exc:
                out.append(exc)
                continue
            out.append(0)
            jobs.append(
                spec.payload()
                | {
                    "cpus": list(spec.cpus),
                    "mem_mib": spec.mem_limit_mib if self.memory_limit_mode != "off" else 0,
                }
            )
        if not jobs:
            return out
        data = json.dumps({"op": "launch", "jobs": jobs}).encode() + b"\n"
        ids = [int(job["job"]) for job in jobs]
        with self._launch_lock:  # replies come in request order
            while True:
                try:
                    conn = self._sup.connection()  # waits while the shepherd restarts
                except LaunchError as exc:  # no shepherd will serve: none of them started
                    reply = {"jobs": [{"job": j, "pid": 0} for j in ids]}
                    for job_id in ids:
                        self._on_exit(_lost(job_id, f"not started: {exc}"))
                    break
                with self._lock:  # a reconciliation answers the launch if conn breaks from now
                    if not self._sup.is_current(conn):
                        continue
                    self._inflight = (ids, conn)
                with contextlib.suppress(OSError):  # the reconciliation will answer
                    conn.send(data)
                reply = self._replies.get()
                break
        results = {int(r["job"]): r for r in reply["jobs"]}
        for k, spec in enumerate(specs):
            if isinstance(out[k], LaunchError):
                continue
            result = results[spec.job_id]
            if "error" in result:
                out[k] = LaunchError(f"job {spec.job_id}: {result['error']}")
                continue
            pid = int(result["pid"])
            out[k] = pid
            with self._lock:
                if pid and spec.job_id not in self._ended_early:
                    self._running[spec.job_id] = pid
                self._ended_early.discard(spec.job_id)
        return out

    def launch(self, spec: LaunchSpec) -> int:
        """Start one job and return its pid (0: it could not exec, exit reported)."""
        result = self.launch_many([spec])[0]
        if isinstance(result, LaunchError):
            raise result
        return result

    def signal(self, job_id: int, sig: int) -> bool:
        """Send ``sig`` to the job's whole process group; False if it is not running."""
        with self._lock:
            if job_id not in self._running:
                return False
        self._sup.send({"op": "signal", "job": job_id, "sig": int(sig)})
        return True

    def running(self) -> dict[int, int]:
        with self._lock:
            return dict(self._running)

    def release(self, job_id: int) -> None:
        """The engine committed the job's end: the shepherd may forget it."""
        self.release_many([job_id])

    def release_many(self, job_ids: Sequence[int]) -> None:
        if job_ids:
            with contextlib.suppress(LaunchError):
                self._sup.send({"op": "release", "jobs": [int(j) for j in job_ids]})

    def recover(self, job_ids: Sequence[int]) -> list[Recovered]:
        """After a restart: for each job the store says runs, what the shepherd knows.

        "running": still running (now watched again); "exited": it ended
        while the agent was down (exit code and resource use kept); "lost":
        its status is unknown and none of its processes runs: the shepherd
        knows nothing of it (never started: the agent died between its commit
        and the launch), or reports it lost (a restarted shepherd killed it or
        found it gone, ``cause`` says which). Exits of jobs the store no
        longer calls running were already recorded: they are released. A job
        the shepherd runs that the store does not call running is killed.
        """
        with self._lock:
            hello = self.hello
        running = {int(j): int(pid) for j, pid in hello["running"].items()}
        exits = {int(r["job"]): r for r in hello["exits"]}
        wanted = set(job_ids)
        self.release_many([j for j in exits if j not in wanted])
        out = []
        for job_id in job_ids:
            if job_id in running:
                with self._lock:
                    if job_id not in self._ended_early:
                        self._running[job_id] = running[job_id]
                out.append(Recovered(job_id, "running", running[job_id], None))
            elif job_id in exits and exits[job_id].get("lost"):
                out.append(Recovered(job_id, "lost", None, None, str(exits[job_id]["lost"])))
            elif job_id in exits:
                out.append(Recovered(job_id, "exited", None, exit_from_record(exits[job_id], True)))
            else:
                out.append(Recovered(job_id, "lost", None, None))
        strays = [j for j in running if j not in wanted]
        if strays:
            logger.error("the shepherd runs jobs %s the store does not run: killed", strays)
            with self._lock:
                self._untracked.update(strays)
            for job_id in strays:
                self._sup.send({"op": "signal", "job": job_id, "sig": 9})
        return out

    def node_lost(self, address: str) -> list[int]:
        """The local machine is never lost while the agent runs on it."""
        return []

    def kill_strays(self, address: str) -> None:
        """Nothing to do: the local node never leaves and comes back."""

    def retire(self, address: str) -> None:
        """Nothing to do: a drained local node stays, drained."""

    def close(self) -> None:
        """Disconnect: the shepherd and the jobs keep running."""
        self._sup.close()

    def shutdown(self, *, kill_jobs: bool) -> None:
        """Stop the shepherd, with ``kill_jobs`` every job it runs first (its
        keeper ends with it; without ``kill_jobs``, a job still running keeps
        a worker serving it)."""
        if kill_jobs:
            for job_id in self.running():
                self.signal(job_id, 9)
        with contextlib.suppress(LaunchError):
            self._sup.send({"op": "shutdown"})
        self.close()
