"""htcsim's replay against a real Slurm with accounting: multifactor with QOS, age and fairshare.

``htcsim export slurm`` writes the fragment and ``sacctmgr.sh`` for the
policy of experiments/slurm-validation/multifactor-qos-fairshare.toml; a
single-host Slurm with a private MariaDB and slurmdbd (tests/slurm_harness.py,
tests/slurm_dbd.py) runs the script (QOS high and low, the users' shares),
then 30 ``sleep`` jobs submitted at their submit times, each naming its QOS.
Slurm's own accounting (``sacct --parsable2`` from slurmdbd) goes through
htcsim's sacct importer and must reproduce the submission; the replay under
the same policy, with the Slurm compatibility profile, must start the jobs
in nearly Slurm's order.

The bound comes from measurement: the profile's replay agreed with Slurm on
0.987 and 0.963 of job pairs on 100 jobs (seeds 1 and 2,
experiments/slurm-validation/README.md) and on 0.888-0.957 of pairs on this
30-job workload in five runs (Slurm's order itself changes from run to run:
it recomputes priorities and charges usage on its own minute clock); the
bound leaves room below that for a loaded machine. On one of those runs the
same records replayed in submit order agreed on 0.906, on job size alone on
0.925, so on 30 jobs the bound checks that the replay follows Slurm's
multifactor order, not which factor made it: experiments/slurm-validation's
factors.py shows that on 100 jobs. The tests skip only where Slurm or its
accounting cannot run (binaries missing, not root, no test accounts).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from htcsim.policy import load_policy
from htcsim.slurm.export import export_slurm
from htcsim.workload.sacct import SacctImport
from tests import slurm_dbd
from tests.slurm_harness import SlurmCluster, accounts_reason, skip_reason, start_cluster
from tests.slurm_replay import (
    USERS,
    Agreement,
    Submitted,
    accounting_sacct,
    compare,
    for_import,
    generate,
    replay,
    slurm_nodes,
    slurm_profile,
    submission_mismatches,
    submit_all,
    with_qos,
)

POLICY = Path(__file__).parents[1] / "experiments/slurm-validation/multifactor-qos-fairshare.toml"
N_JOBS = 30
ORDER_AGREEMENT_MIN = 0.8
"""Measured 0.888-0.957 in five runs (see the module docstring)."""


def _reason() -> str | None:
    return skip_reason() or slurm_dbd.skip_reason() or accounts_reason(USERS)


_REASON = _reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


@dataclass(frozen=True)
class Run:
    config: str
    associations: str
    submitted: dict[int, Submitted]
    imported: SacctImport
    profile: Agreement  # the replay with the Slurm profile read from the fragment


@pytest.fixture(scope="module")
def qos_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("slurm-qos")
    policy = load_policy(POLICY)
    exported = export_slurm(policy, work / "export")
    jobs = with_qos(generate(seed=7, n_jobs=N_JOBS), 7, ("high", "low"), 0.35)
    cluster: SlurmCluster = start_cluster(
        exported.files[0], slurm_nodes(), accounting=True, users=USERS
    )
    try:
        config = cluster.run("scontrol", "show", "config")
        assocs = cluster.run("sacctmgr", "-n", "-P", "show", "assoc", "format=user,fairshare,qos")
        submitted = submit_all(cluster, jobs)
        imported = accounting_sacct(cluster, set(submitted), work / "run.sacct")
    finally:
        cluster.stop()
        cluster.remove()
    profile = slurm_profile(for_import(policy, imported), exported.files[0])
    yield Run(config, assocs, submitted, imported, compare(imported, replay(imported, profile)))


def test_slurm_runs_the_exported_priority_with_its_accounting(qos_run: Run) -> None:
    settings = dict(line.split("=", 1) for line in qos_run.config.splitlines() if " = " in line)
    settings = {k.strip().lower(): v.strip() for k, v in settings.items()}
    assert settings["prioritytype"] == "priority/multifactor"
    assert settings["accountingstoragetype"] == "accounting_storage/slurmdbd"
    assert settings["priorityweightqos"] == "2000"
    assert settings["priorityweightfairshare"] == "2000"
    # sacctmgr.sh set each user's share and let every association use both QOS
    shares = {}
    for line in qos_run.associations.splitlines():
        user, share, qos = line.split("|")
        if user in USERS:
            shares[user] = share
            assert {"high", "low"} <= set(qos.split(",")), line
    assert shares == {"htcsim-alice": "4", "htcsim-bob": "2", "htcsim-eve": "1"}


def test_sacct_reproduces_the_submission(qos_run: Run) -> None:
    imported = qos_run.imported
    assert not imported.workload.dropped
    assert sorted(imported.qos.values()) == ["high", "low"]
    assert submission_mismatches(qos_run.submitted, imported) == []


def test_the_replay_starts_jobs_in_slurms_order(qos_run: Run) -> None:
    profile = qos_run.profile
    assert profile.jobs == N_JOBS
    assert profile.order_agreement >= ORDER_AGREEMENT_MIN, profile


def test_the_submission_check_sees_a_difference(qos_run: Run) -> None:
    """The check above compares: a job said to have asked one more core, or
    the other QOS, is reported."""
    job_id, sub = next(iter(qos_run.submitted.items()))
    other = "low" if sub.job.qos == "high" else "high"
    for changed in (replace(sub.job, cores=sub.job.cores + 1), replace(sub.job, qos=other)):
        submitted = {**qos_run.submitted, job_id: replace(sub, job=changed)}
        assert len(submission_mismatches(submitted, qos_run.imported)) == 1
