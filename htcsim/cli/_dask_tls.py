"""The TLS credentials a command gives its Dask client (``htcsim tune --dask``).

Why: a Dask scheduler runs whatever a client sends on every worker, so the
site's scheduler speaks TLS with client certificates (as the agent's does:
``htcsim agent certs``). A command that connects to it takes the same three
files as the agent's settings, and refuses a plain ``tcp://`` scheduler
unless told (``--dask-insecure``), as the agent refuses one without
``dask_insecure``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from htcsim.agent.config import AgentConfigError
from htcsim.agent.executors.dask.security import checked_pem_files, tls_client

OPTIONS = {"tls_ca_file": "--tls-ca-file", "tls_cert": "--tls-cert", "tls_key": "--tls-key"}


class DaskTLSError(ValueError):
    """One line for the user: what is missing or wrong."""


def dask_security(
    address: str | None,
    files: dict[str, Path | None],
    *,
    insecure: bool,
) -> Any:
    """The ``distributed.Security`` for ``address`` from ``files`` (by setting
    name, see ``OPTIONS``), or None for a plain scheduler the user accepted
    with ``insecure``; ``DaskTLSError`` otherwise."""
    given = {key: path for key, path in files.items() if path is not None}
    if address is None:
        if given or insecure:
            used = [OPTIONS[key] for key in given] + (["--dask-insecure"] if insecure else [])
            raise DaskTLSError(f"{', '.join(used)} only apply with --dask")
        return None
    if given and len(given) != len(OPTIONS):
        missing = ", ".join(OPTIONS[key] for key in OPTIONS if key not in given)
        raise DaskTLSError(f"--dask with TLS needs {missing} too")
    if not given:
        if not insecure:
            raise DaskTLSError(
                "--dask needs --tls-ca-file, --tls-cert and --tls-key (`htcsim agent certs "
                "DIR` makes them; the agent's certificate will do), or --dask-insecure to "
                "accept a scheduler without TLS"
            )
        return None
    if insecure:
        raise DaskTLSError("--dask-insecure cannot go with --tls-ca-file, --tls-cert and --tls-key")
    if not address.startswith("tls://"):
        raise DaskTLSError(f"--dask must be a tls:// address with TLS, got {address!r}")
    try:
        checked = checked_pem_files(given)
    except AgentConfigError as exc:
        option, _, rest = str(exc).partition(":")
        raise DaskTLSError(f"{OPTIONS.get(option, option)}:{rest}") from exc
    return tls_client(checked)
