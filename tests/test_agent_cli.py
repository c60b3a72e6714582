"""The client commands (``htcsim submit``, ``queue``, ``show``...) against a real agent.

Why a real agent: the commands are only as good as what they make of the
API's answers and errors over a socket, so one small agent (2 nodes of 2
cores) runs for the whole module and the CLI is driven through typer's
CliRunner (one test goes through ``python -m htcsim`` in a subprocess, as a
person would). Waits poll the agent with generous timeouts; nothing asserts
on timing.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.markup import escape
from typer.testing import CliRunner

from htcsim.agent.client._output import _print_rows, _print_table, _ranges, _table, human_duration
from htcsim.agent.client.http import AgentClient, ClientError, resolve_settings
from htcsim.agent.client.jobs import _parse_env, _parse_signal
from htcsim.agent.defaults import user_client_file
from htcsim.cli.app import app
from tests.agent_harness import AgentProcess, free_port, running_agent, wait_for

runner = CliRunner()
TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with running_agent(
        tmp_path_factory.mktemp("cli-agent"), nodes=2, cores_per_node=2, kill_grace_s=1
    ) as process:
        yield process


def cli(agent: AgentProcess | None, *args: str, token: str | None = None) -> Any:
    """Run ``htcsim ARGS`` in this process with the agent's URL and a token."""
    env = agent.env(token) if agent is not None else None
    return runner.invoke(app, list(args), env=env)


def ok(agent: AgentProcess, *args: str, token: str | None = None) -> str:
    result = cli(agent, *args, token=token)
    assert result.exit_code == 0, (args, result.output, result.stderr)
    return str(result.stdout)


