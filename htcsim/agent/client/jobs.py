"""``htcsim submit``, ``queue``, ``show``, ``history``, ``cancel``, ``hold``,
``release`` and ``logs``: a user's jobs on the live agent, as Slurm's
sbatch/squeue/scontrol/scancel are.

Nothing heavy is imported at module level, so the commands stay quick to
start; the parsers of memory sizes and durations (shared with workflow files,
so "8G" means the same everywhere) are imported when ``submit`` runs.
"""

from __future__ import annotations

import os
import re
import signal as signal_module
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from htcsim.agent.client._output import (
    PANEL,
    JsonOption,
    _agent,
    _fail,
    _mib,
    _print_json,
    _print_rows,
    _print_table,
    _ranges,
    _split_ids,
    _table,
    console,
    err_console,
    escape,
    human_duration,
    human_time,
    say,
)

if TYPE_CHECKING:
    from htcsim.agent.client.http import AgentClient

jobs_app = typer.Typer(add_completion=False)
"""The job commands; ``htcsim.agent.client.commands`` registers them at the top level."""

ACTIVE_STATES = ("pending", "held", "running")
"""What ``queue`` lists without ``--state``: like squeue, ended jobs are left out."""
PASS_THROUGH = {"allow_interspersed_args": False}
"""``submit``'s options end where the job's command starts (as with sbatch), so the
command's own options are never taken for ours; ``--`` makes the boundary explicit."""
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_EXPORTED = frozenset({"HTCSIM_TOKEN"})
_SLURM_LOG_PATTERNS = {"%j": "{id}", "%A": "{array_id}", "%a": "{index}", "%%": "%"}


# ---------------------------------------------------------------------- formatting


def _elapsed(job: dict[str, Any], now: float) -> float | None:
    if job.get("start_time") is None:
        return None
    end = job.get("end_time")
    return (end if end is not None else now) - job["start_time"]


def _job_name(job: dict[str, Any]) -> str:
    """The name, else the program's base name (as Slurm names a job after its script);
    an array task carries its index: ``process.sh[3]``."""
    name = job.get("name") or os.path.basename(str((job.get("command") or ["?"])[0]))
    if job.get("array_index") is not None:
        name += f"[{job['array_index']}]"
    return str(name)


def _priority(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.4g}"


# ---------------------------------------------------------------------- submit


def _parse_signal(text: str) -> tuple[str, int]:
    """Slurm's ``--signal [B:]SIG[@SECONDS]``: the signal (name or number) and how long
    before the walltime it is sent (60 s when not given, Slurm's default)."""
    spec = text.strip()
    spec = spec[2:] if spec[:2].upper() in ("B:", "R:") else spec
    sig, _, before = spec.partition("@")
    if sig.isdigit():
        try:
            sig = signal_module.Signals(int(sig)).name
        except ValueError:
            raise _fail(f"--signal: {int(sig)} is not a signal number") from None
    if not sig:
        raise _fail(f"--signal: {text!r} names no signal (give e.g. USR1 or USR1@60)")
    if not before:
        return sig, 60
    if not before.isdigit():
        raise _fail(f"--signal: {before!r} is not a number of seconds (e.g. USR1@60)")
    return sig, int(before)


def _parse_env(pairs: Sequence[str], export_env: bool) -> dict[str, str]:
    """The job's environment: the submitter's if asked, then NAME=VALUE pairs.

    From the submitter's, only names the API accepts, and never the agent token:
    the job's environment is stored by the agent and shown by ``show``."""
    env: dict[str, str] = {}
    if export_env:
        env = {
            k: v for k, v in os.environ.items() if _ENV_NAME.fullmatch(k) and k not in _NOT_EXPORTED
        }
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _ENV_NAME.fullmatch(key):
            raise _fail(f"--env: {pair!r} is not NAME=VALUE")
        env[key] = value
    return env


