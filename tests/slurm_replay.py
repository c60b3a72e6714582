"""Run a workload on a real Slurm, replay it in htcsim, and compare the two schedules.

The pieces of the validation (the experiment under experiments/slurm-validation
and the end-to-end tests use them):

- :func:`generate`: a seeded workload of ``sleep`` jobs of 1-8 cores, one
  node each;
- :func:`submit_all`: ``sbatch`` each job at its submit time (as its user,
  with its time limit), then wait for the jobcomp records of all of them;
- :func:`jobcomp_records` / :func:`write_sacct`: Slurm's ``jobcomp/filetxt``
  records rewritten as ``sacct --parsable2`` text, which htcsim's importer
  reads: the replay sees the submit times and run times Slurm recorded;
- :func:`with_qos` / :func:`accounting_sacct`: with slurmdbd, jobs that
  name a QOS, and Slurm's own accounting (``sacct --parsable2``) read back;
- :func:`for_import`: a policy's user shares and QoS queues renamed to the
  ids the sacct importer gave those names;
- :func:`compare`: start-order agreement and start-time differences;
- :func:`slurm_profile`: the policy with the Slurm compatibility profile that
  ``htcsim import slurm-conf`` reads from the exported fragment.

Slurm takes time limits in whole minutes, so a job's limit is a number of
minutes; run times are a few seconds, Slurm records times to the second.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from htcsim.cluster import Cluster, NodeType
from htcsim.policy import Policy
from htcsim.schedule import SimResult
from htcsim.sim import simulate
from htcsim.slurm.to_policy import import_slurm
from htcsim.workload.sacct import SacctImport, read_sacct
from tests.slurm_harness import Node, SlurmCluster

USERS = ("htcsim-alice", "htcsim-bob", "htcsim-eve")
CLUSTER = Cluster(node_types=(NodeType("node", 4, 8),))
"""Four nodes of 8 CPUs (Slurm names them node1-node4): jobs of 1 to 8 cores fit
on one node. slurmd declares the 8 CPUs whatever the host has
(``SlurmdParameters=config_overrides``); the jobs are ``sleep``."""
SIZES = (1, 2, 3, 4, 5, 6, 7, 8)
"""Job sizes in cores, equally likely."""
MEAN_GAP_S = 0.8
"""Mean time between submissions: with sizes of 1-8 cores (4.5 on average) and
sleeps of 2-8 s (5 on average), 28 of the 32 CPUs are asked for on average
(88 %; the earlier workload of 1-4 cores a second apart on 12 CPUs, 85 %), so
queues form and the policies order them."""
DONE_S = 600.0
"""Bound on the wait for the last job's record after the last submission."""


def slurm_nodes(cluster: Cluster = CLUSTER) -> tuple[Node, ...]:
    return tuple(
        Node(f"{t.name}{k}", t.cores) for t in cluster.node_types for k in range(1, t.count + 1)
    )


@dataclass(frozen=True)
class Job:
    index: int
    submit_s: float  # seconds after the first submission
    cores: int
    run_s: int  # the sleep
    limit_min: int  # Slurm's time limit, whole minutes
    user: str
    qos: str = ""  # sbatch --qos (with slurmdbd); empty: the default QOS