def one_line_error(result: Any) -> str:
    """The failure contract: exit code 2, nothing on stdout, one line on stderr."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return str(lines[0])


def show(agent: AgentProcess, job_id: int, token: str | None = None) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(ok(agent, "show", str(job_id), "--json", token=token))
    return job


def wait_state(agent: AgentProcess, job_id: int, *states: str) -> dict[str, Any]:
    """Poll ``show --json`` until the job is in one of ``states``; the job."""

    def reached() -> dict[str, Any] | None:
        job = show(agent, job_id)
        return job if job["state"] in states else None

    job: dict[str, Any] = wait_for(reached, TIMEOUT_S)
    return job


def submit(agent: AgentProcess, cwd: Path, *args: str, token: str | None = None) -> int:
    return int(ok(agent, "submit", "--chdir", str(cwd), *args, token=token).strip())


# ---------------------------------------------------------------------- against an agent


JOB = ["--time", "5m", "--", "python3", "-c", "print('hello from', 40 + 2)"]


def test_submit_queue_release_complete(agent: AgentProcess, tmp_path: Path) -> None:
    # through the real entry point: options of the job's command stay the job's
    done = subprocess.run(
        [sys.executable, "-m", "htcsim", "submit", "--hold", "-J", "first", "--mem", "64M", *JOB],
        env=agent.env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    job_id = int(done.stdout.strip())

    queue = ok(agent, "queue")
    row = next(line for line in queue.splitlines() if line.split()[:1] == [str(job_id)])
    assert "first" in row and "held" in row
    job = show(agent, job_id)
    assert job["cwd"] == str(tmp_path)
    assert (job["mem_mib"], job["walltime_s"]) == (64, 300)
    assert job["command"] == JOB[3:]

    assert ok(agent, "release", str(job_id)).strip() == f"released {job_id}"
    job = wait_state(agent, job_id, "completed", "failed")
    assert job["state"] == "completed" and job["exit_code"] == 0
    assert ok(agent, "logs", str(job_id)) == "hello from 42\n"
    listed = json.loads(ok(agent, "queue", "--state", "completed", "--json"))
    assert job_id in [j["id"] for j in listed]
    assert str(job_id) not in ok(agent, "queue").split()  # ended jobs leave the queue


def test_array_fills_in_the_index(agent: AgentProcess, tmp_path: Path) -> None:
    out = ok(
        agent, "submit", "--chdir", str(tmp_path), "--array", "1-3", "--", "echo", "task-{index}"
    )
    assert out.startswith("array ")
    array_id = int(out.split()[1].rstrip(":"))
    ids = [array_id, array_id + 1, array_id + 2]
    assert out.strip() == f"array {array_id}: jobs {ids[0]}-{ids[-1]}"
    for k, job_id in enumerate(ids, start=1):
        job = wait_state(agent, job_id, "completed", "failed")
        assert (job["state"], job["array_id"], job["array_index"]) == ("completed", array_id, k)
        assert ok(agent, "logs", str(job_id)) == f"task-{k}\n"
    assert ok(agent, "logs", str(ids[0]), "--tail", "1") == "task-1\n"


def test_after_ok_waits_for_the_parent(agent: AgentProcess, tmp_path: Path) -> None:
    parent = submit(agent, tmp_path, "--", "sleep", "1")
    child = submit(agent, tmp_path, "--after-ok", str(parent), "--", "true")
    waiting = show(agent, child)
    assert waiting["dependencies"] == [{"job": parent, "kind": "afterok", "delay_s": 0}]
    assert "afterok:" in ok(agent, "show", str(child))

    child_job = wait_state(agent, child, "completed", "failed", "cancelled")
    parent_job = show(agent, parent)
    assert child_job["state"] == parent_job["state"] == "completed"
    assert child_job["start_time"] >= parent_job["end_time"]


def test_cancel_a_running_job(agent: AgentProcess, tmp_path: Path) -> None:
    job_id = submit(agent, tmp_path, "--", "sleep", "60")
    wait_state(agent, job_id, "running")
    assert ok(agent, "cancel", str(job_id)).strip() == f"cancelled {job_id}"
    job = wait_state(agent, job_id, "cancelled", "failed", "completed")
    assert job["state"] == "cancelled"

    history = ok(agent, "history", str(job_id))
    for state in ("pending", "running", "cancelled"):
        assert state in history
    shown = ok(agent, "show", str(job_id))
    assert "cancelled" in shown and str(tmp_path / f"htcsim-{job_id}.out") in shown

    again = cli(agent, "cancel", str(job_id))  # already ended: 409, one line
    assert "HTTP 409" in one_line_error(again)


def test_nodes_drain_and_resume(agent: AgentProcess) -> None:
    listing = ok(agent, "nodes")
    assert "node0" in listing and "node1" in listing
    assert "node0: drain" in ok(agent, "nodes", "drain", "node0")  # draining or drained
    nodes = {n["name"]: n for n in json.loads(ok(agent, "nodes", "--json"))}
    assert nodes["node0"]["state"] in ("draining", "drained")
    assert nodes["node0"]["capacity"]["cores"] == 2
    resumed = ok(agent, "nodes", "resume", "node0")
    assert resumed.split(": ")[1].strip() in ("idle", "mixed", "allocated")
    assert "HTTP 404" in one_line_error(cli(agent, "nodes", "drain", "node9"))


def test_workflow_submit_and_status(agent: AgentProcess, tmp_path: Path) -> None:
    pipeline = tmp_path / "pipe.toml"
    pipeline.write_text(
        'name = "cli-pipe"\n'
        '[[job]]\nname = "make"\ncommand = ["true"]\n'
        '[[job]]\nname = "use"\ncommand = ["true"]\nafter_ok = ["make"]\n'
    )
    out = ok(agent, "workflow", "submit", str(pipeline))
    assert "cli-pipe" in out and "make" in out and "use" in out

    def finished() -> str | None:
        status = json.loads(ok(agent, "workflow", "status", "cli-pipe", "--json"))
        return status["state"] if status["state"] in ("completed", "failed") else None

    assert wait_for(finished, TIMEOUT_S) == "completed"
    assert "100% done" in ok(agent, "workflow", "status", "cli-pipe")
    with AgentClient(agent.url, agent.token) as client:  # a page per job: all followed
        paged = client.workflow_status("cli-pipe", page_size=1)
    assert [j["name"] for j in paged["jobs"]] == ["make", "use"]
    assert (paged["total"], paged["counts"]["completed"]) == (2, 2) and "next" not in paged

    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\n[[job]]\nname = "a"\ncommand = ["true"]\ncores = 0\n')
    line = one_line_error(cli(agent, "workflow", "submit", str(broken)))
    assert "HTTP 422" in line and str(broken) in line


def test_api_errors_are_one_line(agent: AgentProcess, tmp_path: Path) -> None:
    huge = one_line_error(cli(agent, "submit", "--cores", "9999", "--", "true"))
    assert huge.startswith("error: HTTP 422: ") and "cluster" in huge
    missing = one_line_error(cli(agent, "submit", "--chdir", "/no/such/dir", "--", "true"))
    assert "HTTP 422: cwd: /no/such/dir" in missing
    assert "memory size" in one_line_error(cli(agent, "submit", "--mem", "lots", "--", "true"))
    assert "HTTP 404: no job 999999" in one_line_error(cli(agent, "show", "999999"))
    assert "HTTP 422: state" in one_line_error(cli(agent, "queue", "--state", "bogus"))
    refused = one_line_error(cli(agent, "queue", token="not-a-token-of-this-agent"))
    assert "refused the token" in refused and "HTCSIM_TOKEN" in refused


def test_a_user_token_sees_and_does_less(agent: AgentProcess, tmp_path: Path) -> None:
    added = cli(agent, "agent", "token", "add", "bob", "--state-dir", str(agent.state_dir))
    assert added.exit_code == 0, added.output
    bob = added.stdout.strip()
    admins_job = submit(agent, tmp_path, "--hold", "--", "true")
    bobs_job = submit(agent, tmp_path, "--hold", "--", "true", token=bob)

    assert "HTTP 403" in one_line_error(cli(agent, "nodes", "drain", "node0", token=bob))
    assert f"HTTP 404: no job {admins_job}" in one_line_error(
        cli(agent, "show", str(admins_job), token=bob)
    )
    assert "HTTP 404" in one_line_error(cli(agent, "cancel", str(admins_job), token=bob))
    bobs_queue = json.loads(ok(agent, "queue", "--json", token=bob))
    assert [j["id"] for j in bobs_queue] == [bobs_job]
    every = [j["id"] for j in json.loads(ok(agent, "queue", "--all", "--json"))]
    assert admins_job in every and bobs_job in every
    assert bobs_job not in [j["id"] for j in json.loads(ok(agent, "queue", "--json"))]
    assert "bob" in ok(agent, "queue", "--user", "bob")
    ok(agent, "cancel", str(admins_job), str(bobs_job))


# ---------------------------------------------------------------------- without an agent


def test_no_agent_running(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["queue"], env={"HTCSIM_URL": url, "HTCSIM_TOKEN": "x" * 20})
    line = one_line_error(result)
    assert line == f"error: cannot reach the agent at {url} (is `htcsim agent serve` running?)"


def test_settings_come_from_args_env_then_files(tmp_path: Path) -> None:
    local, home = tmp_path / "local.toml", tmp_path / "home.toml"
    local.write_text('token = "local-token"\n')
    home.write_text('url = "http://home:1"\ntoken = "home-token"\n')
    files = [local, home]
    found = resolve_settings(environ={}, files=files)
    assert (found.url, found.token, found.token_source) == (
        "http://home:1",
        "local-token",
        str(local),
    )
    env = {"HTCSIM_URL": "http://env:2/", "HTCSIM_TOKEN": "env-token"}
    assert resolve_settings(environ=env, files=files).url == "http://env:2"
    assert resolve_settings("http://arg:3", "t", environ=env, files=files).token == "t"
    default = resolve_settings(environ={}, files=[tmp_path / "none.toml"])
    assert (default.url, default.token) == ("http://127.0.0.1:8642", None)
    local.write_text("token = ")
    with pytest.raises(ClientError, match="not valid TOML"):
        resolve_settings(environ={}, files=files)


def test_the_user_config_file_is_the_xdg_one_by_default_under_home() -> None:
    home = Path("~/.config/htcsim/client.toml").expanduser()
    assert user_client_file({}) == home
    assert user_client_file({"XDG_CONFIG_HOME": "relative/ignored"}) == home
    assert user_client_file({"XDG_CONFIG_HOME": "/x/cfg"}) == Path("/x/cfg/htcsim/client.toml")


def test_a_first_start_leaves_the_token_where_any_directory_finds_it(tmp_path: Path) -> None:
    """The first ``agent serve`` writes the admin's client file to the user's config
    dir (0600 in a 0700 folder) and says so; ``htcsim queue`` from another directory,
    with no HTCSIM_* variables, reaches the agent; a second agent's first start leaves
    that file alone."""
    config_home = tmp_path / "xdg"
    environ = {"XDG_CONFIG_HOME": str(config_home), "HOME": str(tmp_path / "home")}
    user_file = config_home / "htcsim" / "client.toml"
    with running_agent(tmp_path / "first", environ=environ) as first:
        assert user_file.stat().st_mode & 0o777 == 0o600
        assert user_file.parent.stat().st_mode & 0o777 == 0o700
        assert user_file.read_text() == (first.state_dir / "client.toml").read_text()
        assert (
            f"admin token for {getpass.getuser()} written to {user_file}" in first.log.read_text()
        )
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HTCSIM_")} | environ
        run = subprocess.run(
            [sys.executable, "-m", "htcsim", "queue"],
            cwd=elsewhere,
            env=env | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        with running_agent(tmp_path / "second", environ=environ) as second:
            assert user_file.read_text() == (first.state_dir / "client.toml").read_text()
            assert str(user_file) not in second.log.read_text()


def test_export_env_keeps_the_token_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTCSIM_TOKEN", "secret-token-value")
    monkeypatch.setenv("STAGE", "dev")
    env = _parse_env(["STAGE=prod", "EMPTY="], export_env=True)
    assert env["STAGE"] == "prod" and env["EMPTY"] == "" and "HTCSIM_TOKEN" not in env
    assert _parse_env(["A=1"], export_env=False) == {"A": "1"}


def test_formatting_helpers() -> None:
    assert [human_duration(s) for s in (None, 5, 133, 3720, 90_000)] == [
        "-",
        "5s",
        "2m13s",
        "1h02m",
        "1d01h",
    ]
    assert _ranges([19, 17, 18, 25, 27, 28]) == "17-19,25,27-28"
    assert _parse_signal("USR1@90") == ("USR1", 90)
    assert _parse_signal("USR2") == ("USR2", 60)
    assert _parse_signal("B:10@5") == ("SIGUSR1", 5)


def test_long_tables_print_as_rich_prints_them_piped(capsys: pytest.CaptureFixture[str]) -> None:
    """``_print_rows`` lays a table out itself (rich takes seconds for 10,000 rows):
    piped, its text is rich's, wide characters and markup-like text included."""
    headers = ["ID", "NAME", "START", "NODE"]
    rows = [
        ["1", "train[3]", "12:00:00", "-"],
        ["12345", "漢字 job", "", "node-1"],
        ["7", "[bold]x[/bold]", "2024-01-02 03:04:05", "é"],
    ]
    table = _table(*headers)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    _print_table(table)
    by_rich = capsys.readouterr().out
    _print_rows(headers, rows)
    assert capsys.readouterr().out == by_rich
    assert by_rich.splitlines()[3].split()[1] == "[bold]x[/bold]"
