"""The shepherd's security: only its agent talks to it, jobs run as their
owners, and every process a job starts dies with it.

Real processes throughout. Tests that need root or the unprivileged accounts
(htcsim-alice, htcsim-eve; CI creates them) are skipped without them. Another
account's code runs under Debian's ``/usr/bin/python3`` (stdlib only), in a
world-writable (sticky) folder under /tmp, since pytest's tmp_path is root's.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from htcsim.agent.executors.base import JobExit, LaunchError, LaunchSpec
from htcsim.agent.executors.local.executor import LocalExecutor, detect_job_cgroup
from htcsim.agent.executors.local.shepherd import SECRET_FILE, socket_path
from tests.test_agent_executor import Exits, wait_until

DEADLINE_S = 120.0  # an upper bound on a readiness wait: generous, for a loaded machine
SYSTEM_PYTHON = "/usr/bin/python3"


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as dead)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def account(name: str) -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root (jobs as other accounts)")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"needs the account {name} (CI creates it)")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"needs {SYSTEM_PYTHON}")


@pytest.fixture
def exits() -> Exits:
    return Exits()


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every account can enter and write (sticky, like /tmp)."""
    d = Path(tempfile.mkdtemp(prefix="htcsim-sec-", dir="/tmp"))
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def executor_on(run: Path, exits: Exits, **kw: str) -> Iterator[LocalExecutor]:
    ex = LocalExecutor(run, exits, **kw)
    try:
        yield ex
    finally:
        ex.shutdown(kill_jobs=True)
        wait_until(lambda: not alive(ex.shepherd_pid))


def spec(d: Path, job_id: int, script: str, **kw: object) -> LaunchSpec:
    base: dict[str, object] = {
        "cwd": str(d),
        "env": {"PATH": "/bin:/usr/bin", "HTCSIM_JOB_ID": str(job_id)},
        "stdout": str(d / f"job{job_id}.out"),
        "stderr": str(d / f"job{job_id}.err"),
    }
    base.update(kw)
    return LaunchSpec(job_id=job_id, argv=["sh", "-c", script], **base)  # type: ignore[arg-type]


def run_job(ex: LocalExecutor, exits: Exits, d: Path, job_id: int, script: str) -> JobExit:
    ex.launch(spec(d, job_id, script))
    return exits.wait(job_id)


# ---------------------------------------------------------------- only the agent talks to it

ATTACK = r"""
import json, os, socket, sys
path, target = sys.argv[1], sys.argv[2]
out = {}
try:
    os.listdir(os.path.dirname(path))
    out["listdir"] = "ok"
except OSError as exc:
    out["listdir"] = exc.errno
job = {"job": 999, "argv": ["sh", "-c", "touch " + target], "cwd": "/tmp",
       "env": {"PATH": "/bin:/usr/bin"}, "stdout": "/dev/null", "stderr": "/dev/null"}
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
try:
    s.connect(path)
    out["connect"] = "ok"
    s.sendall(json.dumps({"op": "launch", "jobs": [job]}).encode() + b"\n")
    out["reply"] = s.recv(65536).decode()
except OSError as exc:
    out.setdefault("connect", exc.errno)
    out["error"] = exc.errno
print(json.dumps(out))
"""


