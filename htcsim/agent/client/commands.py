"""``htcsim submit``, ``queue``, ``show``, ``cancel``, ``hold``, ``release``, ``history``,
``logs``, ``nodes`` and ``workflow``: the user's side of the live agent, as Slurm's
sbatch/squeue/scontrol/scancel/sinfo are.

Why the commands talk only to the REST API (``htcsim.agent.client.http``), never to
the store: the agent may run on another machine or as another user, and its
answers already apply the rules (who sees which job, what an admin may do).
Why every failure is one line with exit code 2: people run these in scripts
and read them in a terminal; a traceback helps neither, the agent's own
sentence ("HTTP 422: cwd: must be an absolute path") does. Nothing heavy is
imported at module level, so the commands stay quick to start; the parsers
of memory sizes and durations (shared with workflow files, so "8G" means the
same everywhere) are imported when ``submit`` runs.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal as signal_module
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from htcsim.agent.client.http import LOG_MAX_BYTES, AgentClient, ClientError

PANEL = "Live agent (client)"
client_app = typer.Typer(add_completion=False)
"""Commands merged into the top-level ``htcsim`` app (``app.add_typer(client_app)``)."""
nodes_app = typer.Typer(
    help="Node states and free resources; drain or resume a node (admin).",
    invoke_without_command=True,
)
workflow_app = typer.Typer(help="Submit a pipeline file and follow it.", no_args_is_help=True)
client_app.add_typer(nodes_app, name="nodes", rich_help_panel=PANEL)
client_app.add_typer(workflow_app, name="workflow", rich_help_panel=PANEL)

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

ACTIVE_STATES = ("pending", "held", "running")
"""What ``queue`` lists without ``--state``: like squeue, ended jobs are left out."""
PASS_THROUGH = {"allow_interspersed_args": False}
"""``submit``'s options end where the job's command starts (as with sbatch), so the
command's own options are never taken for ours; ``--`` makes the boundary explicit."""
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_EXPORTED = frozenset({"HTCSIM_TOKEN"})
_SLURM_LOG_PATTERNS = {"%j": "{id}", "%A": "{array_id}", "%a": "{index}", "%%": "%"}
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


# ---------------------------------------------------------------------- plumbing


def _fail(message: str) -> typer.Exit:
    """One line on stderr, exit code 2 (as ``htcsim agent``'s errors); never wrapped,
    so ``2>&1 | grep`` and people both see the whole sentence."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=2)


@contextmanager
def _agent() -> Iterator[AgentClient]:
    """A client for the agent found in the environment; its errors become ``_fail``."""
    try:
        with AgentClient() as client:
            yield client
    except ClientError as exc:
        raise _fail(str(exc)) from None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


def _table(*headers: str) -> Table:
    """A plain table; cells fold rather than being cut, so nothing is lost in a pipe."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def _print_table(table: Table) -> None:
    """At its natural width when piped (rows stay whole for grep and awk), folded to
    the terminal otherwise."""
    if console.is_terminal:
        console.print(table)
        return
    buffer = io.StringIO()
    Console(file=buffer, width=100_000, highlight=False, color_system=None).print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))


def _split_ids(values: Iterable[str], what: str) -> list[int]:
    """Job ids from repeated options and comma (or Slurm's colon) separated lists."""
    out: list[int] = []
    for value in values:
        for part in re.split(r"[,:]", value):
            if not part.strip():
                continue
            try:
                job_id = int(part)
            except ValueError:
                raise _fail(f"{what}: {part!r} is not a job id") from None
            if job_id < 1:
                raise _fail(f"{what}: {part!r} is not a job id")
            out.append(job_id)
    return out


def _ranges(ids: Sequence[int]) -> str:
    """17,18,19,25 -> "17-19,25": an array's ids in a line of any length."""
    parts: list[str] = []
    start = prev = None
    for job_id in sorted(ids):
        if prev is not None and job_id == prev + 1:
            prev = job_id
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = job_id
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


# ---------------------------------------------------------------------- formatting


