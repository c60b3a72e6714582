"""An agent whose pool is a real dask-jobqueue ``SLURMCluster`` on the test Slurm.

Shared by the pool tests and the benchmark: the agent's ``[cluster]`` tables
for a Slurm started by tests/slurm_harness.py (one worker per batch job,
slurmd starting it on this machine), and the Slurm facts the tests read
(the pool's batch jobs by state, the batch job a worker runs in).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.slurm_harness import SlurmCluster
from tests.test_agent_autoscale_dask import autoscale_policy

LIVE = ("PENDING", "CONFIGURING", "RUNNING")
"""Batch job states of a worker asked for and not yet ended."""
NODE = "pool1"
CPUS = 4


def pool_tables(log_dir: Path, job_name: str, *, nodes: int, boot_timeout_s: float) -> str:
    """``[cluster]`` for a SLURMCluster of one-core workers on the test Slurm,
    its batch jobs named ``job_name`` (one name per test: another test's
    jobs, ending, are not counted)."""
    return f"""
[cluster]
manager = "dask_jobqueue.SLURMCluster"
node_type = "slurm"
nodes = {nodes}
cores = 1
mem_mib = 400
boot_timeout_s = {boot_timeout_s}

[cluster.options]
cores = 1
processes = 1
memory = "500MB"
queue = "batch"
walltime = "01:00:00"
job_name = "{job_name}"
log_directory = "{log_dir}"
worker_extra_args = ["--resources", "cores=1,mem_mib=400,gpus=0"]
scheduler_options = {{ interface = "lo", port = 0, dashboard_address = "127.0.0.1:0" }}
"""


def pool_policy(low: int, high: int) -> str:
    """Autoscaling between ``low`` and ``high`` nodes, booting at once; idle
    workers are kept ten minutes (the tests decide when one goes)."""
    return autoscale_policy(low, high, idle_s=600)


def batch_jobs(slurm: SlurmCluster, job_name: str) -> dict[int, str]:
    """The pool's batch jobs not ended (pending, running): id -> state."""
    try:
        out = slurm.run(
            "squeue", "-h", "-n", job_name, "-t", ",".join(LIVE), "-o", "%i %T", timeout=30
        )
    except (RuntimeError, subprocess.TimeoutExpired):
        return {}
    jobs = {}
    for line in out.splitlines():
        job, state = line.split()
        jobs[int(job)] = state
    return jobs


def running(slurm: SlurmCluster, job_name: str) -> set[int]:
    return {j for j, state in batch_jobs(slurm, job_name).items() if state == "RUNNING"}


def batch_job_of(pid: int) -> int:
    """The Slurm batch job a process (a worker) runs in, from its environment."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    for item in raw.split(b"\0"):
        if item.startswith(b"SLURM_JOB_ID="):
            return int(item.split(b"=", 1)[1])
    raise LookupError(f"process {pid} is not in a Slurm job")


def slurm_environ(slurm: SlurmCluster) -> dict[str, str]:
    """What the agent needs to submit and cancel batch jobs on the test Slurm."""
    return {"SLURM_CONF": str(slurm.conf), "PATH": slurm.env["PATH"]}
