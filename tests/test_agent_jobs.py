"""Jobs through a real agent: ``htcsim agent serve`` in its own process, a real
socket, real job processes.

Why real processes: exit codes, log files, environment, signals, process
trees and walltime kills are what a user of the agent relies on, and only the
real executor shows them. Everything is polled (``wait_for``) and compared by
order, never by elapsed time, so a slow machine makes the tests slower, not
flaky.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy
from htcsim.sim import simulate
from tests.agent_harness import JOB_S, READY_S, AgentProcess, running_agent, wait_for

FINAL = ("completed", "failed", "cancelled", "timeout", "node_fail")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One agent (2 nodes x 2 cores) shared by the tests that need no policy of their own."""
    with running_agent(
        tmp_path_factory.mktemp("agent"), nodes=2, cores_per_node=2, kill_grace_s=1
    ) as running:
        yield running


@pytest.fixture
def client(agent: AgentProcess) -> Iterator[httpx.Client]:
    with agent.client() as c:
        yield c


def submit(client: httpx.Client, cwd: Path, command: list[str], **fields: Any) -> int:
    response = client.post("/jobs", json={"command": command, "cwd": str(cwd), **fields})
    assert response.status_code == 201, response.text
    return int(response.json()["ids"][0])


def get(client: httpx.Client, job_id: int) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_state(client: httpx.Client, job_id: int, *states: str, timeout: float = JOB_S) -> dict:
    """Poll until the job is in one of ``states`` (default: any final state)."""
    wanted = states or FINAL

    def check() -> dict[str, Any] | None:
        job = get(client, job_id)
        return job if job["state"] in wanted else None

    result: dict[str, Any] = wait_for(check, timeout=timeout)
    return result


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


# ------------------------------------------------------------------ one job


def test_a_job_runs_in_its_cwd_with_its_env_and_logs(client: httpx.Client, tmp_path: Path) -> None:
    work = tmp_path / "work dir"
    work.mkdir()
    job_id = submit(
        client,
        work,
        sh('echo "out $GREETING $HTCSIM_JOB_ID"; pwd; echo "err line" >&2'),
        env={"GREETING": "hello world"},
        name="env-check",
    )
    job = wait_state(client, job_id)
    assert job["state"] == "completed", job
    assert job["exit_code"] == 0
    assert job["start_time"] >= job["submit_time"]
    assert job["end_time"] >= job["start_time"]
    assert job["node"] in ("node0", "node1")
    assert job["env"] == {"GREETING": "hello world"}
    out, err = work / f"htcsim-{job_id}.out", work / f"htcsim-{job_id}.err"
    assert job["stdout"] == str(out) and job["stderr"] == str(err)
    assert out.read_text().splitlines() == [f"out hello world {job_id}", str(work)]
    assert err.read_text() == "err line\n"
    assert client.get(f"/jobs/{job_id}/log").text == out.read_text()
    assert client.get(f"/jobs/{job_id}/log", params={"stream": "stderr"}).text == "err line\n"
    assert client.get(f"/jobs/{job_id}/log", params={"tail": 3}).text == out.read_text()[-3:]
    states = [e["state"] for e in client.get(f"/jobs/{job_id}/history").json()["events"]]
    assert states == ["pending", "running", "completed"]


def test_exit_codes_decide_completed_or_failed(client: httpx.Client, tmp_path: Path) -> None:
    ok = submit(client, tmp_path, sh("exit 0"))
    bad = submit(client, tmp_path, sh("exit 3"))
    missing = submit(client, tmp_path, ["/nonexistent/program"])
    assert wait_state(client, ok)["state"] == "completed"
    failed = wait_state(client, bad)
    assert (failed["state"], failed["exit_code"]) == ("failed", 3)
    not_found = wait_state(client, missing)
    assert not_found["state"] == "failed"
    assert not_found["exit_code"] != 0


