"""A synthetic HTC workload at scale, end to end in its own process.

1,000,000 single-core jobs from 1,000 users (the HTC generator: Poisson
arrivals, log-normal run times, Zipf users, bags of tasks, load 0.9) on
2,000 heterogeneous nodes (three node types, 64,000 cores), under
multifactor priority + fairshare + EASY. Generation, the replay and the
metrics are inside the measured time; peak memory is the child's maximum
resident set size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SCRIPT = """
import json, sys
from htcsim.cluster import Cluster, NodeType
from htcsim.metrics import summarize
from htcsim.policy import Policy
from htcsim.sim import simulate
from htcsim.workload.htc import generate_htc

workload = generate_htc(1_000_000, 2_000, 32, seed=1, n_users=1_000)
cluster = Cluster((
    NodeType("thin", 1_200, 32, mem_mib=128_000),
    NodeType("fat", 400, 48, mem_mib=512_000),
    NodeType("gpu", 400, 16, mem_mib=256_000, gpus=4),
))
policy = Policy(order="multifactor", priority_weight_fairshare=10_000.0)
result = simulate(workload, policy, cluster=cluster)
summary = summarize(result)
json.dump({"replay_s": result.replay_seconds, "started": int(summary["n_started"]),
           "mean_wait_s": float(summary["mean_wait_s"])}, sys.stdout)
"""


def test_htc_million_jobs_thousand_users_2000_nodes(benchmark) -> None:
    outputs: list[dict[str, float]] = []
    peaks: list[int] = []

    def once() -> None:
        proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out = proc.stdout.read()  # type: ignore[union-attr]
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise RuntimeError(proc.stderr.read().decode())  # type: ignore[union-attr]
        outputs.append(json.loads(out))
        peaks.append(usage.ru_maxrss // 1024)

    began = time.perf_counter()
    benchmark.pedantic(once, rounds=1, iterations=1)
    assert outputs[0]["started"] == 1_000_000
    benchmark.extra_info["wall_s"] = round(time.perf_counter() - began, 2)
    benchmark.extra_info["replay_s"] = round(outputs[0]["replay_s"], 2)
    benchmark.extra_info["peak_rss_mib"] = max(peaks)
    print(
        f"\nHTC 1M jobs / 1,000 users / 2,000 nodes: {benchmark.stats.stats.min:.1f} s "
        f"end to end (replay {outputs[0]['replay_s']:.1f} s), peak {max(peaks)} MiB"
    )
