"""Single-job submits to a live agent: latency one at a time, throughput from many clients.

Figures go to ``extra_info`` and are printed (run with ``-s``):

- the anchor: SQLite's own WAL commit with ``synchronous=FULL`` (one small
  row, one transaction), on the filesystem of the agent's state directory,
  measured between the agent's rounds: no durable submit can be faster;
- ``POST /jobs`` one after another on one keep-alive connection, p50 and
  p99, with jobs that wait on hold (the submit path alone) and with jobs
  that run at once (``/bin/true`` on free cores: their launches and exits
  share the agent with the submits);
- 32 clients submitting concurrently, each with one request in flight
  (closed loop): accepted submits per second, every one durable (committed)
  before its 201.

The agent is a real process on a real socket (``tests.agent_harness``).
The client is ``benchmarks/submit_load.py``: prebuilt request bytes and a
``Content-Length`` reader, all connections driven from one thread with
``selectors``, so that it takes a few percent of one core (its CPU time is
reported next to the figures) and leaves the machine's two cores to the
agent. The agent's CPU time per request (from ``/proc``) and the load
average are reported too: on a shared machine they say how far the
figures are from what an idle one gives.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.submit_load import closed_loop, connect, request_bytes, roundtrip
from tests.agent_harness import AgentProcess, running_agent

CLIENTS = 32
CONCURRENT_TOTAL = 6000
SEQUENTIAL = 500
ROUNDS = 5


def _anchor(folder: Path, n: int = 200) -> list[float]:
    """Latencies of n one-row transactions, WAL and synchronous=FULL, as the store opens its
    file (``htcsim.agent.store.schema.connect``)."""
    path = folder / "anchor.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, data TEXT)")
    row = "x" * 300  # about a job's row
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (data) VALUES (?)", (row,))
        db.execute("COMMIT")
        out.append(time.perf_counter() - t0)
    db.close()
    return out


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def _body(cwd: Path, hold: bool) -> dict[str, Any]:
    return {"command": ["/bin/true"], "cwd": str(cwd), "hold": hold}


def _held(agent: AgentProcess) -> int:
    with agent.client() as client:
        return int(client.get("/cluster").json()["jobs"]["held"])


def _sequential(benchmark, tmp_path: Path, hold: bool) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "work"
    work.mkdir()
    with running_agent(tmp_path, nodes=1, cores_per_node=2, sample_interval_s=60.0) as agent:
        request = request_bytes(agent.url, agent.token, "/jobs", _body(work, hold), {})
        sock = connect(agent.url)
        for _ in range(100):  # warm up: connections, caches, the kernel's arrays
            assert roundtrip(sock, request).status == 201
        rounds: list[list[float]] = []
        anchors: list[list[float]] = []
        cpu: list[float] = []
        loads = [os.getloadavg()[0]]

        def anchor() -> None:  # the same filesystem, just before each round (not timed)
            anchors.append(_anchor(agent.state_dir))

        def one_round() -> None:
            latencies = []
            cpu0 = _cpu_s(agent.proc.pid)
            for _ in range(SEQUENTIAL):
                t0 = time.perf_counter()
                answer = roundtrip(sock, request)
                latencies.append(time.perf_counter() - t0)
                assert answer.status == 201, answer.body
            cpu.append((_cpu_s(agent.proc.pid) - cpu0) / SEQUENTIAL)
            rounds.append(latencies)

        benchmark.pedantic(one_round, setup=anchor, rounds=ROUNDS, iterations=1)
        sock.close()
        loads.append(os.getloadavg()[0])
    p50s = [float(np.percentile(r, 50)) for r in rounds]
    p99s = [float(np.percentile(r, 99)) for r in rounds]
    anchor50 = [float(np.percentile(a, 50)) for a in anchors]
    kind = "held" if hold else "runs"
    info = {
        "jobs": kind,
        "p50_ms_min": _ms(min(p50s)),
        "p50_ms_median": _ms(statistics.median(p50s)),
        "p99_ms_min": _ms(min(p99s)),
        "p99_ms_median": _ms(statistics.median(p99s)),
        "anchor_commit_p50_ms_min": _ms(min(anchor50)),
        "anchor_commit_p50_ms_median": _ms(statistics.median(anchor50)),
        "agent_cpu_ms_per_submit_median": _ms(statistics.median(cpu)),
        "load_average": [round(x, 2) for x in loads],
    }
    benchmark.extra_info.update(info)
    print(
        f"\nsequential POST /jobs ({kind}), {len(rounds)} rounds of {SEQUENTIAL}: "
        f"p50 {info['p50_ms_min']}-{info['p50_ms_median']} ms (min-median of rounds), "
        f"p99 {info['p99_ms_min']}-{info['p99_ms_median']} ms; SQLite WAL commit "
        f"(synchronous=FULL) p50 {info['anchor_commit_p50_ms_min']}-"
        f"{info['anchor_commit_p50_ms_median']} ms; agent CPU "
        f"{info['agent_cpu_ms_per_submit_median']} ms per submit; load {info['load_average']}"
    )


def test_sequential_submit_latency_held(benchmark, tmp_path: Path) -> None:
    """One client, one keep-alive connection, jobs on hold: the submit path alone."""
    _sequential(benchmark, tmp_path, hold=True)


def test_sequential_submit_latency_running(benchmark, tmp_path: Path) -> None:
    """The same with jobs that start at once (/bin/true on the node's 2 free slots)."""
    _sequential(benchmark, tmp_path, hold=False)


def test_concurrent_submits(benchmark, tmp_path: Path) -> None:
    """32 clients, each with one submit in flight; every 201 is a committed job."""
    work = tmp_path / "work"
    work.mkdir()
    with running_agent(tmp_path, nodes=1, cores_per_node=2, sample_interval_s=60.0) as agent:
        request = request_bytes(agent.url, agent.token, "/jobs", _body(work, True), {})
        closed_loop(agent.url, request, CLIENTS, 500)  # warm up
        results = []
        cpu: list[float] = []
        loads = [os.getloadavg()[0]]

        def one_round() -> None:
            cpu0 = _cpu_s(agent.proc.pid)
            result = closed_loop(agent.url, request, CLIENTS, CONCURRENT_TOTAL)
            cpu.append((_cpu_s(agent.proc.pid) - cpu0) / CONCURRENT_TOTAL)
            assert result.statuses == {201: CONCURRENT_TOTAL}, result.statuses
            results.append(result)

        benchmark.pedantic(one_round, rounds=3, iterations=1)
        loads.append(os.getloadavg()[0])
        answered = {i for r in results for i in r.ids}
        done = len(results)  # 3 when timed, 1 under --benchmark-disable
        assert len(answered) == done * CONCURRENT_TOTAL  # every answer a distinct job
        assert _held(agent) == done * CONCURRENT_TOTAL + 500  # and every one stored
        anchor = float(np.percentile(_anchor(agent.state_dir), 50))
    rates = [r.per_second for r in results]
    client_share = [r.client_cpu_s / r.elapsed_s for r in results]
    info = {
        "clients": CLIENTS,
        "submits_per_second_max": round(max(rates)),
        "submits_per_second_median": round(statistics.median(rates)),
        "agent_cpu_ms_per_submit_median": _ms(statistics.median(cpu)),
        "client_cpu_share_of_one_core_max": round(max(client_share), 3),
        "anchor_commit_p50_ms": _ms(anchor),
        "load_average": [round(x, 2) for x in loads],
    }
    benchmark.extra_info.update(info)
    print(
        f"\n{CLIENTS} concurrent clients, {len(results)} rounds of {CONCURRENT_TOTAL} "
        f"single-job submits: "
        f"{info['submits_per_second_max']:,} / {info['submits_per_second_median']:,} submits/s "
        f"(max / median), each durable before its 201; agent CPU "
        f"{info['agent_cpu_ms_per_submit_median']} ms per submit; the client used at most "
        f"{info['client_cpu_share_of_one_core_max']:.0%} of one core; SQLite WAL commit p50 "
        f"{info['anchor_commit_p50_ms']} ms; load {info['load_average']}"
    )