def human_duration(seconds: float | None) -> str:
    """ "45s", "2m13s", "1h02m", "3d04h": two units at most, as people read a clock."""
    if seconds is None:
        return "-"
    s = max(int(seconds), 0)
    days, s = divmod(s, 86_400)
    hours, s = divmod(s, 3_600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


def human_time(timestamp: float | None, *, now: float | None = None) -> str:
    """A Unix time in local time; the date is left out when it is today."""
    if timestamp is None:
        return "-"
    when = datetime.fromtimestamp(timestamp)
    today = datetime.fromtimestamp(time.time() if now is None else now).date()
    return when.strftime("%H:%M:%S" if when.date() == today else "%Y-%m-%d %H:%M:%S")


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


def _mib(value: float | None) -> str:
    """MiB as people write it: "512M", "11.8G" (binary units, as --mem reads them)."""
    if not value:
        return "0"
    for unit, size in (("T", 1 << 20), ("G", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f}".removesuffix(".0") + unit
    return f"{value:.1f}".removesuffix(".0") + "M"


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


@client_app.command("submit", context_settings=PASS_THROUGH, rich_help_panel=PANEL)
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
        console.print(f"array {result['array_id']}: jobs {_ranges(result['ids'])}")
    else:
        console.print(str(result["ids"][0]))


# ---------------------------------------------------------------------- queue, show


def _states(values: Sequence[str] | None) -> list[str]:
    """--state values (repeated or comma lists); "all" lifts the filter."""
    states = [s.strip().lower() for v in values or [] for s in v.split(",") if s.strip()]
    if not states:
        return list(ACTIVE_STATES)
    return [] if "all" in states else states


def _own_jobs(client: AgentClient, states: Sequence[str], estimate: bool) -> list[dict[str, Any]]:
    """The jobs of the user the token stands for."""
    return client.jobs(states=states, user=client.whoami()["user"], estimate=estimate)


@client_app.command("queue", rich_help_panel=PANEL)
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
    with _agent() as client:
        if all_users or user is not None:
            jobs = client.jobs(states=states, user=user, estimate=start)
        else:
            jobs = _own_jobs(client, states, start)
    if json_out:
        _print_json(jobs)
        return
    now = time.time()
    headers = ["ID", "NAME", "USER", "STATE", "REASON", "PRIORITY"]
    headers += ["START"] if start else []
    table = _table(*headers, "NODE", "ELAPSED")
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
        table.add_row(*(escape(cell) for cell in row))
    if jobs:
        _print_table(table)
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
        ("pid", str(job.get("pid") or "-")),
        ("exit code", "-" if exit_code is None else str(exit_code)),
        ("requeues", str(job.get("requeues", 0))),
        ("cpu time", human_duration(job.get("cpu_time_s"))),
        ("max rss", _mib(job.get("max_rss_mib")) if job.get("max_rss_mib") is not None else "-"),
        ("stdout", str(job.get("stdout") or "-")),
        ("stderr", str(job.get("stderr") or "-")),
        ("env", ", ".join(sorted(job.get("env") or {})) or "-"),
    ]


@client_app.command("show", rich_help_panel=PANEL)
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
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in _show_rows(job, time.time()):
        table.add_row(label, escape(value))
    _print_table(table)


@client_app.command("history", rich_help_panel=PANEL)
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


def _act(job_ids: Sequence[int], verb: str, done: str) -> None:
    """Apply an action to each job; a refusal is reported and the others still done."""
    failed = False
    with _agent() as client:
        action = getattr(client, verb)
        for job_id in job_ids:
            try:
                action(job_id)
            except ClientError as exc:
                if exc.status is None:  # the agent is gone: no point in going on
                    raise
                err_console.print(
                    f"[bold red]error:[/] job {job_id}: {escape(str(exc))}", soft_wrap=True
                )
                failed = True
                continue
            console.print(f"{done} {job_id}")
    if failed:
        raise typer.Exit(code=2)


JobIdsArgument = Annotated[list[int], typer.Argument(help="Job ids.", show_default=False)]


@client_app.command("cancel", rich_help_panel=PANEL)
def cancel_command(job_ids: JobIdsArgument) -> None:
    """Cancel jobs: pending ones end now, running ones get SIGTERM then SIGKILL."""
    _act(job_ids, "cancel", "cancelled")


@client_app.command("hold", rich_help_panel=PANEL)
def hold_command(job_ids: JobIdsArgument) -> None:
    """Keep pending jobs from starting until released."""
    _act(job_ids, "hold", "held")


@client_app.command("release", rich_help_panel=PANEL)
def release_command(job_ids: JobIdsArgument) -> None:
    """Let held jobs be scheduled again."""
    _act(job_ids, "release", "released")


# ---------------------------------------------------------------------- logs


def _last_lines(client: AgentClient, job_id: int, stream: str, lines: int) -> str:
    """The last ``lines`` lines, fetching more bytes until there are enough (the API
    counts bytes, people count lines)."""
    size = 65536
    while True:
        text = client.log(job_id, stream, size)
        if text.count("\n") > lines or len(text.encode()) < size or size >= LOG_MAX_BYTES:
            kept = text.splitlines(keepends=True)[-lines:] if lines else []
            return "".join(kept)
        size *= 4


@client_app.command("logs", rich_help_panel=PANEL)
def logs_command(
    job_id: Annotated[int, typer.Argument(help="The job.")],
    stderr: Annotated[bool, typer.Option("--stderr", help="Its stderr, not stdout.")] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", "-n", min=0, help="Only the last N lines.")
    ] = None,
) -> None:
    """The output of a job, read through the agent (works from another machine)."""
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


