"""The local executor: the agent's side of the shepherd, which runs the jobs.

The jobs themselves are started, watched and reaped by the shepherd
(``htcsim.agent.executors.local.shepherd``), a small process of its own that outlives the
agent; see its docstring for why. This module starts the shepherd when none
serves the run directory, sends it launches and signals, and turns its
reports into ``JobExit`` records for the engine. After a crash of the agent,
``recover`` answers from what the shepherd tells on connection: which jobs
still run (re-adopted as they are) and how the others ended, with their
exit codes and resource use: nothing is guessed.

Every job runs in its own session (so its own process group: a signal
reaches the whole job), pinned to its CPUs from birth, with its memory limit
(cgroup v2 where the agent's cgroup is delegated, else RLIMIT_AS).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
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
from htcsim.agent.executors.local.shepherd import socket_name

logger = logging.getLogger(__name__)

MemoryLimitMode = Literal["cgroup-v2", "rlimit-as", "off"]


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


class LocalExecutor:
    """Runs jobs on this machine through its shepherd process.

    Threads: a reader thread receives the shepherd's reports and calls
    ``on_exit`` from there (it should be quick: hand the exit to the
    engine's thread). ``launch_many``, ``signal``, ``running``, ``release``
    are safe from any thread. ``close`` disconnects; the shepherd and the
    jobs keep running, and the next executor on the same run directory (a
    restarted agent) reconnects to them.
    """

    memory_limit_mode: MemoryLimitMode
    memory_limit_note: str

    def __init__(
        self,
        run_dir: Path,
        on_exit: Callable[[JobExit], None],
        memory_limit: str = "auto",
        *,
        connect_timeout_s: float = 20.0,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._on_exit = on_exit
        self._cgroup_base: Path | None = None
        self._setup_memory_limit(memory_limit)
        self._lock = threading.Lock()
        self._launch_lock = threading.Lock()
        self._running: dict[int, int] = {}
        self._replies: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._dirs_seen: dict[str, float] = {}
        self._ended_early: set[int] = set()  # exits read before their launch reply
        self._closed = False
        self._timeout = connect_timeout_s
        self._sock, self._reader, self.hello = self._connect()
        self.shepherd_pid = int(self.hello["pid"])
        self._thread = threading.Thread(target=self._read, name="htcsim-executor", daemon=True)
        self._thread.start()

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

    # ------------------------------------------------------------------ the shepherd

    def _connect(self) -> tuple[socket.socket, Any, dict[str, Any]]:
        """Connect to the run directory's shepherd, starting one if none answers."""
        name = socket_name(self.run_dir)
        deadline = time.monotonic() + self._timeout
        started = False
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(name)
            except (ConnectionRefusedError, FileNotFoundError):
                sock.close()
                if not started:
                    self._start_shepherd()
                    started = True
                if time.monotonic() > deadline:
                    raise LaunchError(
                        f"the shepherd of {self.run_dir} did not start; see "
                        f"{self.run_dir / 'shepherd.log'}"
                    ) from None
                time.sleep(0.01)
                continue
            reader = sock.makefile("rb")
            hello = json.loads(reader.readline())
            return sock, reader, hello

    def _start_shepherd(self) -> None:
        log = open(self.run_dir / "shepherd.log", "ab")  # noqa: SIM115 (the child keeps it)
        try:
            self._shepherd = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "htcsim.agent.executors.local.shepherd",
                    str(self.run_dir),
                    str(self._cgroup_base or ""),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.run_dir,
                start_new_session=True,  # it outlives the agent
            )
        finally:
            log.close()

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        with self._lock:
            if self._closed:
                raise LaunchError("the executor is closed")
            self._sock.sendall(data)

    def _read(self) -> None:
        """The shepherd's reports: replies to launches, and exits."""
        try:
            for line in self._reader:
                message = json.loads(line)
                if message["op"] == "started":
                    self._replies.put(message)
                elif message["op"] == "exit":
                    with self._lock:
                        if self._running.pop(int(message["job"]), None) is None:
                            self._ended_early.add(int(message["job"]))
                    try:
                        self._on_exit(exit_from_record(message))
                    except Exception:  # the reader must survive a bad callback
                        logger.exception("job %s: handling its exit failed", message["job"])
        except (OSError, ValueError):
            pass
        with self._lock:
            closing = self._closed
            lost = list(self._running)
            self._running.clear()
        self._replies.put({"op": "gone"})
        if closing:
            return
        # the shepherd died: how its jobs ended is unknown
        logger.error("the shepherd of %s is gone; its %d jobs are lost", self.run_dir, len(lost))
        for job_id in lost:
            self._on_exit(JobExit(job_id, -1, 0, time.time(), -1.0, -1.0))

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
        with self._launch_lock:  # replies come in request order
            self._send({"op": "launch", "jobs": jobs})
            reply = self._replies.get(timeout=60)
        if reply["op"] != "started":
            raise LaunchError("the shepherd is gone")
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
            if pid:
                with self._lock:
                    if spec.job_id not in self._ended_early:
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
        self._send({"op": "signal", "job": job_id, "sig": int(sig)})
        return True

    def running(self) -> dict[int, int]:
        with self._lock:
            return dict(self._running)

    def release(self, job_id: int) -> None:
        """The engine committed the job's end: the shepherd may forget it."""
        self.release_many([job_id])

    def release_many(self, job_ids: Sequence[int]) -> None:
        if job_ids:
            with contextlib.suppress(LaunchError, OSError):
                self._send({"op": "release", "jobs": [int(j) for j in job_ids]})

    def recover(self, job_ids: Sequence[int]) -> list[Recovered]:
        """After a restart: for each job the store says runs, what the shepherd knows.

        "running": still running (now watched again); "exited": it ended
        while the agent was down (exit code and resource use kept); "lost":
        the shepherd knows nothing of it (never started, or the shepherd
        itself was restarted while it ran). Exits of jobs the store no
        longer calls running were already recorded: they are released.
        """
        running = {int(j): int(pid) for j, pid in self.hello["running"].items()}
        exits = {int(r["job"]): r for r in self.hello["exits"]}
        wanted = set(job_ids)
        self.release_many([j for j in exits if j not in wanted])
        out = []
        for job_id in job_ids:
            if job_id in running:
                with self._lock:
                    self._running[job_id] = running[job_id]
                out.append(Recovered(job_id, "running", running[job_id], None))
            elif job_id in exits:
                out.append(Recovered(job_id, "exited", None, exit_from_record(exits[job_id], True)))
            else:
                out.append(Recovered(job_id, "lost", None, None))
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
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        self._sock.close()

    def shutdown(self, *, kill_jobs: bool) -> None:
        """Stop the shepherd (and, with ``kill_jobs``, every job it runs first)."""
        if kill_jobs:
            for job_id in self.running():
                self.signal(job_id, 9)
        with contextlib.suppress(LaunchError, OSError):
            self._send({"op": "shutdown"})
        self.close()
