"""The shepherd: the one process that starts, watches and reaps the agent's jobs.

Why a process of its own (as Slurm's slurmstepd or HTCondor's starter): it
is the parent of every job, so it learns every exit code and resource use
from the kernel (``wait4``), even while the agent is down, and it survives
the agent (its own session): an agent killed with ``kill -9`` reconnects on
restart and is told which jobs still run and how the others ended; nothing
is guessed. It also takes process creation off the agent's interpreter: the
agent sends a line of JSON per job, the shepherd (single-threaded, so it may
change its own directory, CPU affinity and limits around each spawn) starts
the job itself with ``posix_spawnp``, no shell in between.

Protocol: JSON lines over an abstract Unix socket named after the run
directory. Agent -> shepherd: ``launch`` (a list of jobs), ``signal``,
``release`` (the agent committed an exit: forget it), ``shutdown``.
Shepherd -> agent: ``hello`` (on connect: running jobs, exits not yet
released), ``started`` (pid or error per job), ``exit``. Exits not yet
released are also appended to ``exits.jsonl`` in the run directory, so a
shepherd that is itself restarted still knows them.

Only the standard library is imported: it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from htcsim.agent.executors.base import exit_record

RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
"""Python ignores these; a job gets them back at their default action."""
LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


def socket_name(run_dir: Path) -> bytes:
    """The abstract socket of the shepherd of ``run_dir`` (no path length limit,
    nothing left on disk)."""
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:20]
    return f"\0htcsim-shepherd-{digest}".encode()


class Shepherd:
    def __init__(self, run_dir: Path, cgroup_base: Path | None) -> None:
        self.run_dir = run_dir
        self.cgroup_base = cgroup_base
        self.journal_path = run_dir / "exits.jsonl"
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(socket_name(run_dir))
        self.listener.listen(4)
        self.sel.register(self.listener, selectors.EVENT_READ, "listen")
        self.client: socket.socket | None = None
        self.inbuf = b""
        self.jobs: dict[int, tuple[int, int]] = {}  # job -> (pid, pidfd)
        self.by_fd: dict[int, int] = {}
        self.exits: dict[int, dict[str, Any]] = {}  # reported, not yet released
        self.cgroups: dict[int, Path] = {}
        self.affinity = tuple(sorted(os.sched_getaffinity(0)))
        self.cwd = os.getcwd()
        self._load_journal()
        self.journal = open(self.journal_path, "a", buffering=1)  # noqa: SIM115
        self.running = True

    def _load_journal(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            for line in self.journal_path.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError):
                    record = json.loads(line)
                    if record.get("op") == "exit":
                        self.exits[int(record["job"])] = record
                    elif record.get("op") == "release":
                        self.exits.pop(int(record["job"]), None)
        # rewrite it compact: only what is still unreleased
        with open(self.journal_path, "w") as out:
            for record in self.exits.values():
                out.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ I/O

    def send(self, message: dict[str, Any]) -> None:
        if self.client is None:
            return
        try:
            self.client.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            self._drop_client()

    def _drop_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.client)
            self.client.close()
            self.client = None
            self.inbuf = b""

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        self._drop_client()  # one agent at a time: the newest
        self.client = conn
        self.sel.register(conn, selectors.EVENT_READ, "client")
        self.send(
            {
                "op": "hello",
                "pid": os.getpid(),
                "running": {str(j): pid for j, (pid, _) in self.jobs.items()},
                "exits": list(self.exits.values()),
            }
        )

    def _read_client(self, conn: Any) -> None:
        if conn is not self.client:
            return  # an agent already dropped in this round of events (a failed send, a newer one)
        try:
            data = self.client.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        self.inbuf += data
        *lines, self.inbuf = self.inbuf.split(b"\n")
        for line in lines:
            if line.strip():
                self._handle(json.loads(line))

    def _handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "launch":
            self.send({"op": "started", "jobs": [self._try_launch(job) for job in message["jobs"]]})
        elif op == "signal":
            self._signal(int(message["job"]), int(message["sig"]))
        elif op == "release":
            for job in message["jobs"]:
                if self.exits.pop(int(job), None) is not None:
                    self.journal.write(json.dumps({"op": "release", "job": job}) + "\n")
            if not self.exits:
                self.journal.truncate(0)
        elif op == "shutdown":
            self.running = False

    # ------------------------------------------------------------------ jobs

    def _try_launch(self, job: dict[str, Any]) -> dict[str, Any]:
        """``_launch``, with any failure turned into that job's error: one bad
        job never stops the shepherd."""
        try:
            return self._launch(job)
        except Exception as exc:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, self.affinity)
                os.chdir(self.cwd)
            return {"job": job.get("job"), "error": f"cannot start: {exc}"}

    def _launch(self, job: dict[str, Any]) -> dict[str, Any]:
        """Start one job; ``{"job", "pid"}`` or ``{"job", "error"}``."""
        job_id = int(job["job"])
        if job_id in self.jobs:
            return {"job": job_id, "error": "already running"}
        fds: list[int] = []
        try:
            try:
                os.chdir(job["cwd"])
            except OSError as exc:
                return {"job": job_id, "error": f"cannot enter {job['cwd']}: {exc.strerror}"}
            for key in ("stdout", "stderr"):
                if key == "stderr" and job["stderr"] == job["stdout"]:
                    fds.append(fds[0])
                    continue
                try:
                    fds.append(os.open(job[key], LOG_FLAGS, 0o644))
                except OSError as exc:
                    return {"job": job_id, "error": f"cannot open {key} {job[key]}: {exc.strerror}"}
            cpus = tuple(job.get("cpus") or self.affinity)
            if cpus != self.affinity:
                os.sched_setaffinity(0, cpus)
            mem = int(job.get("mem_mib") or 0)
            limit = resource.getrlimit(resource.RLIMIT_AS)
            if mem and self.cgroup_base is None:
                resource.setrlimit(resource.RLIMIT_AS, (mem << 20, limit[1]))
            try:
                pid = os.posix_spawnp(
                    job["argv"][0],
                    job["argv"],
                    job["env"],
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_DUP2, fds[0], 1),
                        (os.POSIX_SPAWN_DUP2, fds[1], 2),
                    ],
                    setsid=True,
                    setsigmask=(),
                    setsigdef=RESET_SIGNALS,
                )
            except OSError as exc:
                # the job "ran" and failed to exec, as a shell reports it: 127 / 126
                code = 127 if isinstance(exc, FileNotFoundError) else 126
                os.write(fds[1], f"htcsim: cannot run {job['argv'][0]}: {exc.strerror}\n".encode())
                self._record_exit(job_id, code, 0, -1.0, -1.0)
                return {"job": job_id, "pid": 0}
            finally:
                if mem and self.cgroup_base is None:
                    resource.setrlimit(resource.RLIMIT_AS, limit)
                if cpus != self.affinity:
                    os.sched_setaffinity(0, self.affinity)
            if mem and self.cgroup_base is not None:
                self._enter_cgroup(job_id, pid, mem)
            pidfd = os.pidfd_open(pid)
            self.jobs[job_id] = (pid, pidfd)
            self.by_fd[pidfd] = job_id
            self.sel.register(pidfd, selectors.EVENT_READ, "job")
            return {"job": job_id, "pid": pid}
        finally:
            for fd in set(fds):
                os.close(fd)
            os.chdir(self.cwd)

    def _enter_cgroup(self, job_id: int, pid: int, mem_mib: int) -> None:
        assert self.cgroup_base is not None
        group = self.cgroup_base / f"htcsim-job-{job_id}"
        with contextlib.suppress(OSError):
            group.mkdir(exist_ok=True)
            (group / "memory.max").write_text(str(mem_mib << 20))
            with contextlib.suppress(OSError):
                (group / "memory.swap.max").write_text("0")
            (group / "cgroup.procs").write_text(str(pid))
            self.cgroups[job_id] = group

    def _signal(self, job_id: int, sig: int) -> None:
        entry = self.jobs.get(job_id)
        if entry is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(entry[0], sig)
        group = self.cgroups.get(job_id)
        if group is not None and sig == signal.SIGKILL:
            with contextlib.suppress(OSError):
                (group / "cgroup.kill").write_text("1")

    def _reap(self, pidfd: int) -> None:
        job_id = self.by_fd.pop(pidfd)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        pid, _ = self.jobs.pop(job_id)
        try:
            _, status, usage = os.wait4(pid, 0)
        except ChildProcessError:
            self._record_exit(job_id, -1, 0, -1.0, -1.0)
            return
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        code = 128 + sig if sig else os.WEXITSTATUS(status)
        self._record_exit(
            job_id, code, sig, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0
        )
        group = self.cgroups.pop(job_id, None)
        if group is not None:
            with contextlib.suppress(OSError):
                group.rmdir()

    def _record_exit(self, job_id: int, code: int, sig: int, cpu: float, rss: float) -> None:
        record = exit_record(job_id, code, sig, cpu, rss)
        self.exits[job_id] = record
        self.journal.write(json.dumps(record) + "\n")
        self.send(record)

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "running", False))
        while self.running:
            for key, _ in self.sel.select(timeout=1.0):
                if key.data == "listen":
                    self._accept()
                elif key.data == "client":
                    self._read_client(key.fileobj)
                else:
                    self._reap(key.fd)
        self.journal.close()


def main(argv: list[str]) -> None:
    run_dir = Path(argv[0]).resolve()
    cgroup_base = Path(argv[1]) if len(argv) > 1 and argv[1] else None
    Shepherd(run_dir, cgroup_base).run()


if __name__ == "__main__":
    main(sys.argv[1:])
