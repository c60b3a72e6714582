"""``htcsim tune --dask`` speaks TLS to a site's scheduler, as the agent does.

A Dask scheduler runs whatever a client sends on every worker, so the site's
scheduler requires TLS with client certificates (``htcsim agent certs``).
``tune`` takes the agent's three files (``--tls-ca-file``, ``--tls-cert``,
``--tls-key``); it used to connect with no TLS at all, and could not reach
such a scheduler. A plain scheduler needs ``--dask-insecure``; every mistake
is one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from distributed import Client

from htcsim.agent.executors.dask.security import tls_client
from tests.dask_harness import DaskSite
from tests.test_cli_errors import htcsim, one_error
from tests.test_tune_cli import README_SPACE

WORKERS = {"w-0": "cores=2,mem_mib=1000,gpus=0"}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[DaskSite]:
    (tmp_path / "space.toml").write_text(README_SPACE)
    site = DaskSite(tmp_path, WORKERS, tls=True)
    try:
        yield site
    finally:
        site.stop()


def test_tune_runs_its_trials_on_a_tls_scheduler(site: DaskSite, tmp_path: Path) -> None:
    assert site.certs is not None
    certs = site.certs
    proc = htcsim(
        "tune", "--max-jobs", "400", "--space", tmp_path / "space.toml",
        "--objective", "mean_bsld", "--trials", "6", "-o", tmp_path / "out",
        "--dask", site.address, "--tls-ca-file", certs / "ca.pem",
        "--tls-cert", certs / "agent.pem", "--tls-key", certs / "agent-key.pem",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = pl.read_parquet(tmp_path / "out" / "trials.parquet")
    assert trials.filter(pl.col("part") == "train").height > 0
    # the trials ran as tasks of this scheduler (asked over TLS, with the same files)
    files = {"tls_ca_file": "ca.pem", "tls_cert": "agent.pem", "tls_key": "agent-key.pem"}
    def task_prefixes(dask_scheduler: Any) -> list[str]:
        """Sent by value (a local function): the scheduler cannot import ``tests``."""
        return sorted(dask_scheduler.task_prefixes)

    with Client(site.address, security=tls_client({k: certs / v for k, v in files.items()})) as c:
        prefixes = c.run_on_scheduler(task_prefixes)
    assert "run_on_dask" in prefixes, prefixes


def test_tune_refuses_a_dask_scheduler_without_credentials(site: DaskSite, tmp_path: Path) -> None:
    assert site.certs is not None
    certs = site.certs
    base = (
        "tune", "--max-jobs", "400", "--space", tmp_path / "space.toml",
        "--objective", "mean_bsld", "--trials", "6", "-o", tmp_path / "out",
    )  # fmt: skip
    cases = {
        ("--dask", site.address): "or --dask-insecure to accept a scheduler without TLS",
        ("--dask", site.address, "--tls-ca-file", certs / "ca.pem"): "needs --tls-cert, --tls-key",
        (
            "--dask", site.address.replace("tls://", "tcp://"), "--tls-ca-file", certs / "ca.pem",
            "--tls-cert", certs / "agent.pem", "--tls-key", certs / "agent-key.pem",
        ): "must be a tls:// address",
        (
            "--dask", site.address, "--tls-ca-file", certs / "ca.pem",
            "--tls-cert", certs / "nothing.pem", "--tls-key", certs / "agent-key.pem",
        ): "--tls-cert: cannot read",
        ("--tls-ca-file", certs / "ca.pem"): "only apply with --dask",
    }  # fmt: skip
    for args, expected in cases.items():
        assert expected in one_error(htcsim(*base, *args, cwd=tmp_path)), args
