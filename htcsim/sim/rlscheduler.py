"""The conventions of RLScheduler's simulator (Zhang et al., SC20, Table V).

Loading, the heuristic scores and the evaluation windows exactly as the
authors computed them (see ``experiments/rlscheduler-table5/PROTOCOL.md``):

* size = max(allocated, requested processors); a requested time of -1 takes
  the raw run time (before the next fix); run time 0: the job is dropped;
  a negative run time becomes 10 s;
* the heuristics pick the lowest score; WFP3 and UNICEP use the "wait" of
  the authors' code, which for a queued job is -1 - submit, so every score
  is static; submit times are the log's absolute values;
* the windows: ``n`` starts drawn with the old ``gym`` seeding (a SHA-512 hash
  of the seed, split in 32-bit words, seeding a NumPy RandomState), not
  ``RandomState(seed)``.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
from pathlib import Path
from typing import Literal

import numpy as np

Heuristic = Literal["fcfs", "sjf", "wfp3", "unicep", "f1"]
HEURISTICS: tuple[str, ...] = ("fcfs", "wfp3", "unicep", "sjf", "f1")
"""In the order of the table's columns."""

WINDOW_LENGTH = 1024
N_WINDOWS = 10
JOB_LIMIT = 10_000
"""Window starts are drawn among the first 10,000 jobs of the filtered list."""


RAW_DTYPE = np.dtype(
    [
        ("job_id", np.int64),
        ("submit_s", np.int64),  # field 2, absolute
        ("run_s", np.int64),  # field 4
        ("size", np.int64),  # max(field 5, field 8)
        ("request_s", np.int64),  # field 9, or the raw field 4 when -1
    ]
)
"""A job as the authors' loader keeps it."""


def read_rlscheduler_swf(
    path: str | Path, max_lines: int | None = None
) -> tuple[np.ndarray, int, int]:
    """(jobs as RAW_DTYPE, nodes, processors per node) of an SWF log, read as
    the authors' loader reads it (not with htcsim's SWF conventions): run
    time 0 dropped, negative run time made 10 s, a request of -1 replaced by
    the raw run time, size max(allocated, requested), sorted by job id; the
    machine is MaxNodes nodes of MaxProcs/MaxNodes processors."""
    from htcsim.workload.swf import read_swf_header

    path = Path(path)
    header = read_swf_header(path)
    nodes = header.max_nodes or header.max_procs
    if not nodes:
        raise ValueError(f"{path}: the header gives neither MaxNodes nor MaxProcs")
    procs = header.max_procs or nodes
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as text:
        lines = (line for line in text if line.strip() and not line.lstrip().startswith(";"))
        fields = np.loadtxt(
            itertools.islice(lines, max_lines),
            dtype=np.float64,
            usecols=(0, 1, 3, 4, 7, 8),
            ndmin=2,
        ).astype(np.int64)
    jobs = np.empty(len(fields), dtype=RAW_DTYPE)
    jobs["job_id"], jobs["submit_s"], jobs["run_s"] = fields[:, 0], fields[:, 1], fields[:, 2]
    jobs["size"] = np.maximum(fields[:, 3], fields[:, 4])
    jobs["request_s"] = np.where(fields[:, 5] == -1, fields[:, 2], fields[:, 5])
    jobs["run_s"][jobs["run_s"] < 0] = 10
    jobs = jobs[jobs["run_s"] > 0]
    return jobs[np.argsort(jobs["job_id"], kind="stable")], int(nodes), int(procs // nodes)


def scores(jobs: np.ndarray, heuristic: Heuristic) -> np.ndarray:
    """Each job's score under a heuristic (RAW_DTYPE jobs; the lowest is picked first)."""
    s = jobs["submit_s"].astype(np.float64)
    r = jobs["request_s"].astype(np.float64)
    n = jobs["size"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if heuristic == "fcfs":
            return s
        if heuristic == "sjf":
            # (r, s) as one key: r dominates, s breaks ties (s < 2^52 for any log)
            return r * 2.0**33 + s
        if heuristic == "f1":
            return np.log10(np.where(r > 0, r, 0.1)) * n + 870 * np.log10(np.where(s > 0, s, 0.1))
        wait = -1.0 - s  # the authors' queued "wait": start time (-1) - submit
        if heuristic == "wfp3":
            return -np.power(wait / r, 3) * n
        if heuristic == "unicep":
            return -(wait + 1e-15) / (np.log2(n + 1e-15) * r)
    raise ValueError(f"unknown heuristic {heuristic!r} (known: {', '.join(HEURISTICS)})")


def gym_random_state(seed: int) -> np.random.RandomState:
    """The RandomState of the old ``gym.utils.seeding.np_random(seed)``: the
    first 8 bytes of SHA-512(str(seed)) as a little-endian integer, split into
    32-bit words (low first) as the RandomState's seed."""
    seed %= 2**64
    value = int.from_bytes(hashlib.sha512(str(seed).encode("utf8")).digest()[:8], "little")
    words = []
    while value > 0:
        value, word = divmod(value, 2**32)
        words.append(word)
    rng = np.random.RandomState()
    rng.seed(words)
    return rng


def window_starts(
    n_jobs: int, seed: int = 1, n_windows: int = N_WINDOWS, length: int = WINDOW_LENGTH
) -> list[int]:
    """Start indices of the evaluation windows among the first ``n_jobs`` jobs."""
    if n_jobs < 2 * length + 2:
        raise ValueError(f"{n_jobs} jobs leave no room for windows of {length}")
    rng = gym_random_state(seed)
    return [int(rng.randint(length, n_jobs - length - 1)) for _ in range(n_windows)]


def window_bsld(
    jobs: np.ndarray,
    first: int,
    heuristic: Heuristic,
    nodes: int,
    procs_per_node: int,
    backfill: bool,
    length: int = WINDOW_LENGTH,
) -> float:
    """Mean bounded slowdown (tau 10 s) of one window of ``length`` jobs from
    index ``first``, started on an empty machine, under the authors' loop (the
    kernel's compatibility profile)."""
    from htcsim.kernel import rlscheduler_window

    window = jobs[first : first + length]
    need = -(-window["size"] // procs_per_node)
    start = rlscheduler_window(
        np.ascontiguousarray(window["submit_s"]),
        np.ascontiguousarray(window["run_s"]),
        np.ascontiguousarray(window["request_s"]),
        np.ascontiguousarray(need),
        np.ascontiguousarray(scores(window, heuristic)),
        np.ascontiguousarray(window["job_id"]),
        nodes,
        backfill,
    )
    wait = start - window["submit_s"]
    run = window["run_s"]
    return float(np.mean(np.maximum((wait + run) / np.maximum(run, 10), 1.0)))


def table_value(
    jobs: np.ndarray,
    heuristic: Heuristic,
    nodes: int,
    procs_per_node: int,
    backfill: bool,
    seed: int = 1,
) -> float:
    """A cell of Table V: the mean over the seeded windows of each window's mean."""
    starts = window_starts(min(len(jobs), JOB_LIMIT), seed)
    return float(
        np.mean([window_bsld(jobs, s, heuristic, nodes, procs_per_node, backfill) for s in starts])
    )
