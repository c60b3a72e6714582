"""Whose account a job runs as, and which GPUs are its own, through real agents.

Why real agents: the identity a job runs as (uid, groups, HOME) and the
devices it sees (CUDA_VISIBLE_DEVICES) are what the job's own process
observes, so each job writes what it sees to a file and the test reads it.
Jobs that must run at the same time wait for a file the test creates once
all of them said they run (readiness, never a sleep).

The owner-mode tests run the agent as root (as CI does) with the accounts
CI creates (htcsim-alice...); they are skipped elsewhere.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from htcsim.agent.api.auth import add_token
from htcsim.agent.config import AgentConfig, AgentConfigError, check_identity, local_nodes
from tests.agent_harness import AgentProcess, running_agent, wait_for
from tests.test_agent_jobs import get, submit, wait_state

ALICE = "htcsim-alice"


def _account(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


needs_root_and_accounts = pytest.mark.skipif(
    os.geteuid() != 0 or _account(ALICE) is None,
    reason="owner mode needs the agent to run as root and the account htcsim-alice",
)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every account may write (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="htcsim-identity-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _token(agent: AgentProcess, user: str, account: str = "") -> str:
    return add_token(agent.state_dir / "tokens.toml", user, account=account)


def _sees(script: str) -> list[str]:
    return ["sh", "-c", script]


# ------------------------------------------------------------------ whose account: the check


def test_the_mode_follows_the_agents_account_and_owner_needs_root() -> None:
    eve = _account("htcsim-eve")
    uid = eve.pw_uid if eve is not None else 4242
    assert AgentConfig().jobs_run_as(euid=0) == "owner"
    assert AgentConfig().jobs_run_as(euid=uid) == "agent"
    assert AgentConfig(run_jobs_as="agent").jobs_run_as(euid=0) == "agent"
    with pytest.raises(
        AgentConfigError, match="run_jobs_as = owner needs the agent to run as root"
    ):
        check_identity(AgentConfig(run_jobs_as="owner"), euid=uid)
    note = check_identity(AgentConfig(), euid=uid)
    assert note.startswith("single-user mode: every job runs as ")
    assert "each token gives its holder this account's authority" in note
    if eve is not None:
        assert "runs as htcsim-eve;" in note
    # as root, single-user mode still needs allow_root (today's refusal, kept)
    with pytest.raises(AgentConfigError, match="refusing to run as root"):
        check_identity(AgentConfig(run_jobs_as="agent"), euid=0)
    assert "single-user mode" in check_identity(
        AgentConfig(run_jobs_as="agent", allow_root=True), euid=0
    )
    assert "owner's Unix account" in check_identity(AgentConfig(), euid=0)
    with pytest.raises(AgentConfigError, match="run_jobs_as must be owner or agent"):
        AgentConfig(run_jobs_as="nobody").check()


def test_dask_jobs_run_as_their_worker_and_owner_mode_is_refused_there() -> None:
    dask = AgentConfig(
        backend="dask", scheduler="tcp://127.0.0.1:8786", dask_insecure=True, allow_root=True
    )
    assert dask.jobs_run_as(euid=0) == "worker"
    assert "every job runs as the account of the Dask worker" in check_identity(dask, euid=0)
    with pytest.raises(AgentConfigError, match="run_jobs_as owner needs the local backend"):
        AgentConfig(
            backend="dask",
            scheduler="tcp://127.0.0.1:8786",
            dask_insecure=True,
            run_jobs_as="owner",
        ).check()


def test_the_cli_refuses_a_bad_mode_naming_the_key(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from htcsim.cli.app import app

    args = ["agent", "serve", "--state-dir", str(tmp_path / "s"), "--run-jobs-as", "root"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "run_jobs_as must be owner or agent" in result.output


# ------------------------------------------------------------------ owner mode, live


@pytest.fixture(scope="module")
def owner_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    if os.geteuid() != 0 or _account(ALICE) is None:
        pytest.skip("owner mode needs root and the account htcsim-alice")
    with running_agent(
        tmp_path_factory.mktemp("owner"),
        run_jobs_as="owner",
        allow_root=False,
        nodes=1,
        cores_per_node=2,
        kill_grace_s=1,
    ) as agent:
        yield agent


@needs_root_and_accounts
def test_owner_mode_says_so_at_start(owner_agent: AgentProcess) -> None:
    wait_for(lambda: "each job runs as its owner's Unix account" in owner_agent.log.read_text())


@needs_root_and_accounts
def test_a_job_gets_its_owners_home_user_and_logname(
    owner_agent: AgentProcess, shared_dir: Path
) -> None:
    alice = _account(ALICE)
    assert alice is not None
    with owner_agent.client(_token(owner_agent, "alice", ALICE)) as client:
        job = submit(
            client,
            shared_dir,
            _sees('printf "%s\\n%s\\n%s\\n" "$HOME" "$USER" "$LOGNAME" > env.txt'),
        )
        assert wait_state(client, job)["state"] == "completed"
    home, user, logname = (shared_dir / "env.txt").read_text().split("\n")[:3]
    assert (home, user, logname) == (alice.pw_dir, ALICE, ALICE)


@needs_root_and_accounts
def test_a_job_runs_as_its_owners_uid_gid_and_groups(
    owner_agent: AgentProcess, shared_dir: Path
) -> None:
    alice = _account(ALICE)
    assert alice is not None
    with owner_agent.client(_token(owner_agent, "alice2", ALICE)) as client:
        job = submit(
            client, shared_dir, _sees("id -u > ids.txt; id -g >> ids.txt; id -G >> ids.txt")
        )
        assert wait_state(client, job)["state"] == "completed"
    uid, gid, groups = (shared_dir / "ids.txt").read_text().split("\n")[:3]
    assert int(uid) == alice.pw_uid
    assert int(gid) == alice.pw_gid
    assert {int(g) for g in groups.split()} == set(os.getgrouplist(ALICE, alice.pw_gid))


@needs_root_and_accounts
def test_a_user_without_a_unix_account_is_refused_and_nothing_stored(
    owner_agent: AgentProcess, tmp_path: Path
) -> None:
    with owner_agent.client() as admin:
        before = admin.get("/jobs", params={"limit": 10_000}).json()["jobs"]
    for user, account in (("mallory", "htcsim-no-such-account"), ("htcsim-no-such-user", "")):
        with owner_agent.client(_token(owner_agent, user, account)) as client:
            response = client.post("/jobs", json={"command": ["true"], "cwd": str(tmp_path)})
        assert 400 <= response.status_code < 500, response.text
        detail = response.json()["detail"]
        assert repr(user) in detail and repr(account or user) in detail
    with owner_agent.client() as admin:
        assert admin.get("/jobs", params={"limit": 10_000}).json()["jobs"] == before


@needs_root_and_accounts
def test_a_job_for_root_is_refused_without_allow_root(
    owner_agent: AgentProcess, tmp_path: Path
) -> None:
    with owner_agent.client(_token(owner_agent, "boss", "root")) as client:
        response = client.post("/jobs", json={"command": ["true"], "cwd": str(tmp_path)})
    assert 400 <= response.status_code < 500, response.text
    assert "root" in response.json()["detail"] and "allow_root" in response.json()["detail"]
    with owner_agent.client() as admin:  # the first start's admin is root itself
        response = admin.post("/jobs", json={"command": ["true"], "cwd": str(tmp_path)})
    assert 400 <= response.status_code < 500, response.text


@needs_root_and_accounts
def test_a_job_for_root_runs_with_allow_root(tmp_path: Path) -> None:
    with (
        running_agent(
            tmp_path, run_jobs_as="owner", allow_root=True, nodes=1, cores_per_node=1
        ) as agent,
        agent.client(_token(agent, "boss", "root")) as client,
    ):
        job = submit(client, tmp_path, _sees("id -u > uid.txt"))
        assert wait_state(client, job)["state"] == "completed"
    assert (tmp_path / "uid.txt").read_text().strip() == "0"


def test_single_user_mode_says_so_at_start(tmp_path: Path) -> None:
    with running_agent(tmp_path, nodes=1, cores_per_node=1) as agent:
        wait_for(lambda: "single-user mode: every job runs as" in agent.log.read_text())


# ------------------------------------------------------------------ devices


def test_nodes_get_their_device_ids_declared_or_derived() -> None:
    ids = [n.gpu_ids for n in local_nodes(AgentConfig(nodes=2, gpu_devices=[4, 5, 6, 7]))]
    assert ids == [(4, 5), (6, 7)]
    ids = [n.gpu_ids for n in local_nodes(AgentConfig(nodes=2, gpu_devices=[[3], [1]]))]
    assert ids == [(3,), (1,)]
    nodes = local_nodes(AgentConfig(nodes=2, gpus_per_node=2))
    assert [(n.gpus, n.gpu_ids) for n in nodes] == [(2, (0, 1)), (2, (2, 3))]
    for bad in ([0, 0], [-1], [0, 1, 2]):
        with pytest.raises(AgentConfigError, match="gpu_devices"):
            AgentConfig(nodes=2, gpu_devices=bad).check()


SEES_DEVICES = (
    'printf "%s|%s|%s" "${CUDA_VISIBLE_DEVICES-unset}" "${ROCR_VISIBLE_DEVICES-unset}" '
    '"${HIP_VISIBLE_DEVICES-unset}" > dev-$HTCSIM_JOB_ID.tmp; '
    "mv dev-$HTCSIM_JOB_ID.tmp dev-$HTCSIM_JOB_ID; "
    "while [ ! -e go-$HTCSIM_JOB_ID ] && [ ! -e go ]; do sleep 0.05; done"
)
"""A job that writes the devices it sees (CUDA|ROCR|HIP), then waits for its go file."""


def _seen(work: Path, job: int) -> str:
    path = work / f"dev-{job}"
    wait_for(path.exists)
    cuda, rocr, hip = path.read_text().split("|")
    assert cuda == rocr == hip
    return cuda


def _start_gpu_jobs(client: httpx.Client, work: Path, n: int, gpus: int = 1) -> list[int]:
    return [submit(client, work, _sees(SEES_DEVICES), gpus=gpus, walltime_s=300) for _ in range(n)]


def test_each_job_sees_only_its_own_gpus_and_freed_ones_are_reused(tmp_path: Path) -> None:
    with (
        running_agent(
            tmp_path, nodes=1, cores_per_node=6, gpu_devices=[0, 1, 2, 3], kill_grace_s=1
        ) as agent,
        agent.client() as client,
    ):
        four = _start_gpu_jobs(client, tmp_path, 4)
        none = _start_gpu_jobs(client, tmp_path, 1, gpus=0)[0]
        seen = {job: _seen(tmp_path, job) for job in four}  # all four run at once
        assert sorted(seen.values()) == ["0", "1", "2", "3"]
        assert _seen(tmp_path, none) == ""  # no GPU: sees none (set, empty)
        for job in four:
            assert get(client, job)["gpu_ids"] == [int(seen[job])]
        assert get(client, none)["gpu_ids"] == []
        (tmp_path / "go").touch()
        for job in [*four, none]:
            assert wait_state(client, job)["state"] == "completed"
        (tmp_path / "go").unlink()
        two = _start_gpu_jobs(client, tmp_path, 2)
        assert sorted(_seen(tmp_path, job) for job in two) == ["0", "1"]  # lowest first
        (tmp_path / "go").touch()
        for job in two:
            assert wait_state(client, job)["state"] == "completed"
        two_gpus = _start_gpu_jobs(client, tmp_path, 1, gpus=2)[0]
        assert _seen(tmp_path, two_gpus) == "0,1"
        assert wait_state(client, two_gpus)["state"] == "completed"


def test_a_restart_keeps_the_running_jobs_devices(tmp_path: Path) -> None:
    with running_agent(
        tmp_path, nodes=1, cores_per_node=6, gpu_devices=[0, 1, 2, 3], kill_grace_s=1
    ) as agent:
        with agent.client() as client:
            first = _start_gpu_jobs(client, tmp_path, 3)
            seen = {job: _seen(tmp_path, job) for job in first}
            assert sorted(seen.values()) == ["0", "1", "2"]
            ended = next(job for job in first if seen[job] == "0")
            (tmp_path / f"go-{ended}").touch()  # device 0 is free again, 1 and 2 held
            assert wait_state(client, ended)["state"] == "completed"
            held = [job for job in first if job != ended]
        agent.kill()
        agent.restart()
        with agent.client() as client:
            for job in held:
                after = get(client, job)
                assert after["state"] == "running"
                assert after["gpu_ids"] == [int(seen[job])]
            (node,) = client.get("/nodes").json()["nodes"]
            assert node["gpu_ids"] == [0, 1, 2, 3]
            assert node["free_gpu_ids"] == [0, 3]  # rebuilt from the running jobs
            new = _start_gpu_jobs(client, tmp_path, 2)
            assert sorted(_seen(tmp_path, job) for job in new) == ["0", "3"]
            for job in new:
                assert get(client, job)["gpu_ids"] == [int(_seen(tmp_path, job))]
            # every device is held: a further GPU job waits
            waiting = _start_gpu_jobs(client, tmp_path, 1)[0]
            assert get(client, waiting)["state"] == "pending"
            (tmp_path / f"go-{held[0]}").touch()
            assert _seen(tmp_path, waiting) == seen[held[0]]  # the one just freed
            (tmp_path / "go").touch()
            for job in [*held, *new, waiting]:
                assert wait_state(client, job)["state"] == "completed"
