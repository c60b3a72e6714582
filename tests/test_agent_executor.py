"""The local executor (the agent's side of the shepherd) and the monitor,
with real processes (no mocks).

Each test waits with a generous deadline and cleans up what it starts: its
jobs' process groups and the shepherd, so a failing test leaves nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from htcsim.agent.config import machine_cpus as cpu_ids
from htcsim.agent.config import machine_memory_mib as total_memory_mib
from htcsim.agent.executors.base import JobExit, LaunchError, LaunchSpec
from htcsim.agent.executors.local import monitor
from htcsim.agent.executors.local.executor import LocalExecutor, detect_memory_cgroup

DEADLINE_S = 120.0  # an upper bound on a readiness wait: generous, for a loaded machine


class Exits:
    """Collects on_exit calls (from the watcher thread) and waits for them."""

    def __init__(self) -> None:
        self.by_job: dict[int, JobExit] = {}
        self.cond = threading.Condition()

    def __call__(self, exit_: JobExit) -> None:
        with self.cond:
            self.by_job[exit_.job_id] = exit_
            self.cond.notify_all()

    def wait(self, job_id: int, timeout: float = DEADLINE_S) -> JobExit:
        with self.cond:
            assert self.cond.wait_for(lambda: job_id in self.by_job, timeout), job_id
            return self.by_job[job_id]


def wait_until(pred: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    """Poll ``pred`` until true; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def kill_group(pid: int) -> None:
    """Best-effort cleanup of a job's process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def exits() -> Exits:
    return Exits()


@pytest.fixture
def executor(tmp_path: Path, exits: Exits) -> Iterator[LocalExecutor]:
    ex = LocalExecutor(tmp_path / "run", exits)
    yield ex
    ex.shutdown(kill_jobs=True)
    wait_until(lambda: not psutil.pid_exists(ex.shepherd_pid) or _zombie(ex.shepherd_pid))


def spec(tmp_path: Path, job_id: int, argv: list[str], **kw: object) -> LaunchSpec:
    """A LaunchSpec in tmp_path with logs job<id>.out/.err and a minimal environment."""
    base: dict[str, object] = {
        "cwd": str(tmp_path),
        "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        "stdout": str(tmp_path / f"job{job_id}.out"),
        "stderr": str(tmp_path / f"job{job_id}.err"),
    }
    base.update(kw)
    return LaunchSpec(job_id=job_id, argv=argv, **base)  # type: ignore[arg-type]


def test_cwd_env_logs_and_exit_code(tmp_path: Path, executor: LocalExecutor, exits: Exits) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "job1.out").write_text("earlier\n")  # append mode keeps it
    script = 'pwd; echo "v=$HTC_VAR"; echo oops >&2; exit 3'
    pid = executor.launch(
        spec(
            tmp_path,
            1,
            ["sh", "-c", script],
            cwd=str(work),
            env={"HTC_VAR": "x y", "PATH": "/bin:/usr/bin"},
        )
    )
    assert pid > 0
    done = exits.wait(1)
    assert (done.exit_code, done.signal, done.recovered) == (3, 0, False)
    assert done.end_time == pytest.approx(time.time(), abs=30)
    assert (tmp_path / "job1.out").read_text() == f"earlier\n{work}\nv=x y\n"
    assert (tmp_path / "job1.err").read_text() == "oops\n"
    assert executor.running() == {}

    executor.launch(spec(tmp_path, 2, ["no-such-command-htcsim"]))
    assert exits.wait(2).exit_code == 127


def test_exits_are_kept_until_released(tmp_path: Path, exits: Exits) -> None:
    """The shepherd keeps an exit until the agent says it is recorded, so that an
    agent killed before it commits a reported exit is told again on restart;
    its journal keeps them even across a restart of the shepherd itself."""
    ex = LocalExecutor(tmp_path / "run", exits)
    try:
        for jid in (1, 2, 3):
            ex.launch(spec(tmp_path, jid, ["sh", "-c", f"exit {jid}"]))
            exits.wait(jid)
        ex.release(1)
    finally:
        ex.close()  # the "agent" goes; the shepherd stays
    again = LocalExecutor(tmp_path / "run", exits)
    try:
        assert again.shepherd_pid == ex.shepherd_pid
        found = {r.job_id: r for r in again.recover([1, 2])}  # 3: no longer running
        assert found[1].status == "lost"  # released: the agent had recorded it
        assert found[2].exit is not None and found[2].exit.exit_code == 2
        assert found[2].exit.recovered and found[2].exit.cpu_time_s >= 0
        again.shutdown(kill_jobs=True)
        wait_until(lambda: not psutil.pid_exists(ex.shepherd_pid) or _zombie(ex.shepherd_pid))
    finally:
        again.close()
    third = LocalExecutor(tmp_path / "run", exits)  # a new shepherd reads the journal
    try:
        assert third.shepherd_pid != ex.shepherd_pid
        assert [r.status for r in third.recover([2, 3])] == ["exited", "lost"]  # 3 released
    finally:
        third.shutdown(kill_jobs=True)


def test_launch_errors(tmp_path: Path, executor: LocalExecutor) -> None:
    with pytest.raises(LaunchError, match="job 5: working directory"):
        executor.launch(spec(tmp_path, 5, ["true"], cwd=str(tmp_path / "missing")))
    with pytest.raises(LaunchError, match="job 6: folder of stdout"):
        executor.launch(spec(tmp_path, 6, ["true"], stdout=str(tmp_path / "nodir" / "x.out")))
    with pytest.raises(LaunchError, match="job 7: empty command"):
        executor.launch(spec(tmp_path, 7, []))
    assert executor.running() == {}


def test_pinning_leaves_the_agent_unpinned(
    tmp_path: Path, executor: LocalExecutor, exits: Exits
) -> None:
    before = os.sched_getaffinity(0)
    assert 0 in cpu_ids()
    executor.launch(
        spec(tmp_path, 1, ["grep", "Cpus_allowed_list", "/proc/self/status"], cpus=(0,))
    )
    assert exits.wait(1).exit_code == 0
    assert (tmp_path / "job1.out").read_text().split() == ["Cpus_allowed_list:", "0"]
    assert os.sched_getaffinity(0) == before
    with pytest.raises(LaunchError, match="job 2"):
        executor.launch(spec(tmp_path, 2, ["true"], cpus=(100000,)))
    assert os.sched_getaffinity(0) == before
    executor.launch(spec(tmp_path, 3, ["grep", "Cpus_allowed_list", "/proc/self/status"]))
    assert exits.wait(3).exit_code == 0  # the shepherd went back to all CPUs
    assert (tmp_path / "job3.out").read_text().split()[1] == (
        (tmp_path / "job1.out").read_text().split()[1]
        if len(before) == 1
        else f"{min(before)}-{max(before)}"
    )


def test_memory_limit_rlimit_as(tmp_path: Path, executor: LocalExecutor, exits: Exits) -> None:
    if executor.memory_limit_mode != "rlimit-as":
        pytest.skip(f"memory limit mode is {executor.memory_limit_mode}")
    alloc = [sys.executable, "-c", "b = bytearray(600 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
    executor.launch(spec(tmp_path, 1, alloc, mem_limit_mib=200))
    executor.launch(spec(tmp_path, 2, alloc, mem_limit_mib=2000))
    assert exits.wait(1).exit_code == 1
    assert "MemoryError" in (tmp_path / "job1.err").read_text()
    assert exits.wait(2).exit_code == 0


def test_detect_memory_cgroup_on_a_fake_tree(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    agent = root / "agent.slice"
    agent.mkdir(parents=True)
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/agent.slice\n")
    assert detect_memory_cgroup(proc, root)[0] is None  # no cgroup.controllers: not v2
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (agent / "cgroup.subtree_control").write_text("cpu memory\n")
    assert detect_memory_cgroup(proc, root)[0] == agent
    # not enabled: enabling is tried; a plain file does not turn "+memory" into "memory"
    (agent / "cgroup.subtree_control").write_text("cpu\n")
    base, why = detect_memory_cgroup(proc, root)
    assert base is None
    assert "not enabled" in why
    assert (agent / "cgroup.subtree_control").read_text() == "+memory"
    proc.write_text("4:memory:/x\n")  # cgroup v1 only
    assert detect_memory_cgroup(proc, root)[0] is None


def test_signal_kills_the_whole_group(
    tmp_path: Path, executor: LocalExecutor, exits: Exits
) -> None:
    pid = executor.launch(spec(tmp_path, 1, ["sh", "-c", "sleep 100 & echo $!; sleep 100; wait"]))
    wait_until(lambda: (tmp_path / "job1.out").read_text().strip() != "")
    grandchild = int((tmp_path / "job1.out").read_text())
    assert psutil.pid_exists(grandchild)
    assert executor.running() == {1: pid}
    assert executor.signal(1, signal.SIGTERM)
    done = exits.wait(1)
    assert (done.exit_code, done.signal) == (128 + 15, 15)
    wait_until(lambda: not psutil.pid_exists(grandchild) or _zombie(grandchild))
    assert not executor.signal(1, signal.SIGTERM)
    assert not executor.signal(99, signal.SIGTERM)


def test_sigkill_and_usr1(tmp_path: Path, executor: LocalExecutor, exits: Exits) -> None:
    # SIGUSR1 (the "signal before walltime") reaches the job
    trap = "trap 'echo got-usr1; exit 0' USR1; echo ready; while :; do sleep 0.05; done"
    executor.launch(spec(tmp_path, 1, ["sh", "-c", trap]))
    wait_until(lambda: "ready" in (tmp_path / "job1.out").read_text())
    assert executor.signal(1, signal.SIGUSR1)
    assert exits.wait(1).exit_code == 0
    assert "got-usr1" in (tmp_path / "job1.out").read_text()

    executor.launch(spec(tmp_path, 2, ["sleep", "100"]))
    assert executor.signal(2, signal.SIGKILL)
    done = exits.wait(2)
    assert (done.exit_code, done.signal) == (137, 9)


def test_rusage_cpu_time(tmp_path: Path, executor: LocalExecutor, exits: Exits) -> None:
    burn = [
        sys.executable,
        "-c",
        "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass",
    ]
    executor.launch(spec(tmp_path, 1, burn))
    done = exits.wait(1)
    assert done.exit_code == 0
    assert done.cpu_time_s >= 0.2
    assert done.max_rss_mib > 1


def test_monitor(tmp_path: Path, executor: LocalExecutor) -> None:
    burn = [sys.executable, "-c", "b = bytearray(50 * 2**20)\nwhile True: b[0] = 1"]
    pid = executor.launch(spec(tmp_path, 1, burn))
    try:
        wait_until(lambda: monitor.job_usage({1: pid}).get(1, (0.0, 0.0))[1] > 50)
        wait_until(lambda: monitor.job_usage({1: pid})[1][0] > 0.1)
        assert monitor.job_usage({2: 999_999_999}) == {}
        monitor.node_usage(cpu_ids())
        time.sleep(0.1)
        cpu, mem = monitor.node_usage(cpu_ids())
        assert 0.0 <= cpu <= 100.0
        assert 0 < mem <= total_memory_mib()
    finally:
        executor.signal(1, signal.SIGKILL)


AGENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from htcsim.agent.executors.base import LaunchSpec
    from htcsim.agent.executors.local.executor import LocalExecutor

    tmp = Path(sys.argv[1])
    ex = LocalExecutor(tmp / "run", lambda e: None)
    for jid, go, code in ((1, "go1", 7), (2, "go2", 5), (4, "never", 0)):
        script = f"while [ ! -e {go} ]; do sleep 0.02; done; exit {code}"
        ex.launch(LaunchSpec(jid, ["sh", "-c", script], str(tmp), {"PATH": "/bin:/usr/bin"},
                             str(tmp / f"job{jid}.out"), str(tmp / f"job{jid}.err")))
    print(" ".join(str(p) for p in ex.running().values()), flush=True)
    time.sleep(100)
    """
)


