"""A real agent for tests: ``htcsim agent serve`` in its own process, on a free
port of 127.0.0.1, with its state in a temporary directory.

Why a process and not a thread: the crash tests kill it with SIGKILL, and the
API must be reached over a real socket. Cleanup stops the agent and kills
every job process it left (jobs outlive the agent by design).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

# Every wait of the suite polls for a readiness signal under a generous bound:
# the suite must pass on a loaded machine (a 2-core one at load 10). Those
# bounds are upper limits, never what a test asserts.
READY_S = 120.0
"""An agent answering, a Dask worker joining, a process ending."""
JOB_S = 120.0
"""A job reaching a state."""
REQUEST_S = 60.0
"""One HTTP request to the agent."""


def slack() -> float:
    """How much longer than on an idle machine things may take now: the load per
    core (at least 1), or ``HTCSIM_TEST_SLACK`` when set higher. A timing bound a
    test asserts (not a wait) is scaled by it."""
    per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    return max(1.0, per_core, float(os.environ.get("HTCSIM_TEST_SLACK", "1")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AgentProcess:
    """A running agent: where it listens, the admin token, its files."""

    url: str
    token: str
    state_dir: Path
    args: list[str]
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=REQUEST_S,
        )

    def env(self, token: str | None = None) -> dict[str, str]:
        """Environment for the CLI client to reach this agent."""
        return {**os.environ, "HTCSIM_URL": self.url, "HTCSIM_TOKEN": token or self.token}

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        self.proc.kill()
        self.proc.wait(READY_S)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(READY_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(READY_S)

    def restart(self) -> None:
        self.stop()
        self.proc = _spawn(self.args, self.log)
        wait_healthy(self.url, self.proc, self.log)


def _spawn(
    args: list[str], log: Path, environ: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 (the child holds it)
    try:
        env = {**os.environ, **environ} if environ else None
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    finally:
        out.close()


def wait_healthy(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = READY_S
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the agent exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the agent did not answer in {timeout} s:\n{log.read_text()}")


def kill_jobs_of(state_dir: Path) -> None:
    """Kill the shepherd serving ``state_dir`` (its keeper first, so that no worker
    is restarted, then its worker) and every job it runs (each job is a session
    of its own: its whole process group)."""
    marker = str((state_dir / "run").resolve())
    shepherds = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmdline = p.info["cmdline"] or []
        if "htcsim.agent.executors.local.shepherd" in cmdline and marker in cmdline:
            shepherds.append((p, cmdline))
    pids = {p.pid for p, _ in shepherds}
    jobs = []
    for p, _ in shepherds:
        with suppress(psutil.Error):
            jobs += [c.pid for c in p.children() if c.pid not in pids]
    keepers_first = sorted(shepherds, key=lambda entry: entry[0].pid not in _keepers(shepherds))
    for p, _ in keepers_first:
        with suppress(psutil.Error):
            p.kill()
            p.wait(5)
    for pid in jobs:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for _, cmdline in shepherds[:1]:
        _remove_cgroups_of(marker, cmdline[-1])


def _keepers(shepherds: list[tuple[psutil.Process, list[str]]]) -> set[int]:
    """The keepers among the shepherd processes: those whose parent is none of them."""
    pids = {p.pid for p, _ in shepherds}
    out = set()
    for p, _ in shepherds:
        with suppress(psutil.Error):
            if p.ppid() not in pids:
                out.add(p.pid)
    return out


def _remove_cgroups_of(run_dir: str, options: str) -> None:
    """The cgroups a shepherd killed with SIGKILL leaves (its own, empty once its
    jobs died): the next shepherd of the same run directory would sweep them,
    but a test's run directory has none."""
    try:
        settings = json.loads(options)
    except ValueError:
        return
    remove_cgroups_of(run_dir, [settings.get("cgroup"), settings.get("devices_cgroup")])


def cgroup_mounts() -> list[str]:
    """Where a shepherd of this machine may make cgroups: the cgroup v2 mount and
    the v1 devices controller's (as the shepherd finds them)."""
    found = []
    with suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            _, where, kind, opts, *_ = line.split()
            if kind == "cgroup2" or (kind == "cgroup" and "devices" in opts.split(",")):
                found.append(where)
    return found


def remove_cgroups_of(run_dir: str, bases: list[str | None]) -> None:
    """Remove the (empty) cgroups of the shepherd of ``run_dir`` under each base
    folder: its jobs', its own leaf and its folder; a populated one stays."""
    digest = hashlib.sha1(run_dir.encode()).hexdigest()[:16]
    for base in bases:
        if not base:
            continue
        for root in Path(base).rglob(f"htcsim-{digest}"):
            deadline = time.monotonic() + 5.0
            while root.exists() and time.monotonic() < deadline:
                for group in [*root.glob("job-*"), root / "shepherd", root]:
                    with suppress(OSError):
                        group.rmdir()
                time.sleep(0.02)


@contextmanager
def running_agent(
    tmp_path: Path,
    *extra: str,
    policy: str | None = None,
    tables: str = "",
    environ: dict[str, str] | None = None,
    **settings: Any,
) -> Iterator[AgentProcess]:
    """Start an agent (settings: keys of AgentConfig, written to agent.toml;
    ``tables``: TOML tables appended to it, such as ``[cluster]``; ``environ``:
    variables set for the agent's process, such as XDG_CONFIG_HOME). It runs as
    root in single-user mode (``allow_root``, ``run_jobs_as = "agent"``) unless
    the settings say otherwise."""
    state_dir = tmp_path / "agent-state"
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = tmp_path / "agent.toml"
    lines = [f'state_dir = "{state_dir}"', f"port = {port}"]
    settings = {"allow_root": True, "run_jobs_as": "agent"} | settings
    for key, value in settings.items():
        lines.append(
            f"{key} = {value!r}".replace("'", '"')
            if not isinstance(value, bool)
            else f"{key} = {str(value).lower()}"
        )
    if policy is not None:
        policy_file = tmp_path / "policy.toml"
        policy_file.write_text(policy)
        lines.append(f'policy = "{policy_file}"')
    config.write_text("\n".join(lines) + "\n" + tables)
    args = [sys.executable, "-m", "htcsim", "agent", "serve", "--config", str(config), *extra]
    log = tmp_path / "agent.log"
    proc = _spawn(args, log, environ)
    url = f"http://127.0.0.1:{port}"
    agent: AgentProcess | None = None
    try:
        wait_healthy(url, proc, log)
        token = tomllib.loads((state_dir / "client.toml").read_text())["token"]
        agent = AgentProcess(url, token, state_dir, args, proc, log)
        yield agent
    finally:
        if agent is not None:
            agent.stop()
        elif proc.poll() is None:
            proc.kill()
            proc.wait(READY_S)
        kill_jobs_of(state_dir)


def wait_for(check: Any, timeout: float = JOB_S, every: float = 0.05) -> Any:
    """Poll ``check()`` until it returns a true value (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s (last value {value!r})")
        time.sleep(every)
