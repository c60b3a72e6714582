"""The agent's state, tokens and API against a hostile user, over a real socket.

Why these tests: an attack check found that a job could write its stdout
into the state directory (and read the token file back through its log),
that tokens were stored in plaintext, that the store was world-readable,
and that one crafted job turned every request into a 500. Each test here
is one of those holes (or a neighbour of it), checked on a real agent
(``htcsim agent serve`` in its own process, ``tests.agent_harness``).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from htcsim.agent.api.auth import add_token
from tests.agent_harness import AgentProcess, running_agent, wait_for


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    with running_agent(tmp_path, nodes=1, cores_per_node=2, kill_grace_s=1) as running:
        yield running


def user_client(agent: AgentProcess, user: str) -> httpx.Client:
    return agent.client(add_token(agent.state_dir / "tokens.toml", user))


def job(cwd: Path, **fields: Any) -> dict[str, Any]:
    return {"command": ["true"], "cwd": str(cwd), **fields}


def all_jobs(agent: AgentProcess) -> list[dict[str, Any]]:
    with agent.client() as admin:
        response = admin.get("/jobs", params={"limit": 1000})
        assert response.status_code == 200, response.text
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        return jobs


WIDE = {**os.environ, "COLUMNS": "1000"}
"""The CLI's console wraps at the terminal's width: one line per message here."""


def htcsim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "htcsim", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=WIDE,
    )


# ------------------------------------------------------------------ paths into the state


def test_a_job_path_inside_the_state_dir_is_refused_naming_the_field(
    agent: AgentProcess, tmp_path: Path
) -> None:
    state = agent.state_dir
    link = tmp_path / "innocent"
    link.symlink_to(state)
    refused = [
        ("stdout", job(tmp_path, stdout=str(state / "tokens.toml"))),
        ("stderr", job(tmp_path, stderr=str(state / "agent.db"))),
        ("stdout", job(tmp_path, stdout=str(link / "tokens.toml"))),  # through a symlink
        ("stdout", job(tmp_path, stdout=f"{tmp_path}/../{tmp_path.name}/innocent/x-{{id}}")),
        ("stdout", job(tmp_path, stdout=f"{state}{{index}}/tokens.toml")),  # {index} is ""
        ("stdout", job(tmp_path, stdout="innocent/o")),  # relative to cwd
        ("cwd", job(state)),
        ("cwd", job(link)),
        ("stdout", job(tmp_path, stdout=str(state / "out-{index}.txt"), array="1-3")),
        ("stderr", job(tmp_path, stderr=str(link / "run" / "{id}.err"), array="1,2")),
    ]
    with user_client(agent, "mallory") as mallory:
        for field, body in refused:
            response = mallory.post("/jobs", json=body)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["field"] == field, (body, response.text)
            assert field in response.json()["detail"]
        batch = {"jobs": [job(tmp_path), job(tmp_path, stdout=str(state / "tokens.toml"))]}
        response = mallory.post("/jobs/batch", json=batch)
        assert response.status_code == 422 and response.json()["field"] == "jobs.1.stdout"
        for key in ("stdout", "stderr", "cwd"):
            value = str(state / "tokens.toml") if key != "cwd" else str(link)
            workflow = {"name": f"w-{key}", "job": [{"name": "a", "command": "true", key: value}]}
            response = mallory.post(
                "/workflows", json={"workflow": workflow, "base_dir": str(tmp_path)}
            )
            assert response.status_code == 422, response.text
            assert response.json()["field"] == "workflow"
            assert key in response.json()["detail"]
        # a log path elsewhere is still accepted
        ok = mallory.post("/jobs", json=job(tmp_path, stdout=str(tmp_path / "o-{id}.txt")))
        assert ok.status_code == 201, ok.text
    assert len(all_jobs(agent)) == 1  # nothing of the refused requests was stored


# ------------------------------------------------------------------ tokens and files


def test_the_token_file_holds_no_usable_token(agent: AgentProcess) -> None:
    path = agent.state_dir / "tokens.toml"
    add_token(path, "alice", group="physics", account="htcsim-alice")
    text = path.read_text()
    entries = tomllib.loads(text)["token"]
    assert all("token" not in e and len(e["sha256"]) == 64 for e in entries)
    assert agent.token not in text
    assert {e["user"] for e in entries} >= {"alice"}
    strings = [v for e in entries for v in e.values() if isinstance(v, str)]
    for candidate in strings:
        with agent.client(candidate) as client:
            assert client.get("/jobs").status_code == 401, candidate
    with agent.client() as admin:  # the token client.toml holds still works
        assert admin.get("/jobs").status_code == 200


def test_state_files_are_private_and_a_readable_store_stops_the_start(
    agent: AgentProcess,
) -> None:
    state = agent.state_dir
    with agent.client() as admin:  # a write, so the store has its -wal and -shm
        assert admin.post("/jobs", json=job(state.parent)).status_code == 201
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("agent.db", "agent.db-wal", "agent.db-shm", "tokens.toml", "client.toml"):
        path = state / name
        if name in ("agent.db", "tokens.toml", "client.toml"):
            assert path.exists(), name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    agent.stop()
    db = state / "agent.db"
    db.chmod(0o644)  # as an older version left it
    result = subprocess.run(agent.args, capture_output=True, text=True, timeout=60, env=WIDE)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert str(db) in out and "0644" in out and f"chmod 600 {db}" in out, out
    db.chmod(0o600)
    state.chmod(0o755)
    result = subprocess.run(agent.args, capture_output=True, text=True, timeout=60, env=WIDE)
    assert result.returncode != 0 and f"chmod 700 {state}" in result.stdout + result.stderr
    state.chmod(0o700)
    agent.restart()  # fixed: it starts again


def test_token_add_list_revoke_through_the_cli_takes_effect_without_a_restart(
    agent: AgentProcess,
) -> None:
    state = str(agent.state_dir)
    added = htcsim("agent", "token", "add", "alice", "--group", "g1", "--state-dir", state)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert len(token) >= 43 and token not in (agent.state_dir / "tokens.toml").read_text()
    with agent.client(token) as alice:
        assert alice.get("/jobs").status_code == 200
    listed = htcsim("agent", "token", "list", "--state-dir", state)
    assert listed.returncode == 0, listed.stderr
    assert token not in listed.stdout
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    alice_row = next(r for r in rows if r[1] == "alice")
    assert alice_row[2:5] == ["user", "g1", "alice"]
    revoked = htcsim("agent", "token", "revoke", alice_row[0], "--state-dir", state)
    assert revoked.returncode == 0, revoked.stderr
    # the agent rereads the file when it changes (mtime, inode, size): no restart
    with agent.client(token) as alice:
        assert alice.get("/jobs").status_code == 401
    with agent.client() as admin:
        assert admin.get("/jobs").status_code == 200
    assert htcsim("agent", "token", "revoke", "nosuchid", "--state-dir", state).returncode != 0


def test_an_old_plaintext_token_file_is_migrated_to_hashes(agent: AgentProcess) -> None:
    path = agent.state_dir / "tokens.toml"
    old = "an-old-plaintext-token-0123456789"
    with path.open("a") as out:
        out.write(f'\n[[token]]\ntoken = "{old}"\nuser = "oldtimer"\n')
    with agent.client(old) as client:
        assert client.get("/jobs").status_code == 200
    text = path.read_text()
    assert old not in text and "oldtimer" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ------------------------------------------------------------------ another user's job


def test_another_user_reaches_no_job_of_alice_through_any_endpoint(
    agent: AgentProcess, tmp_path: Path
) -> None:
    alice, bob = user_client(agent, "alice"), user_client(agent, "bob")
    secret = {"SECRET": "alice-only"}
    response = alice.post("/jobs", json=job(tmp_path, env=secret, hold=True))
    assert response.status_code == 201
    held = response.json()["ids"][0]
    done = alice.post("/jobs", json=job(tmp_path, env=secret)).json()["ids"][0]
    wait_for(lambda: alice.get(f"/jobs/{done}").json()["state"] == "completed", timeout=60)
    workflow = {"name": "mine", "job": [{"name": "a", "command": "true", "hold": True}]}
    response = alice.post("/workflows", json={"workflow": workflow, "base_dir": str(tmp_path)})
    assert response.status_code == 201, response.text

    for job_id in (held, done):
        for method, url in (
            ("GET", f"/jobs/{job_id}"),
            ("GET", f"/jobs/{job_id}/history"),
            ("GET", f"/jobs/{job_id}/log"),
            ("GET", f"/jobs/{job_id}/log?stream=stderr"),
            ("POST", f"/jobs/{job_id}/cancel"),
            ("POST", f"/jobs/{job_id}/hold"),
            ("POST", f"/jobs/{job_id}/release"),
            ("DELETE", f"/jobs/{job_id}"),
        ):
            response = bob.request(method, url)
            assert response.status_code in (403, 404), (method, url, response.text)
            assert "alice-only" not in response.text
    assert bob.get("/jobs", params={"user": "alice"}).status_code == 403
    for params in ({}, {"state": "held"}, {"array_id": held}, {"after": 0}):
        listed = bob.get("/jobs", params=params)
        assert listed.status_code == 200 and listed.json()["jobs"] == [], params
    assert bob.get("/workflows/mine").status_code == 404
    assert bob.get("/workflows/mine", params={"user": "alice"}).status_code == 404
    # nothing changed: alice's job is still held, her env hers and the admin's to see
    assert alice.get(f"/jobs/{held}").json()["state"] == "held"
    assert alice.get(f"/jobs/{held}").json()["env"] == secret
    with agent.client() as admin:
        assert admin.get(f"/jobs/{held}").json()["env"] == secret
    for listed_job in alice.get("/jobs").json()["jobs"]:
        assert "env" not in listed_job  # lists carry no environments
    alice.close()
    bob.close()


# ------------------------------------------------------------------ request hygiene


def test_an_oversized_body_is_answered_413(agent: AgentProcess, tmp_path: Path) -> None:
    big = job(tmp_path, env={"X": "y" * (5 << 20)})
    with agent.client() as admin:
        response = admin.post("/jobs", json=big)
        assert response.status_code == 413, response.text[:200]
        assert response.json()["field"] == "body"

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked
            yield b'{"command": ["true"], "cwd": "/tmp", "env": {"X": "'
            for _ in range(80):
                yield b"z" * 65536
            yield b'"}}'

        response = admin.post(
            "/jobs", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
    with agent.client() as admin:
        assert admin.post("/jobs", json=job(tmp_path)).status_code == 201
    assert len(all_jobs(agent)) == 1


def test_a_retried_submit_with_the_same_idempotency_key_creates_nothing(
    agent: AgentProcess, tmp_path: Path
) -> None:
    alice, bob = user_client(agent, "alice"), user_client(agent, "bob")
    headers = {"Idempotency-Key": "retry-7"}
    body = job(tmp_path, hold=True)
    first = alice.post("/jobs", json=body, headers=headers)
    assert first.status_code == 201
    again = alice.post("/jobs", json=body, headers=headers)
    assert again.status_code == 201 and again.json() == first.json()
    assert len(all_jobs(agent)) == 1
    other = alice.post("/jobs", json={**body, "cores": 2}, headers=headers)
    assert other.status_code == 409 and other.json()["field"] == "Idempotency-Key"
    array = job(tmp_path, hold=True, array="1-3")
    arrays = [alice.post("/jobs", json=array, headers={"Idempotency-Key": "a"}) for _ in "xy"]
    assert arrays[0].status_code == arrays[1].status_code == 201
    assert arrays[0].json() == arrays[1].json() and len(arrays[0].json()["ids"]) == 3
    bobs = bob.post("/jobs", json=body, headers=headers)  # a key is its user's own
    assert bobs.status_code == 201 and bobs.json() != first.json()
    assert len(all_jobs(agent)) == 5
    alice.close()
    bob.close()
    agent.restart()  # the keys are in the store
    with agent.client(add_token(agent.state_dir / "tokens.toml", "alice")) as alice:
        after = alice.post("/jobs", json=body, headers=headers)
        assert after.status_code == 201 and after.json() == first.json()
    assert len(all_jobs(agent)) == 5


# ------------------------------------------------------------------ weird bytes


def test_weird_text_in_a_job_never_makes_a_500(agent: AgentProcess, tmp_path: Path) -> None:
    with agent.client() as admin:
        for body in (
            '{"command": ["true"], "cwd": "%s", "env": {"X": "\\ud800"}}',
            '{"command": ["true", "\\udcff"], "cwd": "%s"}',
            '{"command": ["true"], "cwd": "%s", "stdout": "\\ud83d.out"}',
        ):
            response = admin.post(
                "/jobs", content=body % tmp_path, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 422, response.text
            assert admin.get("/jobs").status_code == 200
        ok = admin.post("/jobs", json=job(tmp_path, env={"X": "é\u2028\x01"}))
        assert ok.status_code == 201
    agent.stop()
    # a row whose text is not UTF-8 at all (another tool, an old version)
    db = sqlite3.connect(agent.state_dir / "agent.db")
    db.execute(
        "INSERT INTO jobs (user, name, command, cwd, env, cores, walltime_s, state, "
        "submit_time, end_time, exit_code) VALUES (?, ?, ?, CAST(? AS TEXT), ?, 1, 60, "
        "'completed', 1.0, 2.0, 0)",
        ("root", "odd", '["true"]', b"/tmp/\xff\xfe", '{"Y": "\\ud800"}'),
    )
    db.commit()
    odd = db.execute("SELECT max(id) FROM jobs").fetchone()[0]
    db.close()
    os.chmod(agent.state_dir / "agent.db", 0o600)
    agent.restart()
    with agent.client() as admin:
        listed = admin.get("/jobs")
        assert listed.status_code == 200, listed.text
        assert {j["id"] for j in listed.json()["jobs"]} >= {odd}
        one = admin.get(f"/jobs/{odd}")
        assert one.status_code == 200, one.text
        assert admin.get(f"/jobs/{odd}/history").status_code == 200


@pytest.mark.parametrize(
    ("mode", "own_group", "accepted"),
    [
        (0o600, True, True),
        (0o440, True, True),  # a mounted Kubernetes Secret: fsGroup is the agent's group
        (0o440, False, False),  # another group may read it
        (0o460, True, False),  # the group may write: it could add an admin
        (0o444, True, False),  # anyone may read it
    ],
)
def test_a_token_file_readable_by_the_agents_own_group_only_is_accepted(
    tmp_path: Path, mode: int, own_group: bool, accepted: bool
) -> None:
    """Hashes only, so the agent's own group may read the token file; no one else."""
    from htcsim.agent.config import AgentConfig
    from htcsim.agent.server import AgentStartError, _check_modes

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    tokens = state / "tokens.toml"
    add_token(tokens, "alice")
    if not own_group:
        if os.geteuid() != 0:
            pytest.skip("giving the file another group needs root")
        os.chown(tokens, -1, os.getegid() + 4242)
    tokens.chmod(mode)
    config = AgentConfig(state_dir=state)
    if accepted:
        _check_modes(config)
    else:
        with pytest.raises(AgentStartError, match=str(tokens)):
            _check_modes(config)