def as_eve(shared: Path, *args: str) -> dict[str, object]:
    script = shared / "attack.py"
    script.write_text(ATTACK)
    os.chmod(script, 0o644)
    proc = subprocess.run(
        ["runuser", "-u", "htcsim-eve", "--", SYSTEM_PYTHON, str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_another_account_cannot_reach_or_use_the_shepherd(shared: Path, exits: Exits) -> None:
    """eve can neither enter the run directory nor, were the socket reachable,
    get past the peer check: the would-be job never runs, and the agent's own
    connection keeps working."""
    account("htcsim-eve")
    run = shared / "run"
    target = shared / "eve-was-here"
    with executor_on(run, exits) as ex:
        sock = socket_path(run)
        assert stat.S_IMODE(os.stat(run).st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        assert stat.S_IMODE(os.stat(run / SECRET_FILE).st_mode) == 0o600
        out = as_eve(shared, str(sock), str(target))
        assert out["listdir"] != "ok" and out["connect"] != "ok", out
        # were the folder opened by mistake, the peer check still refuses eve
        os.chmod(run, 0o711)
        os.chmod(sock, 0o777)
        try:
            out = as_eve(shared, str(sock), str(target))
        finally:
            os.chmod(run, 0o700)
        assert out["connect"] == "ok" and not out.get("reply"), out
        time.sleep(0.5)  # a job that ran would have touched it by now (bound, not readiness)
        assert not target.exists()
        assert ex.health()[0], ex.health()
        work = shared / "work"
        work.mkdir()
        done = run_job(ex, exits, work, 1, "echo after > after.txt")
        assert done.exit_code == 0
        assert (work / "after.txt").read_text() == "after\n"
        assert ex.health()[0]
    assert not target.exists()


def test_a_connection_without_the_secret_does_not_displace_the_agent(
    tmp_path: Path, exits: Exits
) -> None:
    run = tmp_path / "run"
    work = tmp_path / "work"
    work.mkdir()
    with executor_on(run, exits) as ex:
        assert stat.S_IMODE(os.stat(run).st_mode) == 0o700
        launch = {
            "op": "launch",
            "jobs": [spec(work, 99, "touch intruder").payload() | {"cpus": [], "mem_mib": 0}],
        }
        for first in (
            {"op": "hello", "secret": "0" * 64},  # a wrong secret
            {"op": "hello"},  # none
            launch,  # no handshake at all
        ):
            intruder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            intruder.settimeout(DEADLINE_S)
            intruder.connect(str(socket_path(run)))
            with contextlib.suppress(OSError):
                intruder.sendall(json.dumps(first).encode() + b"\n")
                intruder.sendall(json.dumps(launch).encode() + b"\n")
            reply = b""
            with contextlib.suppress(OSError):
                reply = intruder.recv(65536)  # closed by the shepherd: EOF
            intruder.close()
            assert reply == b"", reply
        assert ex.health() == (True, f"the shepherd {ex.shepherd_pid} is connected")
        done = run_job(ex, exits, work, 1, "echo ok")
        assert done.exit_code == 0 and (work / "job1.out").read_text() == "ok\n"
        assert not (work / "intruder").exists()
        # the agent's own secret (a restarted agent) does take over, and says so
        second = LocalExecutor(run, Exits())
        try:
            assert second.shepherd_pid == ex.shepherd_pid
            wait_until(lambda: not ex.health()[0])
            assert "displaced" in ex.health()[1]
            assert second.health()[0]
        finally:
            second.shutdown(kill_jobs=True)  # the shepherd is now its to stop


def test_an_agent_with_another_secret_is_refused_in_one_line(tmp_path: Path, exits: Exits) -> None:
    """A shepherd of another secret serves the run directory (its file was
    replaced): the new agent's executor is refused, saying what to do, and the
    shepherd and its agent are left as they were."""
    run = tmp_path / "run"
    with executor_on(run, exits) as ex:
        (run / SECRET_FILE).write_text("f" * 64 + "\n")
        with pytest.raises(LaunchError, match="refused this agent's secret"):
            LocalExecutor(run, Exits(), connect_timeout_s=DEADLINE_S)
        assert ex.health()[0] and ex.status()["restarts"] == 0


def test_healthz_reports_a_restarted_then_a_displaced_shepherd(tmp_path: Path) -> None:
    """/healthz and the metrics show a killed shepherd's restart (ok again, the
    restart counted, with its reason), and 503 with the reason once another
    agent's connection has displaced this one."""
    from fastapi.testclient import TestClient

    from htcsim.agent.config import AgentConfig
    from htcsim.agent.server import Agent

    agent = Agent(AgentConfig(state_dir=tmp_path / "state", allow_root=True, kill_grace_s=1))
    agent.start()
    try:
        client = TestClient(agent.app, raise_server_exceptions=False)
        client.headers["Authorization"] = f"Bearer {agent.admin_token}"
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["shepherd"]["restarts"] == 0
        cluster = client.get("/cluster").json()
        assert cluster["containment"] in ("cgroup", "subreaper")
        assert cluster["executor"]["ok"] is True
        metrics = client.get("/metrics").text
        assert "htcsim_shepherd_up 1.0" in metrics
        assert "htcsim_shepherd_restarts_total 0.0" in metrics
        executor = agent.engine.executor
        assert isinstance(executor, LocalExecutor)
        killed = executor.shepherd_pid
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: client.get("/healthz").json()["shepherd"]["restarts"] == 1)
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        shepherd = health.json()["shepherd"]
        assert shepherd["pid"] != killed and shepherd["pid"] == executor.shepherd_pid
        assert f"worker {killed} was killed by signal 9" in shepherd["last_restart_reason"]
        metrics = client.get("/metrics").text
        assert "htcsim_shepherd_up 1.0" in metrics
        assert "htcsim_shepherd_restarts_total 1.0" in metrics
        other = LocalExecutor(agent.config.run_dir, Exits())  # the agent's own secret
        try:
            wait_until(lambda: client.get("/healthz").status_code == 503)
            down = client.get("/healthz").json()
            assert down["status"] == "down" and "displaced" in down["detail"], down
            assert "htcsim_shepherd_up 0.0" in client.get("/metrics").text
        finally:
            other.shutdown(kill_jobs=True)  # the shepherd is now its to stop
            wait_until(lambda: not alive(other.shepherd_pid))
    finally:
        agent.stop()


# ---------------------------------------------------------------- jobs run as their owner


def test_a_job_runs_as_its_owner_with_its_permissions(
    tmp_path: Path, shared: Path, exits: Exits
) -> None:
    alice = account("htcsim-alice")
    owner = {
        "uid": alice.pw_uid,
        "gid": alice.pw_gid,
        "groups": tuple(os.getgrouplist(alice.pw_name, alice.pw_gid)),
    }
    with executor_on(tmp_path / "run", exits) as ex:
        ex.launch(spec(shared, 1, "id -u > id.txt; id -g; echo out", **owner))
        assert exits.wait(1).exit_code == 0
        assert (shared / "id.txt").read_text().strip() == str(alice.pw_uid)
        assert os.stat(shared / "id.txt").st_uid == alice.pw_uid
        assert os.stat(shared / "job1.out").st_uid == alice.pw_uid
        assert (shared / "job1.out").read_text() == f"{alice.pw_gid}\nout\n"

        root_only = shared / "root-only"
        root_only.mkdir(mode=0o700)
        os.chmod(root_only, 0o700)
        with pytest.raises(LaunchError, match=r"job 2: cannot open stdout .*Permission denied"):
            ex.launch(spec(shared, 2, "true", stdout=str(root_only / "x.out"), **owner))
        assert not (root_only / "x.out").exists()
        with pytest.raises(LaunchError, match=r"job 3: cannot enter .*Permission denied"):
            out = str(shared / "j3.out")
            ex.launch(spec(root_only, 3, "true", stdout=out, stderr=out, **owner))

        victim = root_only / "victim"
        victim.write_text("root's\n")
        (shared / "link.out").symlink_to(victim)
        with pytest.raises(LaunchError, match=r"job 4: cannot open stdout .*symbolic link"):
            ex.launch(spec(shared, 4, "echo pwned", stdout=str(shared / "link.out"), **owner))
        assert victim.read_text() == "root's\n"
        with pytest.raises(LaunchError, match="symbolic link"):  # single-user jobs too
            ex.launch(spec(shared, 5, "echo pwned", stdout=str(shared / "link.out")))
        assert victim.read_text() == "root's\n"
        assert ex.running() == {}
        assert ex.health()[0]  # the failures were the jobs', not the shepherd's


# ---------------------------------------------------------------- containment

GRANDCHILD = "setsid sh -c 'echo $$ > gc.pid; exec sleep 300' & "


def containments() -> list[str]:
    out = ["subreaper"]
    if detect_job_cgroup()[0] is not None:
        out.insert(0, "cgroup")
    return out


@pytest.mark.parametrize("how", ["term", "kill", "main-exits"])
@pytest.mark.parametrize("containment", ["cgroup", "subreaper"])
def test_a_setsid_grandchild_dies_with_its_job(
    tmp_path: Path, exits: Exits, containment: str, how: str
) -> None:
    """cancel (SIGTERM), the kill after the grace (walltime, cancel, agent
    shutdown: SIGKILL) and the end of the job's main process all take the
    grandchild that left the job's session."""
    if containment not in containments():
        pytest.skip(f"no writable cgroup v2 with cgroup.kill here: {detect_job_cgroup()[1]}")
    work = tmp_path / "work"
    work.mkdir()
    with executor_on(tmp_path / "run", exits, containment=containment) as ex:
        assert ex.containment_mode == containment
        if how == "main-exits":
            script = GRANDCHILD + "while [ ! -s gc.pid ]; do sleep 0.05; done; exit 4"
        else:
            script = GRANDCHILD + "sleep 300"
        ex.launch(spec(work, 1, script))
        wait_until(lambda: (work / "gc.pid").exists() and (work / "gc.pid").read_text().strip())
        grandchild = int((work / "gc.pid").read_text())
        try:
            assert alive(grandchild)
            assert os.getsid(grandchild) != ex.running().get(1, -1)
            if how == "term":
                assert ex.signal(1, signal.SIGTERM)
                assert exits.wait(1).signal == signal.SIGTERM
            elif how == "kill":
                assert ex.signal(1, signal.SIGKILL)
                assert exits.wait(1).signal == signal.SIGKILL
            else:
                assert exits.wait(1).exit_code == 4
            wait_until(lambda: not alive(grandchild))
            assert ex.health()[0]
        finally:
            with contextlib.suppress(OSError):
                os.kill(grandchild, signal.SIGKILL)


def test_the_checkpoint_signal_still_reaches_the_job(tmp_path: Path, exits: Exits) -> None:
    """Containment does not change what a non-fatal signal does: the job's
    process group gets it, the job lives on."""
    work = tmp_path / "work"
    work.mkdir()
    with executor_on(tmp_path / "run", exits) as ex:
        script = "trap 'echo usr1; exit 7' USR1; echo ready > ready; while :; do sleep 0.1; done"
        ex.launch(spec(work, 1, script))
        wait_until(lambda: (work / "ready").exists())
        assert ex.signal(1, signal.SIGUSR1)
        assert exits.wait(1).exit_code == 7
        assert (work / "job1.out").read_text() == "usr1\n"


def test_containment_setting_is_checked() -> None:
    from htcsim.agent.config import AgentConfig, AgentConfigError

    with pytest.raises(AgentConfigError, match="containment"):
        AgentConfig(containment="none").check()
    AgentConfig(containment="subreaper").check()
