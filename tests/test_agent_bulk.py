"""Bulk cancel, hold and release through a real agent: ``POST /jobs/cancel``
(``/hold``, ``/release``) and ``htcsim cancel 17 18 20-25 | 12_* | --user --state
--name`` through the real ``htcsim`` process.

One request selects the jobs (ids, a whole array, a filter) and the engine
applies it in one turn; a user's filter never reaches another user's jobs.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from htcsim.agent.api.auth import add_token
from tests.agent_harness import AgentProcess, running_agent, wait_for

FINAL = ("completed", "failed", "cancelled", "timeout", "node_fail")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One node, one core: a long job keeps the others pending."""
    with running_agent(
        tmp_path_factory.mktemp("bulk-agent"), nodes=1, cores_per_node=1, kill_grace_s=1
    ) as running:
        yield running


def token_of(agent: AgentProcess, user: str) -> str:
    return add_token(agent.state_dir / "tokens.toml", user)


def submit(client: httpx.Client, cwd: Path, command: list[str], **fields: Any) -> list[int]:
    response = client.post("/jobs", json={"command": command, "cwd": str(cwd), **fields})
    assert response.status_code == 201, response.text
    return [int(i) for i in response.json()["ids"]]


def state(client: httpx.Client, job_id: int) -> str:
    response = client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["state"])


def wait_states(client: httpx.Client, ids: list[int], *states: str) -> None:
    wait_for(lambda: all(state(client, j) in states for j in ids) or None, timeout=30)