def test_a_user_beyond_the_submission_cap_is_refused_before_anything_is_stored(
    tmp_path: Path,
) -> None:
    """``max_submit_jobs_per_user``: jobs pending, held or running count; the rest is 429."""
    with running_agent(tmp_path, max_submit_jobs_per_user=3) as capped:
        alice, bob = user_client(capped, "alice"), user_client(capped, "bob")
        held = [
            alice.post("/jobs", json=job(tmp_path, hold=True)).json()["ids"][0] for _ in range(2)
        ]
        before = len(all_jobs(capped))
        response = alice.post("/jobs", json=job(tmp_path, hold=True, array="1-2"))
        assert response.status_code == 429, response.text
        assert "max_submit_jobs_per_user = 3" in response.json()["detail"]
        assert len(all_jobs(capped)) == before  # nothing of the refused request stored
        assert bob.post("/jobs", json=job(tmp_path, hold=True)).status_code == 201
        assert alice.post("/jobs", json=job(tmp_path, hold=True)).status_code == 201
        assert alice.post("/jobs", json=job(tmp_path, hold=True)).status_code == 429
        assert alice.post(f"/jobs/{held[0]}/cancel").status_code == 200
        assert alice.post("/jobs", json=job(tmp_path, hold=True)).status_code == 201
        alice.close()
        bob.close()