def generate(
    seed: int,
    n_jobs: int,
    mean_gap_s: float = MEAN_GAP_S,
    run_s: tuple[int, int] = (2, 8),
    sizes: tuple[int, ...] = SIZES,
    size_p: tuple[float, ...] | None = None,
) -> list[Job]:
    """``n_jobs`` jobs: Poisson arrivals, ``sizes`` cores (with probabilities
    ``size_p``, equal by default), sleeps in ``run_s``, 1-3 minute limits."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(mean_gap_s, n_jobs)
    gaps[0] = 0.0
    submit = np.round(np.cumsum(gaps), 1)
    cores = rng.choice(list(sizes), size=n_jobs, p=None if size_p is None else list(size_p))
    runs = rng.integers(run_s[0], run_s[1] + 1, n_jobs)
    limits = rng.integers(1, 4, n_jobs)
    users = rng.integers(0, len(USERS), n_jobs)
    return [
        Job(k, float(submit[k]), int(cores[k]), int(runs[k]), int(limits[k]), USERS[users[k]])
        for k in range(n_jobs)
    ]


def with_qos(jobs: list[Job], seed: int, levels: tuple[str, str], high: float) -> list[Job]:
    """The jobs with a QOS each: ``levels[0]`` with probability ``high``, else
    ``levels[1]`` (a draw of its own, so the rest of the workload is the seed's)."""
    rng = np.random.default_rng([seed, 1])
    picks = rng.random(len(jobs)) < high
    return [
        replace(job, qos=levels[0] if pick else levels[1])
        for job, pick in zip(jobs, picks, strict=True)
    ]


@dataclass(frozen=True)
class Submitted:
    job: Job
    before: float  # epoch seconds just before sbatch ran, and just after it returned:
    after: float  # Slurm's SubmitTime lies in between (to the second)


def submit_all(cluster: SlurmCluster, jobs: list[Job]) -> dict[int, Submitted]:
    """Submit each job at its submit time; return Slurm job id -> job once all are done."""
    ids: dict[int, Submitted] = {}
    t0 = time.monotonic()
    for job in jobs:
        delay = t0 + job.submit_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the workload's arrival time, not a wait for readiness
        before = time.time()
        out = cluster.run(
            "sbatch", "--parsable", f"--uid={job.user}", f"--gid={job.user}", "--chdir=/tmp",
            "-o", "/dev/null", "-N", "1", "-n", "1", "-c", str(job.cores),
            "-t", str(job.limit_min), f"--job-name=j{job.index}", f"--wrap=sleep {job.run_s}",
            *((f"--qos={job.qos}",) if job.qos else ()),
        )  # fmt: skip
        ids[int(out.strip().split(";")[0])] = Submitted(job, before, time.time())
    deadline = time.monotonic() + DONE_S
    while time.monotonic() < deadline:
        done = {r["JobId"] for r in jobcomp_records(cluster.jobcomp)}
        if all(str(i) in done for i in ids):
            return ids
        time.sleep(0.5)
    raise TimeoutError(f"jobs not all recorded {DONE_S:.0f} s after the last submission")


def jobcomp_records(path: Path) -> list[dict[str, str]]:
    """The ``jobcomp/filetxt`` file: one ``Key=Value ...`` line per completed job."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            records.append(dict(item.split("=", 1) for item in line.split() if "=" in item))
    return records


def epoch(stamp: str) -> int:
    """A jobcomp time (the controller's local time, to the second) as epoch seconds."""
    return int(time.mktime(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").timetuple()))


SACCT_FIELDS = ("JobID", "User", "Partition", "Submit", "Start", "End", "Timelimit", "NCPUS",
                "NNodes", "State")  # fmt: skip


def write_sacct(records: list[dict[str, str]], path: Path) -> None:
    """The records as ``sacct --parsable2`` text (times as epoch seconds)."""
    lines = ["|".join(SACCT_FIELDS)]
    for r in records:
        minutes = int(r["TimeLimit"])
        times = [str(epoch(r[key])) for key in ("SubmitTime", "StartTime", "EndTime")]
        limit = f"{minutes // 60:02d}:{minutes % 60:02d}:00"
        fields = [r["JobId"], r["UserId"].split("(")[0], r["Partition"], *times, limit,
                  r["ProcCnt"], r["NodeCnt"], r["JobState"]]  # fmt: skip
        lines.append("|".join(fields))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def import_run(cluster: SlurmCluster, path: Path) -> SacctImport:
    """The real run, read back through htcsim's sacct importer."""
    write_sacct(jobcomp_records(cluster.jobcomp), path)
    return read_sacct(path)


ACCOUNTING_FIELDS = ("JobID", "User", "Partition", "QOS", "Submit", "Start", "End",
                     "Timelimit", "NCPUS", "NNodes", "State")  # fmt: skip
FINAL = ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY")


def accounting_sacct(cluster: SlurmCluster, ids: set[int], path: Path) -> SacctImport:
    """Slurm's accounting (``sacct --parsable2`` from slurmdbd, times as epoch
    seconds) once it holds a final record of every job in ``ids``, through
    htcsim's importer; the text is kept at ``path``.

    slurmctld sends the records to slurmdbd as the jobs end, not at once.
    """
    env = {**cluster.env, "SLURM_TIME_FORMAT": "%s"}
    args = ["sacct", "--parsable2", "--allusers", "-X", "--starttime=2000-01-01",
            f"--format={','.join(ACCOUNTING_FIELDS)}"]  # fmt: skip
    deadline = time.monotonic() + DONE_S
    text = ""
    while time.monotonic() < deadline:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        text = done.stdout
        final = {
            line.split("|")[0]
            for line in text.splitlines()[1:]
            if line.count("|") == len(ACCOUNTING_FIELDS) - 1
            and line.split("|")[-1].split()[0] in FINAL
        }
        if done.returncode == 0 and all(str(i) in final for i in ids):
            path.write_text(text, encoding="utf-8")
            return read_sacct(path)
        time.sleep(0.5)
    raise TimeoutError(f"sacct did not show every job {DONE_S:.0f} s after they ended: {text}")


def submission_mismatches(submitted: dict[int, Submitted], imported: SacctImport) -> list[str]:
    """How Slurm's records differ from what was submitted (empty: they do not).

    The same job ids, and per job its cores, limit, user, QOS (when it named
    one) and a submit time within 1 s of the sbatch call."""
    workload = imported.workload
    jobs = workload.jobs
    by_id = {int(j): k for k, j in enumerate(jobs["job_id"])}
    if set(by_id) != set(submitted):
        return [f"job ids: recorded {sorted(by_id)}, submitted {sorted(submitted)}"]
    t0 = workload.unix_start_time or 0
    out = []
    for job_id, sub in sorted(submitted.items()):
        row = jobs[by_id[job_id]]
        recorded = {
            "cores": int(row["n_tasks"]) * int(row["cores_per_task"]),
            "limit_s": int(row["walltime_s"]),
            "user": imported.users.get(int(row["user_id"]), ""),
            "qos": imported.qos.get(int(row["queue_id"]), "") if sub.job.qos else "",
        }
        wanted = {
            "cores": sub.job.cores,
            "limit_s": 60 * sub.job.limit_min,
            "user": sub.job.user,
            "qos": sub.job.qos,
        }
        out.extend(
            f"job {job_id}: {key} {recorded[key]!r}, submitted {wanted[key]!r}"
            for key in wanted
            if recorded[key] != wanted[key]
        )
        submit = t0 + int(row["submit_s"])
        if not sub.before - 1 <= submit <= sub.after + 1:
            span = f"{sub.before:.1f}-{sub.after:.1f}"
            out.append(f"job {job_id}: submit {submit}, sbatch ran {span}")
    return out


def for_import(policy: Policy, imported: SacctImport) -> Policy:
    """``policy`` with its user shares and QoS queues named as in ``imported``.

    The importer numbers users and QOS 1..N in sorted name order; the replay's
    kernel knows a user by the text of its number and a QoS by its queues.
    """
    user_ids = {name: str(uid) for uid, name in imported.users.items()}
    qos_ids = {name: qid for qid, name in imported.qos.items()}
    return replace(
        policy,
        user_shares=tuple((user_ids[n], v) for n, v in policy.user_shares if n in user_ids),
        qos=tuple(
            replace(q, queues=(qos_ids[q.name],) if q.name in qos_ids else ()) for q in policy.qos
        ),
    )


def replay(imported: SacctImport, policy: Policy) -> SimResult:
    return simulate(imported.workload, policy, cluster=CLUSTER)


def slurm_profile(policy: Policy, conf: Path) -> Policy:
    """``policy`` with the Slurm compatibility profile and the placement that
    ``htcsim import slurm-conf`` reads from ``conf`` (the exported fragment)."""
    imported = import_slurm(conf).policy
    return replace(
        policy,
        placement=imported.placement,
        slurm_reaction_s=imported.slurm_reaction_s,
        slurm_backfill_interval_s=imported.slurm_backfill_interval_s,
        slurm_whole_minute_limits=imported.slurm_whole_minute_limits,
    )


@dataclass(frozen=True)
class Agreement:
    jobs: int
    order_agreement: float  # fraction of job pairs started in the same order (ties excluded)
    kendall_tau: float
    start_delta_median_s: float
    start_delta_p95_s: float
    start_delta_max_s: float
    mean_wait_real_s: float
    mean_wait_sim_s: float


def real_starts(imported: SacctImport) -> np.ndarray:
    """Slurm's start times on the replay's clock (seconds after the first submission)."""
    jobs = imported.workload.jobs
    return np.asarray(jobs["submit_s"] + jobs["recorded_wait_s"], dtype=np.int64)


def compare(imported: SacctImport, result: SimResult) -> Agreement:
    real = real_starts(imported)
    sim = np.asarray(result.start_s, dtype=np.int64)
    submit = np.asarray(imported.workload.jobs["submit_s"], dtype=np.int64)
    i, j = np.triu_indices(len(real), k=1)
    a = np.sign(real[i] - real[j])
    b = np.sign(sim[i] - sim[j])
    untied = (a != 0) & (b != 0)
    same = float(np.mean(a[untied] == b[untied])) if untied.any() else 1.0
    n = len(real)
    tau = float(np.sum(a * b)) / np.sqrt(float(np.sum(a != 0)) * float(np.sum(b != 0)) or 1.0)
    delta = np.abs(real - sim)
    return Agreement(
        jobs=n,
        order_agreement=same,
        kendall_tau=tau,
        start_delta_median_s=float(np.median(delta)),
        start_delta_p95_s=float(np.percentile(delta, 95)),
        start_delta_max_s=float(delta.max()),
        mean_wait_real_s=float(np.mean(real - submit)),
        mean_wait_sim_s=float(np.mean(sim - submit)),
    )