def test_logs_go_where_asked_with_placeholders(client: httpx.Client, tmp_path: Path) -> None:
    job_id = submit(
        client,
        tmp_path,
        sh("echo to-out; echo to-err >&2"),
        stdout="o-{id}.txt",
        stderr="/dev/null",
    )
    assert wait_state(client, job_id)["state"] == "completed"
    assert (tmp_path / f"o-{job_id}.txt").read_text() == "to-out\n"
    assert not (tmp_path / f"htcsim-{job_id}.out").exists()


# ------------------------------------------------------------------ dependencies


def test_after_ok_starts_after_its_parent_completed(client: httpx.Client, tmp_path: Path) -> None:
    parent = submit(client, tmp_path, ["sleep", "0.5"])
    child = submit(client, tmp_path, sh("exit 0"), after_ok=[parent])
    assert get(client, child)["dependencies"] == [{"job": parent, "kind": "afterok", "delay_s": 0}]
    done = wait_state(client, child)
    first = get(client, parent)
    assert first["state"] == done["state"] == "completed"
    assert done["start_time"] >= first["end_time"]


def test_dependencies_on_a_failed_parent(client: httpx.Client, tmp_path: Path) -> None:
    """afterok is never satisfied (cancelled with its reason), afternotok and
    afterany run after the failure."""
    parent = submit(client, tmp_path, sh("sleep 0.5; exit 1"))
    ok = submit(client, tmp_path, sh("exit 0"), after_ok=[parent])
    not_ok = submit(client, tmp_path, sh("exit 0"), after_not_ok=[parent])
    any_ = submit(client, tmp_path, sh("exit 0"), after_any=[parent])
    grandchild = submit(client, tmp_path, sh("exit 0"), after_ok=[ok])
    end = wait_state(client, parent)
    assert end["state"] == "failed"

    never = wait_state(client, ok)
    assert never["state"] == "cancelled"
    assert never["reason"] == "DependencyNeverSatisfied"
    assert never["start_time"] is None
    assert wait_state(client, grandchild)["reason"] == "DependencyNeverSatisfied"
    for job_id in (not_ok, any_):
        job = wait_state(client, job_id)
        assert job["state"] == "completed", job
        assert job["start_time"] >= end["end_time"]
    # a dependency on a job that already failed is decided at submit time
    late = submit(client, tmp_path, sh("exit 0"), after_ok=[parent])
    assert wait_state(client, late)["reason"] == "DependencyNeverSatisfied"
    late_ok = submit(client, tmp_path, sh("exit 0"), after_not_ok=[parent])
    assert wait_state(client, late_ok)["state"] == "completed"


# ------------------------------------------------------------------ cancel, walltime, signal


def _gone(pid: int) -> bool:
    """A pid that no longer runs: absent, or a zombie nobody reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_cancel_kills_the_whole_process_tree(client: httpx.Client, tmp_path: Path) -> None:
    job_id = submit(client, tmp_path, sh("sleep 300 & echo $! > child.pid; wait"))
    pid_file = tmp_path / "child.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
    child = int(pid_file.read_text())
    running = get(client, job_id)
    assert running["state"] == "running"
    assert psutil.pid_exists(child) and not _gone(child)
    assert client.post(f"/jobs/{job_id}/cancel").json() == {"ids": [job_id]}
    job = wait_state(client, job_id)
    assert job["state"] == "cancelled"
    wait_for(lambda: _gone(child), timeout=READY_S)
    again = client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409


def test_a_job_past_its_walltime_is_killed(client: httpx.Client, tmp_path: Path) -> None:
    job_id = submit(client, tmp_path, ["sleep", "60"], walltime_s=1)
    job = wait_state(client, job_id)
    assert job["state"] == "timeout"
    assert job["end_time"] >= job["start_time"] + 1
    cause = client.get(f"/jobs/{job_id}/history").json()["events"][-1]["cause"]
    assert "walltime" in cause


CHECKPOINTER = """
import signal, sys, time

def checkpoint(signum, frame):
    with open("checkpoint.txt", "w") as f:
        f.write("saved")
    sys.exit(0)