def test_recover_after_agent_crash(tmp_path: Path, exits: Exits) -> None:
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    pids: list[int] = []
    ex: LocalExecutor | None = None
    try:
        assert agent.stdout is not None
        pids = [int(p) for p in agent.stdout.readline().split()]
        assert len(pids) == 3
        agent.kill()  # the "agent" dies with SIGKILL; its jobs live on
        agent.wait()
        assert all(psutil.pid_exists(p) for p in pids)

        # job 2 finishes while no agent is running
        (tmp_path / "go2").touch()
        wait_until(lambda: not psutil.pid_exists(pids[1]))

        ex = LocalExecutor(tmp_path / "run", exits)
        found = {r.job_id: r for r in ex.recover([1, 2, 3, 4])}
        assert (found[1].status, found[1].pid) == ("running", pids[0])
        assert found[2].status == "exited"
        assert found[2].exit is not None
        assert (found[2].exit.exit_code, found[2].exit.recovered) == (5, True)
        assert (found[3].status, found[3].pid, found[3].exit) == ("lost", None, None)
        assert ex.running() == {1: pids[0], 4: pids[2]}

        # a re-adopted job is signalled and reaped as before, with its rusage
        assert ex.signal(4, signal.SIGKILL)
        done = exits.wait(4)
        assert (done.exit_code, done.signal) == (137, 9)

        (tmp_path / "go1").touch()
        done = exits.wait(1)
        assert done.exit_code == 7 and done.cpu_time_s >= 0
        assert ex.running() == {}
        assert 2 not in exits.by_job  # "exited" is returned, not called back
    finally:
        agent.kill()
        agent.wait()
        if agent.stdout is not None:
            agent.stdout.close()
        for pid in pids:
            kill_group(pid)
        if ex is not None:
            ex.shutdown(kill_jobs=True)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def test_the_shepherd_ignores_a_stale_event_of_an_agent_it_dropped(tmp_path: Path) -> None:
    """One round of events can hold an agent's socket after that agent was
    dropped (a send to it failed while reporting an exit, or a newer agent
    connected): the shepherd must skip it, not read the wrong socket or stop."""
    import socket as sockets

    from htcsim.agent.executors.local.shepherd import Shepherd, socket_path

    secret = "s" * 64
    # a fake cgroup folder: cgroup containment needs no prctl in the test's own process
    shepherd = Shepherd(tmp_path, tmp_path, secret=secret, containment="cgroup")
    hello = b'{"op": "hello", "secret": "' + secret.encode() + b'"}\n'
    try:
        old = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
        old.connect(str(socket_path(tmp_path)))
        old.sendall(hello)
        shepherd._accept()
        shepherd._read_pending(next(iter(shepherd.pending)))  # the handshake
        stale = shepherd.client
        assert stale is not None
        old.close()
        shepherd._drop_client()  # as a failed send does
        shepherd._read_client(stale)  # the same round's event for it: ignored
        new = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
        new.connect(str(socket_path(tmp_path)))
        new.sendall(hello)
        shepherd._accept()
        shepherd._read_pending(next(iter(shepherd.pending)))
        shepherd._read_client(stale)  # not the current agent: ignored, nothing read
        assert shepherd.client is not None and shepherd.client is not stale
        assert b'"op": "hello"' in new.recv(1 << 16)
        new.close()
    finally:
        shepherd.listener.close()
        shepherd.lock.close()
        shepherd.journal.close()