# ---------------------------------------------------------------------- nodes


@nodes_app.callback()
def nodes_command(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Nodes: type, state (idle, mixed, allocated, draining, drained, down; booting
    and off in a cluster manager's pool) and free resources."""
    if ctx.invoked_subcommand is not None:
        return
    with _agent() as client:
        nodes = client.nodes()
    if json_out:
        _print_json(nodes)
        return
    table = _table("NODE", "TYPE", "STATE", "CORES FREE", "MEM FREE", "GPUS FREE", "JOBS")
    for node in nodes:
        cap, free = node["capacity"], node["free"]
        table.add_row(
            escape(str(node["name"])),
            escape(str(node.get("type", ""))),
            str(node["state"]),
            f"{free['cores']}/{cap['cores']}",
            f"{_mib(free['mem_mib'])}/{_mib(cap['mem_mib'])}",
            f"{free.get('gpus', 0)}/{cap.get('gpus', 0)}",
            ",".join(str(j) for j in node.get("jobs", [])) or "-",
        )
    _print_table(table)


def _node_state(client: AgentClient, name: str) -> str:
    """The node's state as ``htcsim nodes`` shows it (idle, draining, drained...): the
    drain and resume routes answer with the kernel's names (up, off), which differ."""
    for node in client.nodes():
        if node["name"] == name:
            return str(node["state"])
    return "?"


NodeArgument = Annotated[str, typer.Argument(help="The node's name (see `htcsim nodes`).")]


@nodes_app.command("drain")
def drain_command(node: NodeArgument) -> None:
    """No new job on NODE; it is drained once its jobs end (admin)."""
    with _agent() as client:
        client.drain(node)
        console.print(f"{node}: {_node_state(client, node)}")


@nodes_app.command("resume")
def resume_command(node: NodeArgument) -> None:
    """Put NODE back in service (admin)."""
    with _agent() as client:
        client.resume(node)
        console.print(f"{node}: {_node_state(client, node)}")


# ---------------------------------------------------------------------- shadow mode


def _seconds(value: float | None) -> str:
    """A wait statistic: tenths of a second under a minute (means are fractions)."""
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 60 else human_duration(value)


@client_app.command("shadow", rich_help_panel=PANEL)
def shadow_command(
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="Differences to list (by job id).", min=0)
    ] = 20,
    json_out: JsonOption = False,
) -> None:
    """Shadow mode: where the candidate policy (agent serve --shadow-policy) would have
    started jobs otherwise than the active one, and its simulated waits."""
    with _agent() as client:
        report = client.shadow(limit)
    if json_out:
        _print_json(report)
        return
    s = report["summary"]
    console.print(
        f"shadow policy {escape(s['policy'])} (active {escape(s['active_policy'] or '?')}): "
        f"{s['jobs_compared']} jobs compared, {s['differences']} started differently",
        soft_wrap=True,
    )
    waits = _table("WAIT", "LIVE", "SHADOW")
    for key in ("mean", "median", "p95"):
        waits.add_row(key, _seconds(s["live_wait_s"][key]), _seconds(s["shadow_wait_s"][key]))
    _print_table(waits)
    horizon = human_time(s["horizon"]) if s["horizon"] is not None else "nothing yet"
    console.print(
        f"started by the shadow only: {s['shadow_only']}, by the live agent only: "
        f"{s['live_only']}; decided up to {horizon} (lag {_seconds(s['lag_s'])})",
        soft_wrap=True,
    )
    if s["error"]:
        err_console.print(f"[bold red]the shadow stopped:[/] {escape(s['error'])}")
    if not report["differences"]:
        return
    table = _table(
        "ID", "LIVE START", "LIVE NODE", "LIVE WAIT", "SHADOW START", "SHADOW NODE", "SHADOW WAIT"
    )
    for job in report["differences"]:
        table.add_row(
            str(job["job_id"]),
            human_time(job["live_start"]),
            escape(job["live_node"]),
            human_duration(job["live_wait_s"]),
            human_time(job["shadow_start"]),
            escape(job["shadow_node"]),
            human_duration(job["shadow_wait_s"]),
        )
    _print_table(table)
    if s["differences"] > len(report["differences"]):
        console.print(f"(the first {len(report['differences'])}; --limit N shows more)")


# ---------------------------------------------------------------------- workflows


@workflow_app.command("submit")
def workflow_submit_command(
    path: Annotated[Path, typer.Argument(help="The pipeline file (TOML).")],
    json_out: JsonOption = False,
) -> None:
    """Submit a pipeline file, all jobs or none; relative cwds are relative to the file."""
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