def _log_pattern(path: str) -> str:
    """Slurm's %j, %A, %a in -o/-e become the agent's {id}, {array_id}, {index}."""
    for slurm, ours in _SLURM_LOG_PATTERNS.items():
        path = path.replace(slurm, ours)
    return path


@jobs_app.command("submit", context_settings=PASS_THROUGH, rich_help_panel=PANEL)
def submit_command(
    command: Annotated[
        list[str],
        typer.Argument(
            help="The program and its arguments, after `--`; {id}, {index} and {array_id} "
            "are filled in at launch.",
            metavar="COMMAND",
            show_default=False,
        ),
    ],
    cores: Annotated[int, typer.Option("--cores", "-c", help="Cores.")] = 1,
    mem: Annotated[str, typer.Option(help="Memory: 512M, 8G, 1.5G or MiB.")] = "0",
    gpus: Annotated[int, typer.Option(help="GPUs.")] = 0,
    walltime: Annotated[
        str, typer.Option("--time", "-t", help="Walltime: 90, 30m, 1h, 1:30:00, 2-00:00:00.")
    ] = "1h",
    name: Annotated[str, typer.Option("--name", "-J", help="Job name.")] = "",
    qos: Annotated[str, typer.Option(help="Quality of service (from the policy).")] = "",
    array: Annotated[
        str | None, typer.Option(help='Job array, Slurm syntax: "1-1000", "0-99:2", "1,3,5".')
    ] = None,
    after_ok: Annotated[
        list[str] | None,
        typer.Option("--after-ok", help="Start after these jobs completed (repeat or 17,18)."),
    ] = None,
    after_any: Annotated[
        list[str] | None, typer.Option("--after-any", help="Start after these jobs ended.")
    ] = None,
    after_not_ok: Annotated[
        list[str] | None,
        typer.Option("--after-not-ok", help="Start after these jobs ended badly."),
    ] = None,
    hold: Annotated[bool, typer.Option("--hold", help="Submit held (release it later).")] = False,
    output: Annotated[
        str, typer.Option("--output", "-o", help="stdout file (default htcsim-{id}.out).")
    ] = "",
    error: Annotated[
        str, typer.Option("--error", "-e", help="stderr file (default htcsim-{id}.err).")
    ] = "",
    signal: Annotated[
        str, typer.Option("--signal", help="USR1@60: send USR1 60 s before the walltime.")
    ] = "",
    env: Annotated[
        list[str] | None, typer.Option("--env", help="NAME=VALUE for the job (repeatable).")
    ] = None,
    export_env: Annotated[
        bool, typer.Option("--export-env", help="Send this whole environment to the job.")
    ] = False,
    chdir: Annotated[
        Path | None, typer.Option("--chdir", "-D", help="Working directory (default: here).")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Submit a job (or a job array): htcsim submit --cores 2 --mem 4G -- python train.py"""
    from htcsim.units import parse_duration_s, parse_mem_mib

    if not command:
        raise _fail("no command: put it after `--`, e.g. htcsim submit -- python train.py")
    try:
        mem_mib = parse_mem_mib(mem)
        walltime_s = parse_duration_s(walltime)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    request: dict[str, Any] = {
        "command": list(command),
        "cwd": str((chdir or Path.cwd()).absolute()),
        "cores": cores,
        "mem_mib": mem_mib,
        "gpus": gpus,
        "walltime_s": walltime_s,
        "name": name,
        "qos": qos,
        "hold": hold,
        "array": array,
        "after_ok": _split_ids(after_ok or [], "--after-ok"),
        "after_any": _split_ids(after_any or [], "--after-any"),
        "after_not_ok": _split_ids(after_not_ok or [], "--after-not-ok"),
        "stdout": _log_pattern(output),
        "stderr": _log_pattern(error),
        "env": _parse_env(env or [], export_env),
    }
    if signal:
        request["signal"], request["signal_before_s"] = _parse_signal(signal)
    with _agent() as client:
        result = client.submit(request)
    if json_out:
        _print_json(result)
    elif result.get("array_id") is not None:
        say(f"array {result['array_id']}: jobs {_ranges(result['ids'])}")
    else:
        say(str(result["ids"][0]))


# ---------------------------------------------------------------------- queue, show


def _states(values: Sequence[str] | None) -> list[str]:
    """--state values (repeated or comma lists); "all" lifts the filter."""
    states = [s.strip().lower() for v in values or [] for s in v.split(",") if s.strip()]
    if not states:
        return list(ACTIVE_STATES)
    return [] if "all" in states else states


QUEUE_FIELDS = (
    *("id", "name", "command", "array_index", "user", "state", "reason", "priority"),
    *("node", "start_time", "end_time"),
)
"""What ``queue``'s table shows (a listing of 10,000 jobs is three times lighter)."""


@jobs_app.command("queue", rich_help_panel=PANEL)
def queue_command(
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state", "-s", help="pending, held, running, completed, ... or all (repeatable)."
        ),
    ] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="This user's jobs.")] = None,
    all_users: Annotated[
        bool, typer.Option("--all", "-a", help="Every user's jobs (admin token).")
    ] = False,
    start: Annotated[bool, typer.Option("--start", help="Show estimated start times.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Jobs waiting and running (as squeue): state, reason, priority, node, elapsed."""
    states = _states(state)
    fields = () if json_out else (*QUEUE_FIELDS, *(["estimated_start"] if start else []))
    with _agent() as client:
        if not (all_users or user is not None):
            user = client.whoami()["user"]  # the user the token stands for
        jobs = client.jobs(states=states, user=user, estimate=start, fields=fields)
    if json_out:
        _print_json(jobs)
        return
    now = time.time()
    headers = ["ID", "NAME", "USER", "STATE", "REASON", "PRIORITY"]
    headers += ["START"] if start else []
    headers += ["NODE", "ELAPSED"]
    rows = []
    for job in jobs:
        row = [
            str(job["id"]),
            _job_name(job),
            str(job["user"]),
            str(job["state"]),
            str(job.get("reason") or "-"),
            _priority(job.get("priority")),
        ]
        if start:
            row.append(human_time(job.get("estimated_start"), now=now))
        row += [str(job.get("node") or "-"), human_duration(_elapsed(job, now))]
        rows.append(row)
    if jobs:
        _print_rows(headers, rows)
    else:
        console.print("no jobs" + ("" if state else " waiting or running"))


def _factors(factors: dict[str, float] | None) -> str:
    if not factors:
        return "-"
    return ", ".join(f"{k}={v:.4g}" for k, v in factors.items())


def _show_rows(job: dict[str, Any], now: float) -> list[tuple[str, str]]:
    """(label, value) of every field of a job, in the order a person reads them."""
    deps = ", ".join(f"{d['kind']}:{d['job']}" for d in job.get("dependencies", [])) or "-"
    array = f"{job['array_id']}_{job['array_index']}" if job.get("array_index") is not None else "-"
    exit_code = job.get("exit_code")
    return [
        ("job", str(job["id"])),
        ("name", _job_name(job)),
        ("user", f"{job['user']}" + (f" (group {job['group']})" if job.get("group") else "")),
        ("state", str(job["state"])),
        ("reason", str(job.get("reason") or "-")),
        ("priority", _priority(job.get("priority"))),
        ("factors", _factors(job.get("factors"))),
        ("estimated start", human_time(job.get("estimated_start"), now=now)),
        ("command", " ".join(job["command"])),
        ("cwd", str(job["cwd"])),
        ("array", array),
        ("dependencies", deps),
        ("resources", f"cores {job['cores']}, memory {_mib(job['mem_mib'])}, gpus {job['gpus']}"),
        ("walltime", human_duration(job["walltime_s"])),
        ("qos", str(job.get("qos") or "-")),
        ("submitted", human_time(job.get("submit_time"), now=now)),
        ("started", human_time(job.get("start_time"), now=now)),
        ("ended", human_time(job.get("end_time"), now=now)),
        ("elapsed", human_duration(_elapsed(job, now))),
        ("node", str(job.get("node") or "-")),
        ("gpu ids", _gpu_ids(job.get("gpu_ids"))),
        ("pid", str(job.get("pid") or "-")),
        ("exit code", "-" if exit_code is None else str(exit_code)),
        ("requeues", str(job.get("requeues", 0))),
        ("cpu time", human_duration(job.get("cpu_time_s"))),
        ("max rss", _mib(job.get("max_rss_mib")) if job.get("max_rss_mib") is not None else "-"),
        ("stdout", str(job.get("stdout") or "-")),
        ("stderr", str(job.get("stderr") or "-")),
        ("env", ", ".join(sorted(job.get("env") or {})) or "-"),
    ]


def _gpu_ids(ids: list[int] | None) -> str:
    """The GPU devices a job holds (CUDA_VISIBLE_DEVICES), "-" before it starts or without."""
    return ",".join(str(i) for i in ids) if ids else "-"


@jobs_app.command("show", rich_help_panel=PANEL)
def show_command(
    job_id: Annotated[int, typer.Argument(help="The job.")],
    json_out: JsonOption = False,
) -> None:
    """Everything about one job (as scontrol show job): why it waits, when it may start,
    where it ran, how it ended, its logs and dependencies."""
    with _agent() as client:
        job = client.job(job_id)
    if json_out:
        _print_json(job)
        return
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in _show_rows(job, time.time()):
        table.add_row(label, escape(value))
    _print_table(table)


@jobs_app.command("history", rich_help_panel=PANEL)
def history_command(
    job_id: Annotated[int, typer.Argument(help="The job.")],
    json_out: JsonOption = False,
) -> None:
    """Every state change of a job: when, to which state, and why."""
    with _agent() as client:
        events = client.history(job_id)
    if json_out:
        _print_json(events)
        return
    table = _table("TIME", "STATE", "CAUSE")
    now = time.time()
    for event in events:
        table.add_row(human_time(event["time"], now=now), event["state"], escape(event["cause"]))
    _print_table(table)


# ---------------------------------------------------------------------- actions


_JOB_ID_PART = re.compile(r"^(\d+)(?:-(\d+)|_\*)?$")


def _parse_job_ids(values: Sequence[str]) -> tuple[list[int], list[int]]:
    """Job ids ("17", "20-25", comma lists) and Slurm's whole arrays ("12_*"): (ids, arrays)."""
    ids: list[int] = []
    arrays: list[int] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            match = _JOB_ID_PART.match(part)
            if not match or int(match[1]) < 1:
                raise _fail(f"{part!r} is not a job id, a range N-M or an array N_*")
            first = int(match[1])
            if part.endswith("_*"):
                arrays.append(first)
            elif match[2] is not None:
                last = int(match[2])
                if last < first or last - first >= 100_000:
                    raise _fail(f"{part!r}: a range N-M with N <= M, at most 100000 ids")
                ids.extend(range(first, last + 1))
            else:
                ids.append(first)
    return ids, arrays


def _act(
    verb: str,
    done: str,
    values: Sequence[str] | None,
    array: int | None,
    user: str | None,
    states: Sequence[str] | None,
    name: str | None,
) -> None:
    """One request for all the jobs selected; each refused job is reported, the others done."""
    ids, arrays = _parse_job_ids(values or [])
    if array is not None:
        arrays.append(array)
    if len(set(arrays)) > 1 or (arrays and ids):
        raise _fail("give job ids or one array, not both")
    wanted = [s.strip().lower() for v in states or [] for s in v.split(",") if s.strip()]
    if not (ids or arrays or user or wanted or name):
        raise _fail("give job ids, --array, --user, --state or --name")
    with _agent() as client:
        result = client.bulk(
            verb,
            ids,
            array_id=arrays[0] if arrays else None,
            user=user,
            states=wanted,
            name=name,
        )
    acted = [int(i) for i in result["ids"]]
    if acted:
        say(f"{done} {_ranges(acted)}")
    elif not result["errors"]:
        err_console.print(f"no jobs to {verb}")
    for error in result["errors"]:
        err_console.print(
            f"[bold red]error:[/] job {error['id']}: HTTP {error['status']}: "
            f"{escape(error['detail'])}",
            soft_wrap=True,
        )
    if result["errors"]:
        raise typer.Exit(code=2)


JobIdsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Job ids: 17 18, ranges 20-25, whole arrays 12_* (Slurm's form).",
        show_default=False,
    ),
]
ArrayOption = Annotated[
    int | None, typer.Option("--array", "-a", help="Every task of this array (its id).")
]
UserOption = Annotated[
    str | None, typer.Option("--user", "-u", help="Jobs of this user (a user: only their own).")
]
StateOption = Annotated[
    list[str] | None,
    typer.Option(
        "--state",
        "-t",
        help="Jobs in these states (repeated or comma list); default: those the action applies to.",
    ),
]
NameOption = Annotated[
    str | None, typer.Option("--name", "-n", help='Jobs whose name matches this glob ("train*").')
]


@jobs_app.command("cancel", rich_help_panel=PANEL)
def cancel_command(
    job_ids: JobIdsArgument = None,
    array: ArrayOption = None,
    user: UserOption = None,
    state: StateOption = None,
    name: NameOption = None,
) -> None:
    """Cancel jobs (one request for all): pending ones end now, running ones get SIGTERM
    then SIGKILL. By ids, an array, or a filter: `cancel --user alice --state pending`."""
    _act("cancel", "cancelled", job_ids, array, user, state, name)


@jobs_app.command("hold", rich_help_panel=PANEL)
def hold_command(
    job_ids: JobIdsArgument = None,
    array: ArrayOption = None,
    user: UserOption = None,
    state: StateOption = None,
    name: NameOption = None,
) -> None:
    """Keep pending jobs from starting until released (ids, an array or a filter)."""
    _act("hold", "held", job_ids, array, user, state, name)


@jobs_app.command("release", rich_help_panel=PANEL)
def release_command(
    job_ids: JobIdsArgument = None,
    array: ArrayOption = None,
    user: UserOption = None,
    state: StateOption = None,
    name: NameOption = None,
) -> None:
    """Let held jobs be scheduled again (ids, an array or a filter)."""
    _act("release", "released", job_ids, array, user, state, name)


# ---------------------------------------------------------------------- logs


def _last_lines(client: AgentClient, job_id: int, stream: str, lines: int) -> str:
    """The last ``lines`` lines, fetching more bytes until there are enough (the API
    counts bytes, people count lines)."""
    from htcsim.agent.client.http import LOG_MAX_BYTES

    size = 65536
    while True:
        text = client.log(job_id, stream, size)
        if text.count("\n") > lines or len(text.encode()) < size or size >= LOG_MAX_BYTES:
            kept = text.splitlines(keepends=True)[-lines:] if lines else []
            return "".join(kept)
        size *= 4


@jobs_app.command("logs", rich_help_panel=PANEL)
def logs_command(
    job_id: Annotated[int, typer.Argument(help="The job.")],
    stderr: Annotated[bool, typer.Option("--stderr", help="Its stderr, not stdout.")] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", "-n", min=0, help="Only the last N lines.")
    ] = None,
) -> None:
    """The output of a job, read through the agent (works from another machine)."""
    from htcsim.agent.client.http import LOG_MAX_BYTES

    stream = "stderr" if stderr else "stdout"
    with _agent() as client:
        if tail is None:
            text = client.log(job_id, stream, LOG_MAX_BYTES)
            if len(text.encode()) >= LOG_MAX_BYTES:
                err_console.print(f"(only the last {LOG_MAX_BYTES >> 20} MiB)")
        else:
            text = _last_lines(client, job_id, stream, tail)
    sys.stdout.write(text)
    sys.stdout.flush()
