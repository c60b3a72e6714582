"""The layers hold: import contracts, and a command line that loads only what a command uses.

The contracts themselves (which layer may import which, no cycles, a light
client) are stated in ``pyproject.toml`` and checked by import-linter; this
test runs that check, so the suite fails on an upward import as CI does. The
start-up checks run a fresh interpreter, because what one test imported would
hide what the command line itself loads; those of the client commands run the
real ``htcsim`` process against a real agent with ``-X importtime``, which
names every module the process imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_harness import AgentProcess, running_agent

ROOT = Path(__file__).resolve().parents[1]

HEAVY = (
    "numpy",
    "polars",
    "simpy",
    "matplotlib",
    "scipy",
    "fastapi",
    "uvicorn",
    "distributed",
    "httpx",
    "htcsim.kernel",
    "htcsim.sim",
    "htcsim.workload.swf",
    "htcsim.slurm",
    "htcsim.agent.engine",
    "htcsim.agent.store",
    "htcsim.agent.api",
    "htcsim.agent.config",
)
"""What no command may load before it runs: the simulator's and the agent's machinery,
and httpx (imported when a client command makes its AgentClient)."""

LIGHT_IMPORT = (*HEAVY, "pydantic", "psutil")
"""What ``import htcsim.cli.app`` must not load either."""


def _loaded_after(code: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """Modules of ``heavy`` (or below them) a fresh interpreter holds after running ``code``."""
    probe = (
        f"import sys\n{code}\n"
        "import json\n"
        f"heavy = {heavy!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        "if any(m == h or m.startswith(h + '.') for h in heavy))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_layer_contracts_hold() -> None:
    """import-linter finds every contract of pyproject.toml kept (layers, siblings, no cycles)."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.fail(f"no import-linter beside {sys.executable}: pip install -e '.[test]'")
    run = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_the_command_line_loads_no_library_before_a_command_runs() -> None:
    """``htcsim submit`` and friends start without numpy, polars, the simulator or the agent."""
    assert _loaded_after("import htcsim.cli.app", LIGHT_IMPORT) == []


def test_a_client_command_stays_light_when_it_runs() -> None:
    """Running a client command's help (as a user's loop of ``htcsim submit`` would start)."""
    code = (
        "from typer.testing import CliRunner\n"
        "from htcsim.cli.app import app\n"
        "result = CliRunner().invoke(app, ['submit', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
    )
    assert _loaded_after(code) == []


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    """A copy of the package with one upward import (the domain importing the CLI) breaks the
    layers contract: the check can fail."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "htcsim", copy / "htcsim", ignore=shutil.ignore_patterns("*.so"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    model = copy / "htcsim" / "model.py"
    model.write_text(model.read_text() + "\nimport htcsim.cli._console  # noqa: E402\n")
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [str(lint), "--no-cache"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy)},
    )
    assert run.returncode != 0
    assert "htcsim.model -> htcsim.cli._console" in run.stdout


# ---------------------------------------------------------------------- the real process

CLIENT_FORBIDDEN = (
    *HEAVY,
    "pydantic",
    "starlette",
    "pyarrow",
    "dask",
    "psutil",
    "htcsim.workload",
    "htcsim.schedule",
    "htcsim.metrics",
    "htcsim.agent.executors",
    "htcsim.agent.server",
    "htcsim.agent.shadow",
    "htcsim.cli._process",
    "htcsim.cli.simulate",
    "htcsim.cli.plan",
    "htcsim.cli.tune",
    "htcsim.cli.report",
    "htcsim.cli.agent",
    "htcsim.cli.generate",
    "htcsim.cli.imports",
    "htcsim.cli.export",
    "htcsim.cli.policy",
    "htcsim.cli.traces",
)
"""What a client command's process must not import: the simulator, the agent's
machinery, numpy and polars, pydantic (typer 0.29 imports it to coerce every
parameter, which is why pyproject.toml keeps typer below 0.29), httpx (the client
speaks through http.client), and the other command groups' modules."""


