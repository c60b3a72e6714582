"""Start-up of the ``htcsim`` command as a user's shell loop would pay it, one process per call.

A user who loops over ``htcsim submit`` pays the interpreter's start and every
import the command line makes before the command runs; the command modules
import the library inside each command, so a client command loads neither
numpy nor polars nor the simulator. Measured: wall seconds per process for a
client command's help, the version, and, for comparison, the help of
``simulate`` (which, too, loads nothing heavy until it runs).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

COMMANDS = [
    ["--version"],
    ["submit", "--help"],
    ["queue", "--help"],
    ["simulate", "--help"],
]


def _start(args: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "htcsim", *args], check=True, capture_output=True, timeout=120
    )
    return time.perf_counter() - began


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_command_start(benchmark, args: list[str]) -> None:
    benchmark.pedantic(_start, args=(args,), rounds=10, iterations=1, warmup_rounds=1)
    best = benchmark.stats.stats.min
    benchmark.extra_info["starts_per_second"] = round(1 / best, 1)
    print(f"\nhtcsim {' '.join(args)}: {best * 1000:.0f} ms per process")


def test_python_start_alone(benchmark) -> None:
    """The floor: an interpreter that imports nothing of htcsim."""
    benchmark.pedantic(
        lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
        rounds=10,
        iterations=1,
        warmup_rounds=1,
    )
    print(f"\npython -c pass: {benchmark.stats.stats.min * 1000:.0f} ms per process")


def test_submit_to_a_running_agent(benchmark, tmp_path) -> None:
    """``htcsim submit -- /bin/true`` against a real agent, one process per call (the
    client finds it through HTCSIM_URL and HTCSIM_TOKEN); plus one call's max RSS."""
    import os
    import re

    from tests.agent_harness import running_agent

    with running_agent(tmp_path, nodes=1, cores_per_node=2) as agent:
        env = agent.env()
        args = [sys.executable, "-m", "htcsim", "submit", "--", "/bin/true"]

        def submit() -> None:
            subprocess.run(args, check=True, capture_output=True, env=env, cwd=tmp_path)

        benchmark.pedantic(submit, rounds=10, iterations=1, warmup_rounds=1)
        timed = subprocess.run(
            ["/usr/bin/time", "-v", *args], capture_output=True, text=True, env=env, cwd=tmp_path
        )
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timed.stderr)
    best = benchmark.stats.stats.min
    benchmark.extra_info["max_rss_kib"] = int(rss.group(1)) if rss else None
    print(
        f"\nhtcsim submit -- /bin/true: {best * 1000:.0f} ms per process, max RSS "
        f"{int(rss.group(1)) // 1024 if rss else '?'} MiB (/usr/bin/time -v, one call)"
        + ("" if os.path.exists("/usr/bin/time") else "; no /usr/bin/time")
    )
