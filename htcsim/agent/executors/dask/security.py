"""The agent's TLS credentials for Dask: what its client, and a cluster
manager's scheduler and workers, speak.

Why TLS with client certificates: a Dask scheduler runs whatever code a
client sends on every worker. Open, anyone who reaches its port runs
processes on the agent's nodes, unseen by the agent. With ``require_encryption``
and a CA of the site's own, only a holder of a certificate that CA signed
(the agent, the workers, the scheduler) gets a connection at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distributed.security import Security

from htcsim.agent.config import TLS_KEYS, AgentConfig, AgentConfigError


def tls_files(config: AgentConfig) -> dict[str, Path] | None:
    """The CA, certificate and key the settings name, each readable; None
    without TLS (``dask_insecure``). A missing or unreadable file is one line."""
    paths = {key: getattr(config, key) for key in TLS_KEYS}
    if any(path is None for path in paths.values()):
        return None
    return checked_pem_files(paths)


def checked_pem_files(paths: dict[str, Any]) -> dict[str, Path]:
    """``paths`` (by setting name), each a readable PEM file, else one line
    (``AgentConfigError``) that names the setting."""
    for key, path in paths.items():
        try:
            with open(path, "rb") as handle:
                text = handle.read(1 << 16)
        except OSError as exc:
            raise AgentConfigError(f"{key}: cannot read {path} ({exc.strerror})") from exc
        if b"-----BEGIN " not in text:
            raise AgentConfigError(f"{key}: {path} is not a PEM file")
    return {key: Path(path) for key, path in paths.items()}


def tls_client(files: dict[str, Path]) -> Security:
    """A Dask client's side of a TLS connection, with these files
    (``tls_ca_file``, ``tls_cert``, ``tls_key``): the agent's, or
    ``htcsim tune --dask``'s, with the same certificate."""
    return Security(
        require_encryption=True,
        tls_ca_file=str(files["tls_ca_file"]),
        tls_client_cert=str(files["tls_cert"]),
        tls_client_key=str(files["tls_key"]),
    )


def client_security(config: AgentConfig) -> Security | None:
    """The agent's side of the connection to a scheduler it did not start."""
    files = tls_files(config)
    return None if files is None else tls_client(files)


def cluster_security(config: AgentConfig) -> Security | None:
    """Every role of a cluster the agent starts itself (its scheduler runs in
    the agent's process, its workers with the agent's files): one certificate
    for all of them, which ``htcsim agent certs`` makes usable as either side."""
    files = tls_files(config)
    if files is None:
        return None
    cert, key = str(files["tls_cert"]), str(files["tls_key"])
    roles: dict[str, Any] = {}
    for role in ("client", "scheduler", "worker"):
        roles[f"tls_{role}_cert"] = cert
        roles[f"tls_{role}_key"] = key
    return Security(require_encryption=True, tls_ca_file=str(files["tls_ca_file"]), **roles)