def _imported_by(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[str, set[str]]:
    """Run ``htcsim ARGS`` as a process with ``-X importtime``: its stdout and every
    module it imported. Fails on a non-zero exit."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "htcsim", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    errors = [line for line in run.stderr.splitlines() if not line.startswith("import time:")]
    assert run.returncode == 0, (args, run.stdout, "\n".join(errors))
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in run.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "htcsim" in modules  # the probe reads what it should
    return run.stdout, modules


def _within(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def _typer_hint() -> str:
    import typer

    return (
        f" (typer {getattr(typer, '__version__', '?')} is installed: pyproject.toml wants "
        "typer<0.29, whose parameters need no pydantic; pip install -e .)"
    )


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with running_agent(tmp_path_factory.mktemp("startup-agent"), nodes=1, cores_per_node=2) as a:
        yield a


def test_version_loads_neither_typer_nor_rich() -> None:
    """``htcsim --version`` answers before any command line is built."""
    out, modules = _imported_by(["--version"])
    from htcsim.cli.registry import version_line

    assert out == version_line() + "\n"
    assert _within(modules, ("typer", "rich", "htcsim.cli.registry", "htcsim.agent")) == []


def test_the_entry_point_is_the_one_that_builds_only_the_command_asked() -> None:
    """The installed ``htcsim`` script runs ``htcsim.cli.main:main`` (as ``python -m``)."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["htcsim"] == "htcsim.cli.main:main"


def test_help_lists_every_command_without_the_heavy_libraries() -> None:
    """``htcsim --help`` lists every command from the static index: it imports no command
    module, let alone pydantic, httpx or the simulator."""
    from htcsim.cli.registry import COMMANDS

    out, modules = _imported_by(["--help"], {**os.environ, "COLUMNS": "200"})
    for names, _ in COMMANDS:
        for name in names:
            assert f" {name} " in out, name
    assert _within(modules, (*HEAVY, "pydantic")) == [], _typer_hint()
    command_modules = _within(modules, ("htcsim.cli", "htcsim.agent.client"))
    assert set(command_modules) <= {
        "htcsim.cli",
        "htcsim.cli.main",
        "htcsim.cli.registry",
        "htcsim.cli.help_index",
        "htcsim.agent.client",
        "htcsim.agent.client.commands",
        "htcsim.agent.client._output",  # the panel's name
    }, command_modules


def _current_index() -> list[tuple[str, str | None, str]]:
    """What the commands themselves say: name, panel, first paragraph of help, in the
    order typer lists them."""
    import typer.main

    from htcsim.cli.registry import build_app

    group: Any = typer.main.get_command(build_app())
    rows: list[tuple[str, str | None, str]] = []
    for name in group.list_commands(None):
        command = group.commands[name]
        panel = getattr(command, "rich_help_panel", None)
        summary = (command.help or "").split("\n\n")[0].strip()
        rows.append((name, panel if isinstance(panel, str) else None, summary))
    return rows


def test_the_help_index_says_what_the_commands_say() -> None:
    """The static top-level help is the one the whole app renders, character for
    character (at two widths); on a change of a command's help, paste the printed rows
    into ``htcsim/cli/help_index.py``."""
    from typer.testing import CliRunner

    from htcsim.cli.help_index import INDEX
    from htcsim.cli.registry import build_app

    current = _current_index()
    rows = "\n".join(f"    {row!r}," for row in current)
    assert list(INDEX) == current, f"INDEX should read:\n{rows}"
    for columns in ("80", "200"):
        env = {"COLUMNS": columns, "TERM": "dumb", "NO_COLOR": "1"}
        listed = CliRunner().invoke(build_app(["--help"]), ["--help"], env=env)
        built = CliRunner().invoke(build_app(), ["--help"], env=env)
        assert listed.exit_code == built.exit_code == 0
        assert listed.output == built.output


def test_a_command_help_shows_the_defaults() -> None:
    out, modules = _imported_by(["submit", "--help"], {**os.environ, "COLUMNS": "200"})
    assert "[default: 1]" in out and "[default: 1h]" in out
    assert _within(modules, CLIENT_FORBIDDEN) == [], _typer_hint()


def test_client_commands_start_light_against_a_real_agent(
    agent: AgentProcess, tmp_path: Path
) -> None:
    """Each client command runs for real and imports nothing of CLIENT_FORBIDDEN; ``submit``
    prints its id without loading rich at all."""
    env = agent.env()

    def run(*args: str) -> tuple[str, set[str]]:
        out, modules = _imported_by(list(args), env, cwd=tmp_path)  # the jobs' logs go there
        assert _within(modules, CLIENT_FORBIDDEN) == [], (args, _typer_hint())
        return out, modules

    # the first job takes both cores, so the second stays pending (it can be held)
    out, modules = run("submit", "--cores", "2", "--", "sleep", "300")
    first = int(out)
    assert _within(modules, ("rich",)) == []
    second = int(run("submit", "--cores", "2", "--", "/bin/true")[0])
    assert run("hold", str(second))[0].strip() == f"held {second}"
    assert run("release", str(second))[0].strip() == f"released {second}"
    queue = run("queue")[0]
    assert str(first) in queue.split() and str(second) in queue.split()
    assert "sleep" in run("show", str(first))[0]
    assert "pending" in run("history", str(second))[0]
    assert "CORES FREE" in run("nodes")[0]
    assert run("cancel", str(first), str(second))[0].strip() == f"cancelled {first}-{second}"


def test_each_registry_entry_registers_exactly_its_names() -> None:
    """The registry's names (what routes a command line to a module) match what each
    module registers, so a command is never built alone without its module."""
    import typer.main

    from htcsim.cli.registry import COMMANDS, build_app

    seen: list[str] = []
    for names, _ in COMMANDS:
        for name in names:
            group = typer.main.get_command(build_app([name]))
            assert sorted(group.commands) == sorted(names), (name, sorted(group.commands))
        seen.extend(names)
    everything = typer.main.get_command(build_app())
    assert sorted(everything.commands) == sorted(seen)
    assert len(seen) == len(set(seen))


def test_the_command_line_names_its_command() -> None:
    """The first word that is not an option, unless the top level's --help comes first."""
    from htcsim.cli.registry import command_named

    assert command_named(["--version", "submit", "--", "queue"]) == "submit"
    assert command_named(["submit", "--help"]) == "submit"
    assert command_named(["--help", "submit"]) is None
    assert command_named([]) is None


def test_a_mistyped_command_still_gets_a_suggestion() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "htcsim", "sumbit"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert run.returncode == 2
    assert "Did you mean 'submit'?" in run.stderr
