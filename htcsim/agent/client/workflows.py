"""``htcsim workflow submit`` and ``workflow status``: a pipeline file (TOML)
submitted as one batch, all its jobs or none, and its progress followed by
the workflow's name.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import typer

from htcsim.agent.client._output import (
    JsonOption,
    _agent,
    _fail,
    _print_json,
    _print_table,
    _table,
    console,
    escape,
)

workflow_app = typer.Typer(help="Submit a pipeline file and follow it.", no_args_is_help=True)
"""``htcsim workflow``: ``submit`` and ``status``."""


@workflow_app.command("submit")
def workflow_submit_command(
    path: Annotated[Path, typer.Argument(help="The pipeline file (TOML).")],
    json_out: JsonOption = False,
) -> None:
    """Submit a pipeline file, all jobs or none; relative cwds are relative to the file."""
    from htcsim.agent.client.http import AgentClient, ClientError

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _fail(f"{path}: not valid TOML ({exc})") from None
    try:
        with AgentClient() as client:
            result = client.submit_workflow(data, str(path.resolve().parent))
    except ClientError as exc:
        # the agent names the file "workflow"; the person is editing `path`
        message = str(exc).replace("HTTP 422: workflow:", f"HTTP 422: {path}:", 1)
        raise _fail(message) from None
    if json_out:
        _print_json(result)
        return
    console.print(f"workflow {escape(result['name'])}: {len(result['ids'])} jobs")
    table = _table("NAME", "ID")
    for job_name, job_id in result["jobs"].items():
        table.add_row(escape(job_name), str(job_id))
    _print_table(table)


@workflow_app.command("status")
def workflow_status_command(
    name: Annotated[str, typer.Argument(help="The workflow's name (its file's `name`).")],
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Another user's workflow (admin).")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Progress of a workflow: overall state, jobs per state, each job's state."""
    with _agent() as client:
        status = client.workflow_status(name, user)
    if json_out:
        _print_json(status)
        return
    counts = ", ".join(f"{n} {s}" for s, n in status["counts"].items() if n)
    console.print(
        f"workflow {escape(str(status['name']))}: {status['state']}, "
        f"{status['done']:.0%} done ({counts or 'no jobs'})"
    )
    table = _table("NAME", "ID", "STATE", "EXIT")
    for job in status["jobs"]:
        exit_code = job.get("exit_code")
        table.add_row(
            escape(str(job["name"])),
            str(job["id"]),
            str(job["state"]),
            "-" if exit_code is None else str(exit_code),
        )
    _print_table(table)
