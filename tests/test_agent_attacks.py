"""The attacks that once reached the agent's authority, replayed end to end against a real agent.

The agent runs as root in owner mode, as in production; the attacker is an
ordinary API user whose jobs run as the Unix account htcsim-alice (CI creates
it). Each test is one attack as it was carried out before: a job that reads or
appends to the agent's token file and database, and a job whose `setsid`
grandchild tried to outlive a cancel and the walltime kill. The lower-level
pieces (the shepherd's socket, the API's checks) have their own tests; these
check that the whole agent stops the attack.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from htcsim.agent.api.auth import add_token
from tests.agent_harness import AgentProcess, running_agent, wait_for
from tests.test_agent_jobs import get, sh, submit, wait_state

ALICE = "htcsim-alice"


def _has_account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    if os.geteuid() != 0 or not _has_account(ALICE):
        pytest.skip("the agent as root in owner mode needs root and the account htcsim-alice")
    with running_agent(
        tmp_path_factory.mktemp("attacks"),
        run_jobs_as="owner",
        allow_root=False,
        nodes=1,
        cores_per_node=2,
        kill_grace_s=1,
    ) as running:
        yield running


@pytest.fixture
def alice_dir() -> Iterator[Path]:
    """A working directory alice may write (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="htcsim-attack-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _alice(agent: AgentProcess) -> str:
    return add_token(
        agent.state_dir / "tokens.toml", f"mallory{time.monotonic_ns()}", account=ALICE
    )


def _gone(pid: int) -> bool:
    """The process has exited (a zombie counts as gone: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_a_job_cannot_read_or_extend_the_token_file_or_read_the_store(
    agent: AgentProcess, alice_dir: Path
) -> None:
    """Once a user's job `cat`ed tokens.toml and agent.db, and appended an admin token."""
    tokens = agent.state_dir / "tokens.toml"
    db = agent.state_dir / "agent.db"
    token = _alice(agent)
    before = tokens.read_bytes()
    script = (
        f"cat {tokens} > tokens.copy 2> tokens.err; echo $? > tokens.rc; "
        f"cat {db} > db.copy 2> db.err; echo $? > db.rc; "
        f'printf \'[[token]]\\ntoken = "minted-admin-token-0123456789"\\nuser = "x"\\n'
        f'role = "admin"\\n\' 2> append.err >> {tokens}; echo $? > append.rc'
    )
    with agent.client(token) as client:
        job = submit(client, alice_dir, sh(script))
        assert wait_state(client, job)["state"] == "completed"
    for what in ("tokens", "db", "append"):
        assert (alice_dir / f"{what}.rc").read_text().strip() != "0", what
        assert "Permission denied" in (alice_dir / f"{what}.err").read_text(), what
    assert (alice_dir / "tokens.copy").read_bytes() == b""
    assert (alice_dir / "db.copy").read_bytes() == b""
    assert tokens.read_bytes() == before
    with agent.client("minted-admin-token-0123456789") as minted:
        assert minted.get("/whoami").status_code == 401


@pytest.mark.parametrize("how", ["cancel", "walltime"])
def test_a_setsid_grandchild_dies_with_its_job(
    agent: AgentProcess, alice_dir: Path, how: str
) -> None:
    """Once a child that called setsid survived `htcsim cancel` and the walltime kill."""
    script = "setsid sleep 300 & echo $! > grandchild.pid; sleep 300"
    with agent.client(_alice(agent)) as client:
        walltime = {"walltime_s": 3} if how == "walltime" else {}
        job = submit(client, alice_dir, sh(script), **walltime)
        pid_file = alice_dir / "grandchild.pid"
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=60)
        grandchild = int(pid_file.read_text())
        assert not _gone(grandchild)
        if how == "cancel":
            response = client.post(f"/jobs/{job}/cancel")
            assert response.status_code == 200, response.text
            final = "cancelled"
        else:
            final = "timeout"
        assert wait_state(client, job, timeout=60)["state"] == final
        ended = time.monotonic()
        wait_for(lambda: _gone(grandchild), timeout=30)
        print(
            f"\n{how}: the setsid grandchild was gone {time.monotonic() - ended:.2f} s "
            f"after the job ended ({get(client, job)['state']})"
        )
