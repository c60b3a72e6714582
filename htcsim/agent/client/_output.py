"""What the client commands share: how they print and how they fail.

Why every failure is one line with exit code 2: people run these commands in
scripts and read them in a terminal; a traceback helps neither, the agent's
own sentence ("HTTP 422: cwd: must be an absolute path") does. Tables print at
their natural width when piped, so rows stay whole for grep and awk; ``--json``
prints what the agent answered, for scripts. Durations, times and memory sizes
are written as people read them ("2m13s", "14:02:11", "11.8G"), job ids as
ranges ("17-19,25").
"""

from __future__ import annotations

import io
import json
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # rich is imported when something is printed through it, the HTTP client
    # when a command calls the agent: ``htcsim submit --help`` needs neither
    from rich.console import Console
    from rich.table import Table

    from htcsim.agent.client.http import AgentClient

PANEL = "Live agent (client)"
"""The help panel that lists the client commands in ``htcsim --help``."""

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


class _LazyConsole:
    """A rich Console made on first use: ``htcsim submit`` prints one plain line
    (``say``) and never pays for importing rich; a table or an error loads it."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def _get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False)
        return self._console

    @property
    def is_terminal(self) -> bool:
        return self._get().is_terminal

    def print(self, *objects: Any, **options: Any) -> None:
        """As ``rich.console.Console.print`` (markup, soft_wrap...)."""
        self._get().print(*objects, **options)


console = _LazyConsole(stderr=False)
err_console = _LazyConsole(stderr=True)


# ---------------------------------------------------------------------- plumbing


def say(line: str) -> None:
    """One plain line on stdout (an id, ``released 17-19``): no markup, never wrapped,
    so a script reads it whole; nothing of rich is loaded for it."""
    typer.echo(line)


def escape(text: str) -> str:
    """``text`` with rich markup made literal (a job's name may hold ``[bold]``)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _fail(message: str) -> typer.Exit:
    """One line on stderr, exit code 2 (as ``htcsim agent``'s errors); never wrapped,
    so ``2>&1 | grep`` and people both see the whole sentence."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=2)


@contextmanager
def _agent() -> Iterator[AgentClient]:
    """A client for the agent found in the environment; its errors become ``_fail``."""
    from htcsim.agent.client.http import AgentClient, ClientError

    try:
        with AgentClient() as client:
            yield client
    except ClientError as exc:
        raise _fail(str(exc)) from None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


def _table(*headers: str) -> Table:
    """A plain table; cells fold rather than being cut, so nothing is lost in a pipe."""
    from rich.table import Table

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
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=100_000, highlight=False, color_system=None).print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))


RICH_ROWS = 500
"""Longer tables skip rich's layout (it measures every cell: seconds for 10,000 jobs)."""


def _print_rows(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table of plain-text cells (no markup): rich's on a terminal when it is
    short; otherwise aligned columns written directly, as ``_print_table`` lays
    them out when piped (two spaces apart, trailing blanks cut), in a fraction
    of the time. A long listing on a terminal is not folded to its width."""
    if console.is_terminal and len(rows) <= RICH_ROWS:
        table = _table(*headers)
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
        return
    from rich.cells import cell_len

    cells = [headers, *rows]
    sizes = [[len(cell) if cell.isascii() else cell_len(cell) for cell in row] for row in cells]
    widths = [max(column) for column in zip(*sizes, strict=True)]
    lines = []
    for row, row_sizes in zip(cells, sizes, strict=True):
        line = "  ".join(
            cell + " " * (w - n) for cell, n, w in zip(row, row_sizes, widths, strict=True)
        )
        lines.append(line.rstrip() + "\n")
    sys.stdout.write("".join(lines))


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
    today = _day_of(time.time() if now is None else now)
    return when.strftime("%H:%M:%S" if when.date() == today else "%Y-%m-%d %H:%M:%S")


@lru_cache(maxsize=8)
def _day_of(timestamp: float) -> date:
    """The local date of a time (a table of 10,000 rows asks it 10,000 times of one ``now``)."""
    return datetime.fromtimestamp(timestamp).date()


def _mib(value: float | None) -> str:
    """MiB as people write it: "512M", "11.8G" (binary units, as --mem reads them)."""
    if not value:
        return "0"
    for unit, size in (("T", 1 << 20), ("G", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f}".removesuffix(".0") + unit
    return f"{value:.1f}".removesuffix(".0") + "M"