def bulk(client: httpx.Client, action: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/jobs/{action}", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_cancel_an_array_cancels_every_task(agent: AgentProcess, tmp_path: Path) -> None:
    with agent.client() as admin:
        tasks = submit(admin, tmp_path, ["sleep", "60"], array="1-4")
        wait_states(admin, tasks[:1], "running")  # the first runs, the others wait
        other = submit(admin, tmp_path, ["true"], hold=True)
        assert bulk(admin, "cancel", array_id=tasks[0]) == {"ids": tasks, "errors": []}
        wait_states(admin, tasks, "cancelled")
        assert state(admin, other[0]) == "held"  # not of the array
        # the array's tasks all ended: nothing left to select
        assert bulk(admin, "cancel", array_id=tasks[0]) == {"ids": [], "errors": []}
        # the per-job route still acts on one job only
        assert admin.post(f"/jobs/{other[0]}/cancel").json() == {"ids": other}


def test_cancel_a_list_of_ids_reports_each_refused(agent: AgentProcess, tmp_path: Path) -> None:
    with agent.client() as admin:
        held = [submit(admin, tmp_path, ["true"], hold=True)[0] for _ in range(3)]
        ended = submit(admin, tmp_path, ["true"])[0]
        wait_states(admin, [ended], *FINAL)
        result = bulk(admin, "cancel", ids=[*held, ended, 99_999_999, held[0]])
        assert result["ids"] == held
        assert [(e["id"], e["status"]) for e in result["errors"]] == [
            (ended, 409),
            (99_999_999, 404),
        ]
        assert "already ended" in result["errors"][0]["detail"]
        wait_states(admin, held, "cancelled")


def test_a_filter_selects_only_the_callers_jobs(agent: AgentProcess, tmp_path: Path) -> None:
    with (
        agent.client(token_of(agent, "alice")) as alice,
        agent.client(token_of(agent, "bob")) as bob,
        agent.client() as admin,
    ):
        alices = [submit(alice, tmp_path, ["true"], hold=True, name=f"train-{k}")[0] for k in "ab"]
        alices_eval = submit(alice, tmp_path, ["true"], hold=True, name="eval")[0]
        bobs = submit(bob, tmp_path, ["true"], hold=True, name="train-b")[0]

        # another user's jobs: never selected, by name, by user or by id
        assert bulk(alice, "cancel", name="train*") == {"ids": alices, "errors": []}
        assert bulk(alice, "cancel", user="bob") == {"ids": [], "errors": []}
        refused = bulk(alice, "cancel", ids=[bobs])
        assert refused["ids"] == [] and refused["errors"][0]["status"] == 404
        assert state(bob, bobs) == "held"
        assert state(alice, alices_eval) == "held"

        # an admin selects any user's
        assert bulk(admin, "cancel", user="bob", name="train*") == {"ids": [bobs], "errors": []}
        assert bulk(admin, "cancel", user="alice", state=["held"]) == {
            "ids": [alices_eval],
            "errors": [],
        }
        wait_states(admin, [*alices, alices_eval, bobs], "cancelled")

        # nothing to select with is a 422; an unknown state too
        assert alice.post("/jobs/cancel", json={}).status_code == 422
        assert alice.post("/jobs/cancel", json={"state": ["bogus"]}).status_code == 422


def test_hold_and_release_in_bulk(agent: AgentProcess, tmp_path: Path) -> None:
    with agent.client(token_of(agent, "carol")) as carol:
        blocker = submit(carol, tmp_path, ["sleep", "60"], name="blocker")[0]
        wait_states(carol, [blocker], "running")
        waiting = submit(carol, tmp_path, ["true"], array="1-3", name="w")
        wait_states(carol, waiting, "pending")

        # hold: the pending ones only (the running blocker is not selected)
        assert bulk(carol, "hold", user="carol") == {"ids": waiting, "errors": []}
        wait_states(carol, waiting, "held")
        refused = bulk(carol, "hold", ids=[blocker, waiting[0]])
        assert [e["status"] for e in refused["errors"]] == [409, 409]

        assert bulk(carol, "release", array_id=waiting[0]) == {"ids": waiting, "errors": []}
        wait_states(carol, waiting, "pending")
        assert bulk(carol, "cancel", name="blocker") == {"ids": [blocker], "errors": []}
        wait_states(carol, [blocker], "cancelled")
        wait_states(carol, waiting, "completed")


def htcsim(agent: AgentProcess, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``htcsim ARGS`` as its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "htcsim", *args],
        env=agent.env(token),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_cancels_holds_and_releases_in_one_command(
    agent: AgentProcess, tmp_path: Path
) -> None:
    dave = token_of(agent, "dave")
    with agent.client(dave) as client:
        ids = [submit(client, tmp_path, ["true"], hold=True, name="train")[0] for _ in range(4)]
        array = submit(client, tmp_path, ["true"], hold=True, array="1-3", name="arr")
        named = [submit(client, tmp_path, ["true"], hold=True, name=f"train{k}")[0] for k in "xy"]

        first, second = ids[0], ids[1]
        done = htcsim(agent, dave, "cancel", str(first), f"{second}-{ids[3]}")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"cancelled {first}-{ids[3]}"
        wait_states(client, ids, "cancelled")

        done = htcsim(agent, dave, "cancel", f"{array[0]}_*")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"cancelled {array[0]}-{array[2]}"
        wait_states(client, array, "cancelled")

        done = htcsim(agent, dave, "release", "--user", "dave", "--name", "train*")
        assert done.stdout.strip() == f"released {named[0]}-{named[1]}", done.stderr
        assert [state(client, j) for j in named] != ["held", "held"]
        done = htcsim(
            agent, dave, "cancel", "--user", "dave", "--state", "held,pending", "--name", "tr*"
        )
        assert done.returncode == 0, done.stderr

        # one refused id: reported on its own line, exit 2, the others still done
        held = submit(client, tmp_path, ["true"], hold=True)[0]
        done = htcsim(agent, dave, "cancel", str(held), str(first))
        assert done.returncode == 2
        assert done.stdout.strip() == f"cancelled {held}"
        assert f"error: job {first}: HTTP 409" in done.stderr
        assert htcsim(agent, dave, "cancel").returncode != 0  # nothing selected
