"""A real Dask site for the agent's tests and benchmarks: a scheduler and
worker processes on 127.0.0.1, each worker a node with declared resources;
with ``tls``, they speak TLS only, with certificates ``htcsim agent certs``
made (the agent's own in ``agent_settings``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil

from htcsim.agent.executors.dask.exit_journal import journal_path
from tests.agent_harness import READY_S, free_port


def make_certs(out_dir: Path) -> None:
    """A CA and the three roles' certificates, by the real command."""
    done = subprocess.run(
        [sys.executable, "-m", "htcsim", "agent", "certs", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=READY_S,
    )
    assert done.returncode == 0, done.stderr


def tls_settings(certs: Path) -> dict[str, str]:
    """The agent's TLS settings for the files ``make_certs`` wrote in ``certs``."""
    return {
        "tls_ca_file": str(certs / "ca.pem"),
        "tls_cert": str(certs / "agent.pem"),
        "tls_key": str(certs / "agent-key.pem"),
    }


WORKERS = {  # name -> declared resources
    "big-0": "cores=4,mem_mib=4000,gpus=0",
    "gpu-0": "cores=2,mem_mib=2000,gpus=1",
    "small-0": "cores=1,mem_mib=1000,gpus=0",
    "small-1": "cores=2,mem_mib=1000,gpus=0",
}


class DaskSite:
    """A scheduler and its workers, each a process of its own."""

    def __init__(
        self,
        tmp_path: Path,
        workers: dict[str, str] | None = None,
        *,
        nanny: bool = False,
        tls: bool = False,
        supervised: bool = False,
    ) -> None:
        """``nanny``: each worker runs under a nanny process (``dask worker``'s
        default, as in the Kubernetes manifests); ``workers[name]`` is then the
        nanny's process. ``tls``: certificates in ``tmp_path/certs`` (made by the
        real ``htcsim agent certs``), the scheduler and the workers given theirs.
        ``supervised``: each worker is started again whenever it exits, as
        systemd's ``Restart=always`` or a Deployment does (a shell loop, in a
        session of its own: ``workers[name]`` is the loop)."""
        self.declared = workers or WORKERS
        self.nanny = nanny
        self.supervised = supervised
        self.port = free_port()
        self.certs = tmp_path / "certs" if tls else None
        if self.certs is not None:
            make_certs(self.certs)
        self.address = f"{'tls' if tls else 'tcp'}://127.0.0.1:{self.port}"
        self.logs = tmp_path / "dask"
        self.logs.mkdir()
        self.scheduler = self.start_scheduler()
        self.workers = {name: self.start_worker(name) for name in self.declared}

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        """The scheduler, on this site's port (again, after ``kill_scheduler``)."""
        return self._spawn(
            "scheduler",
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-dashboard",
                *self.tls_flags("scheduler"),
            ],
        )

    def kill_scheduler(self) -> None:
        """kill -9 of the scheduler (reaped: its port is free again)."""
        self.scheduler.kill()
        self.scheduler.wait(READY_S)

    def tls_flags(self, role: str) -> list[str]:
        """The ``dask scheduler`` / ``dask worker`` TLS options for ``role``'s files."""
        if self.certs is None:
            return []
        return [
            "--tls-ca-file",
            str(self.certs / "ca.pem"),
            "--tls-cert",
            str(self.certs / f"{role}.pem"),
            "--tls-key",
            str(self.certs / f"{role}-key.pem"),
        ]

    def agent_settings(self) -> dict[str, Any]:
        """The agent's settings for this site: its scheduler, and the agent's
        certificate with TLS, else ``dask_insecure``."""
        if self.certs is None:
            return {"scheduler": self.address, "dask_insecure": True}
        return {"scheduler": self.address, **tls_settings(self.certs)}

    def _spawn(
        self, name: str, args: list[str], *, session: bool = False
    ) -> subprocess.Popen[bytes]:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115
        try:
            return subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.logs,
                start_new_session=session,
            )
        finally:
            out.close()

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        command = self.worker_command(name)
        if self.supervised:  # started again each time it exits
            loop = 'while :; do "$@"; sleep 0.2; done'
            return self._spawn(name, ["sh", "-c", loop, "sh", *command], session=True)
        return self._spawn(name, command)

    def worker_command(self, name: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            self.address,
            "--name",
            name,
            "--nthreads",
            "8",
            "--resources",
            self.declared[name],
            *([] if self.nanny else ["--no-nanny"]),
            "--no-dashboard",
            "--host",
            "127.0.0.1",
            *self.tls_flags("worker"),
        ]

    def stop(self) -> None:
        for process in [*self.workers.values(), self.scheduler]:
            children = []
            if process.poll() is None:
                with contextlib.suppress(psutil.Error):  # a nanny's worker process
                    children = psutil.Process(process.pid).children(recursive=True)
                if self.supervised and process is not self.scheduler:
                    with contextlib.suppress(ProcessLookupError):  # the loop and its worker
                        os.killpg(process.pid, signal.SIGKILL)
                process.kill()
            process.wait(READY_S)
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
        for name in self.declared:  # the exit journals its workers kept on this machine
            journal_path(self.address, name).unlink(missing_ok=True)


def job_groups(work: Path) -> dict[int, set[int]]:
    """The live process groups of each job running in ``work`` (by the
    HTCSIM_JOB_ID of its processes; zombies are dead)."""
    out: dict[int, set[int]] = {}
    for process in psutil.process_iter(["pid", "cwd", "environ", "status"]):
        info = process.info
        if info["cwd"] != str(work) or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        job = (info["environ"] or {}).get("HTCSIM_JOB_ID")
        if job:
            with contextlib.suppress(ProcessLookupError):
                out.setdefault(int(job), set()).add(os.getpgid(info["pid"]))
    return out


def hang_worker(site: DaskSite, name: str, work: Path) -> list[psutil.Process]:
    """SIGSTOP to a worker started with a nanny, and to the nanny (a hung node
    daemon, a cut network): its jobs (those running in ``work``) and its job
    guard keep running. Returns the processes stopped (SIGCONT them)."""
    nanny = psutil.Process(site.workers[name].pid)
    stopped = [
        process
        for process in [nanny, *nanny.children(recursive=True)]
        if "job_guard" not in " ".join(process.cmdline()) and process.cwd() != str(work)
    ]
    for process in stopped:
        process.send_signal(signal.SIGSTOP)
    return stopped


def wake(stopped: list[psutil.Process]) -> None:
    for process in stopped:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGCONT)


class GroupSampler:
    """Samples every 50 ms the live process groups of each job; remembers the
    most groups any job had at once."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.most: dict[int, set[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for job, groups in job_groups(self.work).items():
                if len(groups) > len(self.most.get(job, ())):
                    self.most[job] = groups

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(READY_S)
