"""The layers hold: import contracts, and a command line that loads only what a command uses.

The contracts themselves (which layer may import which, no cycles, a light
client) are stated in ``pyproject.toml`` and checked by import-linter; this
test runs that check, so the suite fails on an upward import as CI does. The
start-up checks run a fresh interpreter, because what one test imported would
hide what the command line itself loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    "htcsim.agent.engine",
    "htcsim.agent.store",
    "htcsim.agent.api",
    "htcsim.agent.config",
)
"""What no command may load before it runs: the simulator's and the agent's machinery,
and httpx (imported when a client command makes its AgentClient)."""

LIGHT_IMPORT = (*HEAVY, "pydantic", "psutil")
"""What ``import htcsim.cli.app`` must not load either. pydantic is apart because typer
(0.29) itself imports it when it parses a command's parameters, so a command's help
loads it; the command line's own modules do not."""


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
