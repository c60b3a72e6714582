"""The Dask backend over TLS: a real scheduler and real workers that speak TLS
only, with certificates the real ``htcsim agent certs`` made. The agent runs
jobs through them; a client without a certificate, or with one another CA
signed, reaches neither the scheduler nor a worker (each refusal is checked
against the same call with the right certificate, which succeeds)."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client
from distributed.core import rpc
from distributed.protocol.pickle import dumps
from distributed.security import Security
from typer.testing import CliRunner

from htcsim.agent.certs import file_names
from htcsim.agent.config import AgentConfig, AgentConfigError
from htcsim.cli.app import app
from tests.agent_harness import JOB_S, READY_S, running_agent, wait_for
from tests.dask_harness import DaskSite, make_certs

WORKERS = {"big-0": "cores=4,mem_mib=4000,gpus=0", "small-0": "cores=1,mem_mib=1000,gpus=0"}
REFUSED_S = 5.0
"""How long a refused client keeps trying before it gives up (it never gets in)."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskSite]:
    site = DaskSite(tmp_path_factory.mktemp("tls"), WORKERS, tls=True)
    try:
        yield site
    finally:
        site.stop()


def _security(ca: Path, cert: Path, key: Path) -> Security:
    return Security(
        require_encryption=True,
        tls_ca_file=str(ca),
        tls_client_cert=str(cert),
        tls_client_key=str(key),
    )


def _agent_security(site: DaskSite) -> Security:
    assert site.certs is not None
    return _security(site.certs / "ca.pem", site.certs / "agent.pem", site.certs / "agent-key.pem")


def _worker_addresses(site: DaskSite) -> list[str]:
    """The workers' addresses, asked of the scheduler with the agent's certificate
    (once both workers have joined)."""
    with Client(site.address, security=_agent_security(site), timeout=f"{READY_S}s") as client:
        client.wait_for_workers(len(WORKERS), timeout=READY_S)
        return sorted(client.scheduler_info(n_workers=-1)["workers"])


def _anonymous(ca: Path) -> dict[str, Any]:
    """Connection arguments of a TLS client that trusts the site's CA but has
    no certificate of its own."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.check_hostname = False  # as Dask's own: the CA is what is checked
    return {"ssl_context": context, "require_encryption": True}


def _args(security: Security | dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(security, Security):
        return dict(security.get_connection_args("client"))
    return security or {}


def _run_on_worker(address: str, security: Security | dict[str, Any] | None, marker: Path) -> Any:
    """``Path.write_text(marker, "ran")`` on one worker, asked directly (its
    ``run`` handler): what a stranger would like to do there. A standard
    library function, so that the worker can unpickle it wherever it runs."""

    async def call() -> Any:
        async with rpc(address, connection_args=_args(security), timeout=REFUSED_S) as worker:
            return await worker.run(function=dumps(Path.write_text), args=dumps((marker, "ran")))

    return asyncio.run(asyncio.wait_for(call(), READY_S))


def _ask_scheduler(address: str, security: Security | dict[str, Any] | None) -> Any:
    """The scheduler's ``identity``, asked directly (what any client asks first)."""

    async def call() -> Any:
        async with rpc(address, connection_args=_args(security), timeout=REFUSED_S) as scheduler:
            return await scheduler.identity()

    return asyncio.run(asyncio.wait_for(call(), READY_S))