signal.signal(signal.SIGUSR1, checkpoint)
open("ready", "w").close()
time.sleep(60)
sys.exit(5)
"""


def test_the_checkpoint_signal_comes_before_the_walltime(
    client: httpx.Client, tmp_path: Path
) -> None:
    script = tmp_path / "checkpointer.py"
    script.write_text(CHECKPOINTER)
    job_id = submit(
        client,
        tmp_path,
        [sys.executable, str(script)],
        walltime_s=3,
        signal="USR1",
        signal_before_s=1,
    )
    job = wait_state(client, job_id)
    assert job["state"] == "completed", job
    assert job["exit_code"] == 0
    assert (tmp_path / "checkpoint.txt").read_text() == "saved"


# ------------------------------------------------------------------ arrays, hold, paging, nodes


def test_an_array_expands_its_index(client: httpx.Client, tmp_path: Path) -> None:
    response = client.post(
        "/jobs",
        json={
            "command": ["sh", "-c", "echo {index} {array_id} > idx-{index}.txt", "x{index}"],
            "cwd": str(tmp_path),
            "array": "1-5",
        },
    )
    assert response.status_code == 201, response.text
    ids, array_id = response.json()["ids"], response.json()["array_id"]
    assert len(ids) == 5 and array_id == ids[0]
    for job_id in ids:
        assert wait_state(client, job_id)["state"] == "completed"
    listed = client.get("/jobs", params={"array_id": array_id}).json()["jobs"]
    assert [j["id"] for j in listed] == ids
    assert [j["array_index"] for j in listed] == [1, 2, 3, 4, 5]
    assert all(j["array_id"] == array_id for j in listed)
    assert all(j["command"][3] == "x{index}" for j in listed)  # stored as written
    for k in range(1, 6):
        assert (tmp_path / f"idx-{k}.txt").read_text() == f"{k} {array_id}\n"


def test_hold_then_release(client: httpx.Client, tmp_path: Path) -> None:
    job_id = submit(client, tmp_path, sh("exit 0"), hold=True)
    held = get(client, job_id)
    assert held["state"] == "held"
    assert client.post(f"/jobs/{job_id}/hold").status_code == 409  # held already
    assert client.post(f"/jobs/{job_id}/release").json() == {"ids": [job_id]}
    assert wait_state(client, job_id)["state"] == "completed"
    states = [e["state"] for e in client.get(f"/jobs/{job_id}/history").json()["events"]]
    assert states == ["held", "pending", "running", "completed"]

    # a job pending for resources can be held: it stays held when the cores free up
    blockers = [submit(client, tmp_path, ["sleep", "30"], cores=2) for _ in range(2)]
    for blocker in blockers:
        wait_state(client, blocker, "running")
    waiting = submit(client, tmp_path, sh("exit 0"))
    assert get(client, waiting)["state"] == "pending"
    assert client.post(f"/jobs/{waiting}/hold").json() == {"ids": [waiting]}
    assert get(client, waiting)["state"] == "held"
    for blocker in blockers:
        assert client.post(f"/jobs/{blocker}/cancel").status_code == 200
        assert wait_state(client, blocker)["state"] == "cancelled"
    assert get(client, waiting)["state"] == "held"
    assert client.post(f"/jobs/{waiting}/release").status_code == 200
    assert wait_state(client, waiting)["state"] == "completed"


def test_paging_with_next(client: httpx.Client, tmp_path: Path) -> None:
    body = {"jobs": [{"command": ["true"], "cwd": str(tmp_path), "hold": True}] * 7}
    ids = client.post("/jobs/batch", json=body).json()["ids"]
    everything = [j["id"] for j in client.get("/jobs", params={"limit": 10_000}).json()["jobs"]]
    assert everything == sorted(everything) and set(ids) <= set(everything)
    seen: list[int] = []
    after = 0
    while True:
        page = client.get("/jobs", params={"limit": 3, "after": after}).json()
        assert len(page["jobs"]) <= 3
        seen += [j["id"] for j in page["jobs"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen[: len(everything)] == everything
    held = client.get("/jobs", params={"state": "held", "limit": 10_000}).json()["jobs"]
    assert set(ids) <= {j["id"] for j in held}
    assert all(j["reason"] for j in held)  # why each waits
    for job_id in ids:
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 200


def test_nodes_show_the_running_job(client: httpx.Client, tmp_path: Path) -> None:
    job_id = submit(client, tmp_path, ["sleep", "30"], cores=2)
    node = wait_state(client, job_id, "running")["node"]

    def shown() -> dict[str, Any] | None:
        nodes = {n["name"]: n for n in client.get("/nodes").json()["nodes"]}
        return nodes if job_id in nodes[node]["jobs"] else None

    nodes = wait_for(shown)
    assert nodes[node]["free"]["cores"] == 0
    assert nodes[node]["state"] == "allocated"
    assert nodes[node]["capacity"]["cores"] == 2
    assert all(job_id not in n["jobs"] for name, n in nodes.items() if name != node)
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    wait_state(client, job_id)
    wait_for(lambda: all(job_id not in n["jobs"] for n in client.get("/nodes").json()["nodes"]))


# ------------------------------------------------------------------ the kernel decides the order

WALLTIMES = (50, 10, 40, 10, 60, 30, 20)
"""Requested times of the queued jobs, in submit order (a tie: SJF breaks it by id)."""


def expected_order(policy: Policy) -> list[int]:
    """Positions in WALLTIMES in the order the simulator starts them, on one
    one-core node, all queued behind a blocker that runs first."""
    n = len(WALLTIMES) + 1
    jobs = empty_jobs(n)
    for k in range(n):
        jobs[k]["job_id"] = k + 1
        jobs[k]["n_tasks"] = 1
        jobs[k]["user_id"] = 0
        jobs[k]["group_id"] = 0
    jobs[0]["submit_s"], jobs[0]["run_s"], jobs[0]["walltime_s"] = 0, 5, 3600
    for k, walltime in enumerate(WALLTIMES, start=1):
        jobs[k]["submit_s"], jobs[k]["run_s"], jobs[k]["walltime_s"] = 1, 1, walltime
    workload = Workload(name="order", jobs=jobs, machine=Machine(n_nodes=1, cores_per_node=1))
    result = simulate(workload, policy)
    starts = result.start_s[1:]
    assert len(set(starts.tolist())) == len(starts)  # one at a time: a strict order
    return [int(k) for k in np.argsort(starts, kind="stable")]


@pytest.mark.parametrize("order", ["sjf", "fcfs"])
def test_start_order_is_the_simulators(tmp_path: Path, order: str) -> None:
    policy_toml = f'[queue]\norder = "{order}"\n'
    expected = expected_order(Policy(order=order))
    with (
        running_agent(
            tmp_path, nodes=1, cores_per_node=1, kill_grace_s=1, policy=policy_toml
        ) as agent,
        agent.client() as client,
    ):
        assert client.get("/policy").json()["policy"]["order"] == order
        blocker = submit(client, tmp_path, sh("while [ ! -e go ]; do sleep 0.05; done"))
        wait_state(client, blocker, "running")
        jobs = [
            {"command": ["sleep", "0.3"], "cwd": str(tmp_path), "walltime_s": w, "name": f"w{w}"}
            for w in WALLTIMES
        ]
        ids = client.post("/jobs/batch", json={"jobs": jobs}).json()["ids"]
        queued = client.get("/jobs", params={"state": "pending"}).json()["jobs"]
        assert sorted(j["id"] for j in queued) == ids
        (tmp_path / "go").touch()
        finished = [wait_state(client, job_id) for job_id in ids]
        assert all(j["state"] == "completed" for j in finished)

        def started_at(job: dict[str, Any]) -> tuple[float, float]:
            events = client.get(f"/jobs/{job['id']}/history").json()["events"]
            running = [e["time"] for e in events if e["state"] == "running"]
            return (job["start_time"], running[0])

        observed = sorted(range(len(ids)), key=lambda k: started_at(finished[k]))
        # one core: each job starts after the one before ended
        for a, b in itertools.pairwise(observed):
            assert finished[b]["start_time"] >= finished[a]["end_time"]
    assert observed == expected
    if order == "sjf":
        assert [WALLTIMES[k] for k in observed] == sorted(WALLTIMES)
