"""Shared pytest fixtures."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trace_dir() -> Path:
    """The folder of the real SWF logs, from HTCSIM_TRACE_DIR.

    Fails rather than skips when it is missing: the real-trace tests are the ones that
    check the loader against published numbers, and a silent skip would hide that
    they never ran.
    """
    env = os.environ.get("HTCSIM_TRACE_DIR")
    if not env or not Path(env).is_dir():
        pytest.fail("set HTCSIM_TRACE_DIR to the folder of the SWF logs (e.g. ../shared/traces)")
    return Path(env)


KTH = "KTH-SP2-1996-2.1-cln"
EXCERPT_JOBS = 5000


@pytest.fixture(scope="session")
def kth_excerpt(trace_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 5,000 jobs of the KTH log, derived here from the archive's full
    log (its header kept, a note added on top), so that the suite needs only
    files the archive publishes: a short real log for tests that replay one
    through the whole command."""
    source = trace_dir / f"{KTH}.swf.gz"
    if not source.exists():
        pytest.fail(f"{source} is missing; HTCSIM_TRACE_DIR must hold the archive's KTH log")
    header: list[str] = []
    jobs: list[str] = []
    with gzip.open(source, "rt") as lines:
        for line in lines:
            if line.startswith(";"):
                header.append(line)
            elif line.strip():
                jobs.append(line)
                if len(jobs) == EXCERPT_JOBS:
                    break
    note = [
        f"; Note: an excerpt of {KTH}.swf: its first {EXCERPT_JOBS} job records\n",
        ";       derived by the test suite from the archive's full log; the header below is\n",
        ";       the full log's: MaxJobs, MaxRecords and EndTime describe the full log\n",
    ]
    out = tmp_path_factory.mktemp("excerpt") / f"{KTH}.first{EXCERPT_JOBS}.swf.gz"
    with gzip.open(out, "wt") as sink:
        sink.writelines(note + header + jobs)
    return out


@pytest.fixture(scope="session", autouse=True)
def _private_user_config(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """No test reads or writes the real user's client settings: an agent's first
    start writes ``$XDG_CONFIG_HOME/htcsim/client.toml`` when there is none, and
    the client reads it; the session points XDG_CONFIG_HOME (inherited by every
    agent and command a test starts) at a folder of its own."""
    before = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg-config"))
    yield
    if before is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = before


@pytest.fixture(scope="session", autouse=True)
def _stop_leftover_shepherds(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Agents outlive nothing: at the end of the session, stop every job
    shepherd (and its jobs) that a test's agent left under the session's
    temporary folder (an agent leaves them running by design)."""
    yield
    import psutil

    from tests.agent_harness import cgroup_mounts, kill_jobs_of, remove_cgroups_of

    base = str(tmp_path_factory.getbasetemp().resolve())
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"] or []
        if "htcsim.agent.executors.local.shepherd" in cmdline and cmdline[-2].startswith(base):
            kill_jobs_of(Path(cmdline[-2]).parent)
    # the cgroups of the session's shepherds, all stopped now (a shepherd that
    # was killed leaves its empty folders; the next one on its run dir would
    # sweep them, but a test's run dir has no next one)
    mounts = cgroup_mounts()
    if mounts:
        for lock in Path(base).rglob("shepherd.lock"):
            remove_cgroups_of(str(lock.parent.resolve()), list(mounts))
