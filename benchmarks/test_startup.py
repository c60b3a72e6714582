"""Start-up of the ``htcsim`` command as a user's shell loop pays it, one process per call.

A user who loops over ``htcsim submit`` pays the interpreter's start and every
import the command line makes before the command runs. ``htcsim --version``
is answered before typer loads, any other command line builds only the
command it names, and the client commands reach the agent through
``http.client`` without numpy, polars, pydantic or the simulator
(``tests/test_layout.py`` checks what each imports). Measured: the whole
process, as ``/usr/bin/time -f %e,%M`` sees it (wall seconds, max RSS) and
as a wall clock around it, min of N runs, for ``--version``, ``--help``,
``submit -- /bin/true`` and ``queue`` against a real agent, the help of
three commands, and the bare interpreter for the floor. The figures are in
each benchmark's ``extra_info`` (``wall_ms_min``, ``time_e_s_min``,
``max_rss_mib``); on a shared machine, read the minimum.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_harness import AgentProcess, running_agent

ROUNDS = 10

HTCSIM = [sys.executable, "-c", "import sys; from htcsim.cli.main import main; sys.exit(main())"]
"""What the installed ``htcsim`` script runs (``[project.scripts]``), whatever script an
older install left in the environment."""

TIME = shutil.which("time", path="/usr/bin")


def _measure(
    benchmark, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> None:
    """Run ``args`` ROUNDS times (one warm-up) under ``/usr/bin/time -f %e,%M``; record
    the minimum wall time (ours and time's) and the largest max RSS."""
    walls: list[float] = []
    elapsed: list[float] = []
    rss_kib: list[int] = []
    command = [TIME, "-f", "%e,%M", *args] if TIME else args

    def once() -> None:
        began = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
        walls.append(time.perf_counter() - began)
        assert run.returncode == 0, run.stderr[-2000:]
        if TIME:
            e, m = run.stderr.strip().splitlines()[-1].split(",")
            elapsed.append(float(e))
            rss_kib.append(int(m))

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    timed = walls[1:] or walls  # the first run is the warm-up; untimed, there is one run
    best = min(timed)
    benchmark.extra_info["wall_ms_min"] = round(best * 1000, 1)
    benchmark.extra_info["starts_per_second"] = round(1 / best, 1)
    if TIME:
        benchmark.extra_info["time_e_s_min"] = min(elapsed[1:] or elapsed)
        benchmark.extra_info["max_rss_mib"] = round(max(rss_kib) / 1024, 1)
    label = " ".join(args[3:] if args[:3] == HTCSIM else args)
    print(
        f"\n{label}: {best * 1000:.0f} ms per process (min of {len(timed)})"
        + (
            f", /usr/bin/time %e min {min(elapsed[1:] or elapsed):.2f} s, max RSS "
            f"{max(rss_kib) / 1024:.0f} MiB"
            if TIME
            else "; no /usr/bin/time"
        )
    )


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with running_agent(tmp_path_factory.mktemp("startup"), nodes=1, cores_per_node=2) as a:
        yield a


@pytest.mark.parametrize(
    "args",
    [["--version"], ["--help"], ["submit", "--help"], ["queue", "--help"], ["simulate", "--help"]],
    ids=lambda a: " ".join(a),
)
def test_command_start(benchmark, args: list[str]) -> None:
    """No agent needed: the version, the top-level help (every command listed), and the
    help of two client commands and of ``simulate`` (which, too, loads no library)."""
    _measure(benchmark, [*HTCSIM, *args], {**os.environ, "COLUMNS": "100"})


def test_submit_to_a_running_agent(benchmark, agent: AgentProcess, tmp_path: Path) -> None:
    """``htcsim submit -- /bin/true``: parse, one POST, print the id (the client finds the
    agent through HTCSIM_URL and HTCSIM_TOKEN)."""
    _measure(benchmark, [*HTCSIM, "submit", "--", "/bin/true"], agent.env(), cwd=tmp_path)


def test_queue_of_a_running_agent(benchmark, agent: AgentProcess) -> None:
    """``htcsim queue --state all``: whoami, the jobs (the submit benchmark's), a table."""
    _measure(benchmark, [*HTCSIM, "queue", "--state", "all"], agent.env())


def test_python_start_alone(benchmark) -> None:
    """The floor: an interpreter that imports nothing of htcsim."""
    _measure(benchmark, [sys.executable, "-c", "pass"])
