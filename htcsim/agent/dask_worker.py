"""What runs inside a Dask worker for the agent: the job processes of that node.

Why these functions: with the Dask backend each worker is a node, and a job
is a Dask task pinned to the worker the kernel chose (no other worker may
take it). The task starts the job as a process of its own session, records
its pid in this module's table (so that a signal sent later with
``Client.run`` reaches its whole process group), waits for it, records the
exit, and returns it. The table outlives the agent's client: an agent
restarted after a crash asks every worker what still runs and how the rest
ended, as it asks the local shepherd. A job's process dies with its worker
process (``setpriv --pdeathsig KILL``, util-linux): a worker that is killed
is a lost node whose jobs are requeued elsewhere, and they must not also go
on running, unseen, where it was. (Processes the job itself started may
outlive it: only a cgroup would hold them all.)

Only the standard library (and the shepherd's record format): it is imported
in the worker process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from typing import Any

from htcsim.agent.shepherd import exit_record

_lock = threading.Lock()
_running: dict[int, int] = {}  # job id -> pid (the process group id)
_exits: dict[int, dict[str, Any]] = {}  # ended, not yet released by the agent
_SETPRIV = shutil.which("setpriv")
_DIE_WITH_WORKER = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []
"""The job's process gets SIGKILL when the worker thread that started it
dies; that thread waits for the job, so only the worker's death ends it."""


def _record(job_id: int, code: int, sig: int, cpu: float, rss: float) -> dict[str, Any]:
    record = exit_record(job_id, code, sig, cpu, rss)
    with _lock:
        _running.pop(job_id, None)
        _exits[job_id] = record
    return record


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Start one job here, wait for it, return its exit record (shell convention).

    The working directory, logs and environment are the job's; it runs in a
    new session (a signal to its group reaches all its processes).
    """
    job_id = int(job["job"])
    files: list[Any] = []
    try:
        for key in ("stdout", "stderr"):
            os.makedirs(os.path.dirname(job[key]), exist_ok=True)
            if key == "stderr" and job["stderr"] == job["stdout"]:
                files.append(files[0])
            else:
                files.append(open(job[key], "ab"))  # noqa: SIM115 (closed below)
        try:
            # Popen, not posix_spawn: it changes to the job's directory in the
            # child (a worker's threads share one current directory)
            process = subprocess.Popen(
                [*_DIE_WITH_WORKER, *job["argv"]],
                cwd=job["cwd"],
                env=job["env"],
                stdin=subprocess.DEVNULL,
                stdout=files[0],
                stderr=files[1],
                start_new_session=True,
            )
        except OSError as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            files[1].write(f"htcsim: cannot run {job['argv'][0]}: {exc.strerror}\n".encode())
            return _record(job_id, code, 0, -1.0, -1.0)
    finally:
        for f in {id(f): f for f in files}.values():
            f.close()
    with _lock:
        _running[job_id] = process.pid
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, for rusage
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    code = 128 + sig if sig else os.WEXITSTATUS(status)
    return _record(job_id, code, sig, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0)


def signal_job(job_id: int, sig: int) -> bool:
    """Signal a job's whole process group; False if it does not run here."""
    with _lock:
        pid = _running.get(job_id)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    return True


def job_table() -> dict[str, Any]:
    """What runs here and the exits not yet released (for an agent's restart)."""
    with _lock:
        return {"running": dict(_running), "exits": list(_exits.values())}


def release_jobs(job_ids: list[int]) -> None:
    """The agent recorded these exits: forget them."""
    with _lock:
        for job_id in job_ids:
            _exits.pop(int(job_id), None)


def read_log(path: str, tail: int) -> bytes:
    """The last ``tail`` bytes of a log file of this node."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - tail, 0))
        return f.read()