# ------------------------------------------------------------------ the shepherd's supervision


def test_exits_racing_a_worker_kill_keep_their_own_codes(tmp_path: Path, exits: Exits) -> None:
    """Jobs end one after another while the worker is killed in their midst:
    whichever process reaps each (the worker, or its keeper once it is dead),
    every job's exit is reported once, with its own code, none lost."""
    ex = LocalExecutor(tmp_path / "run", exits)
    n = 40
    try:
        for jid in range(1, n + 1):
            ex.launch(spec(tmp_path, jid, ["sh", "-c", f"sleep 0.{jid % 10}; exit {jid}"]))
        wait_until(lambda: len(exits.by_job) >= 4)
        killed = ex.shepherd_pid
        os.kill(killed, signal.SIGKILL)
        for jid in range(1, n + 1):
            done = exits.wait(jid)
            assert (done.exit_code, done.lost) == (jid, ""), done
        assert ex.shepherd_pid != killed and ex.status()["restarts"] == 1
        assert ex.running() == {}
    finally:
        ex.shutdown(kill_jobs=True)


def test_a_dead_keeper_degrades_until_its_idle_worker_is_replaced(
    tmp_path: Path, exits: Exits
) -> None:
    """Without its keeper the worker still serves (its own jobs end normally),
    health says degraded; once no job runs, a new shepherd replaces it."""
    ex = LocalExecutor(tmp_path / "run", exits)
    try:
        go = tmp_path / "go"
        script = f"while [ ! -e {go} ]; do sleep 0.05; done; exit 6"
        ex.launch(spec(tmp_path, 1, ["sh", "-c", script]))
        keeper, worker = ex.keeper_pid, ex.shepherd_pid
        assert keeper is not None
        os.kill(keeper, signal.SIGKILL)
        wait_until(lambda: ex.status()["state"] == "degraded")
        assert "keeper is gone" in ex.status()["reasons"][0]
        assert ex.shepherd_pid == worker and ex.health()[0]  # it still runs jobs
        go.touch()
        assert exits.wait(1).exit_code == 6
        wait_until(lambda: ex.keeper_pid not in (None, keeper) and ex.status()["state"] == "ok")
        assert ex.status()["restarts"] == 1 and ex.shepherd_pid != worker
        assert not psutil.pid_exists(worker) or _zombie(worker)
        ex.launch(spec(tmp_path, 2, ["sh", "-c", "exit 2"]))
        assert exits.wait(2).exit_code == 2
    finally:
        ex.shutdown(kill_jobs=True)