def test_an_agent_with_tls_runs_jobs_on_tls_workers(site: DaskSite, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert site.address.startswith("tls://")
    with (
        running_agent(
            tmp_path, backend="dask", heartbeat_timeout_s=5.0, **site.agent_settings()
        ) as agent,
        agent.client() as client,
    ):
        wait_for(lambda: len(client.get("/nodes").json()["nodes"]) == 2, timeout=READY_S)
        answer = client.post(
            "/jobs", json={"command": ["sh", "-c", "echo $PPID"], "cwd": str(work), "cores": 4}
        )
        assert answer.status_code == 201, answer.text
        job = int(answer.json()["ids"][0])
        wait_for(lambda: client.get(f"/jobs/{job}").json()["state"] == "completed", timeout=JOB_S)
        assert client.get(f"/jobs/{job}").json()["node"] == "big-0"
        assert int(client.get(f"/jobs/{job}/log").text) == site.workers["big-0"].pid
    assert "dask_insecure" not in (tmp_path / "agent.log").read_text()


def test_a_client_without_a_certificate_reaches_neither_scheduler_nor_worker(
    site: DaskSite, tmp_path: Path
) -> None:
    """Plain TCP to the TLS ports, and TLS that trusts the site's CA but shows
    no certificate of its own: both refused, by the scheduler and the workers."""
    assert site.certs is not None
    workers = _worker_addresses(site)
    assert len(workers) == 2 and all(a.startswith("tls://127.0.0.1:") for a in workers)
    anonymous = _anonymous(site.certs / "ca.pem")
    plain = site.address.replace("tls://", "tcp://")
    with pytest.raises((OSError, TimeoutError)):
        Client(plain, timeout=f"{REFUSED_S}s", set_as_default=False)
        pytest.fail(f"a plain client got in at {plain}")
    for address, security in ((plain, None), (site.address, anonymous)):
        with pytest.raises((OSError, TimeoutError)):
            _ask_scheduler(address, security)
    assert _ask_scheduler(site.address, _agent_security(site))["type"] == "Scheduler"
    marker = tmp_path / "ran"
    for worker in workers:
        for address, security in ((worker.replace("tls://", "tcp://"), None), (worker, anonymous)):
            with pytest.raises((OSError, TimeoutError)):
                _run_on_worker(address, security, marker)
    assert not marker.exists()
    # the same call with the agent's certificate does run there
    answer = _run_on_worker(workers[0], _agent_security(site), marker)
    assert answer["status"] == "OK" and marker.read_text() == "ran"


def test_a_certificate_from_another_ca_is_refused(site: DaskSite, tmp_path: Path) -> None:
    assert site.certs is not None
    other = tmp_path / "other"
    make_certs(other)
    workers = _worker_addresses(site)
    strangers = {
        "their own CA": _security(other / "ca.pem", other / "agent.pem", other / "agent-key.pem"),
        # trusts the site's CA, but presents a certificate the site's CA never signed
        "the site's CA": _security(
            site.certs / "ca.pem", other / "agent.pem", other / "agent-key.pem"
        ),
    }
    marker = tmp_path / "ran"
    for why, security in strangers.items():
        with pytest.raises((OSError, TimeoutError)):
            Client(site.address, security=security, timeout=f"{REFUSED_S}s", set_as_default=False)
            pytest.fail(f"a client trusting {why} got in")
        with pytest.raises((OSError, TimeoutError)):
            _run_on_worker(workers[0], security, marker)
    assert not marker.exists()


def test_an_agent_with_another_ca_s_certificate_stops_with_one_line(
    site: DaskSite, tmp_path: Path
) -> None:
    """The real agent, given a certificate the site's CA never signed: the
    scheduler refuses it and the start ends with one line that says TLS."""
    other = tmp_path / "other"
    make_certs(other)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nallow_root = true\nrun_jobs_as = "agent"\n'
        f'backend = "dask"\nscheduler = "{site.address}"\n'
        f'tls_ca_file = "{other / "ca.pem"}"\n'
        f'tls_cert = "{other / "agent.pem"}"\ntls_key = "{other / "agent-key.pem"}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "htcsim", "agent", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=READY_S,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot reach the Dask scheduler {site.address}" in errors[0]
    assert "signed by tls_ca_file" in errors[0]


# ---------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"scheduler": "tcp://h:8786"}, "tls_ca_file, tls_cert and tls_key are required"),
        ({"scheduler": "tls://h:8786", "tls_ca_file": Path("ca.pem")}, "tls_cert is needed"),
        (
            {
                "scheduler": "tcp://h:8786",
                "tls_ca_file": Path("ca.pem"),
                "tls_cert": Path("a.pem"),
                "tls_key": Path("a-key.pem"),
            },
            "scheduler must be a tls:// address",
        ),
        (
            {
                "scheduler": "tls://h:8786",
                "tls_ca_file": Path("ca.pem"),
                "tls_cert": Path("a.pem"),
                "tls_key": Path("a-key.pem"),
                "dask_insecure": True,
            },
            "dask_insecure must be false",
        ),
    ],
)
def test_the_dask_backend_needs_tls_or_an_explicit_opt_out(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(AgentConfigError, match=message):
        AgentConfig(backend="dask", **settings).check()
    AgentConfig(backend="dask", scheduler="tcp://h:8786", dask_insecure=True).check()


def test_an_unreadable_certificate_stops_the_start_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nallow_root = true\nrun_jobs_as = "agent"\n'
        'backend = "dask"\nscheduler = "tls://127.0.0.1:1"\n'
        f'tls_ca_file = "{tmp_path / "missing.pem"}"\n'
        f'tls_cert = "{tmp_path / "a.pem"}"\ntls_key = "{tmp_path / "a-key.pem"}"\n'
    )
    result = CliRunner().invoke(app, ["agent", "serve", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert f"tls_ca_file: cannot read {tmp_path / 'missing.pem'}" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------- htcsim agent certs


def _certs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "htcsim", "agent", "certs", *args],
        capture_output=True,
        text=True,
        timeout=READY_S,
    )


def test_agent_certs_makes_a_ca_and_three_certificates_it_signed(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "certs"
    done = _certs(str(out), "--days", "30")
    assert done.returncode == 0, done.stderr
    assert f'tls_cert = "{out / "agent.pem"}"' in done.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(file_names())  # no leftovers
    for name in file_names():
        mode = stat.S_IMODE(os.stat(out / name).st_mode)
        assert mode == (0o600 if name.endswith("-key.pem") else 0o644), (name, oct(mode))
    for role in ("scheduler", "worker", "agent"):
        verify = subprocess.run(
            ["openssl", "verify", "-CAfile", str(out / "ca.pem"), str(out / f"{role}.pem")],
            capture_output=True,
            text=True,
            timeout=READY_S,
        )
        assert verify.returncode == 0, verify.stderr
        text = subprocess.run(
            ["openssl", "x509", "-noout", "-text", "-in", str(out / f"{role}.pem")],
            capture_output=True,
            text=True,
            timeout=READY_S,
            check=True,
        ).stdout
        assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    # a second run never overwrites them
    again = _certs(str(out))
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "already holds ca.pem" in again.stderr


def test_agent_certs_says_in_one_line_that_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = _certs(str(blocker / "certs"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: cannot write to {blocker / 'certs'}: Not a directory"
    bad_days = _certs(str(tmp_path / "c"), "--days", "0")
    assert bad_days.returncode == 2 and "--days must be >= 1" in bad_days.stderr
    assert not (tmp_path / "c").exists()
