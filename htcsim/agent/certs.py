"""``htcsim agent certs``: a CA of the site's own and the certificates the
Dask scheduler, its workers and the agent present to each other.

Why a CA per site: Dask's TLS (``require_encryption``) accepts a peer only
when its certificate is signed by the CA every side trusts; with a CA made
for this cluster alone, no certificate issued elsewhere opens the scheduler.
Why the ``openssl`` command: it is on every host that runs a scheduler, and
the agent needs no cryptography library of its own for a task done once.

Every certificate may serve either end of a connection (serverAuth and
clientAuth): the agent's own serves as scheduler and worker too when the
agent starts its cluster itself. Keys are written 0600, and nothing is
written unless every file could be made (they are made in a private
directory first, then moved in).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROLES = ("scheduler", "worker", "agent")
"""Who gets a certificate: ``<role>.pem`` and ``<role>-key.pem`` each."""
CA_FILES = ("ca.pem", "ca-key.pem")
KEY_ARGS = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
LEAF_EXTENSIONS = (
    "basicConstraints = critical, CA:FALSE\n"
    "keyUsage = critical, digitalSignature, keyEncipherment\n"
    "extendedKeyUsage = serverAuth, clientAuth\n"
)


class CertsError(RuntimeError):
    """The certificates could not be made; the message says why in one line."""


@dataclass(frozen=True)
class CertFiles:
    """What ``make_certs`` wrote: the CA's certificate and key, and each role's pair."""

    ca: Path
    ca_key: Path
    certs: dict[str, tuple[Path, Path]]


def file_names() -> list[str]:
    """Every file ``make_certs`` writes, CA first."""
    return [*CA_FILES, *(name for role in ROLES for name in (f"{role}.pem", f"{role}-key.pem"))]


def make_certs(out_dir: Path, days: int = 365) -> CertFiles:
    """Make the CA and the scheduler's, the workers' and the agent's
    certificates in ``out_dir`` (created if need be), valid for ``days``."""
    if days < 1:
        raise CertsError(f"--days must be >= 1, got {days}")
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertsError("the openssl command is not installed (it makes the certificates)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        taken = [name for name in file_names() if (out_dir / name).exists()]
        if taken:
            held = ", ".join(taken)
            raise CertsError(
                f"{out_dir} already holds {held}: remove them or choose another directory"
            )
        work = Path(tempfile.mkdtemp(prefix=".htcsim-certs-", dir=out_dir))  # mode 0700
    except OSError as exc:
        raise CertsError(f"cannot write to {out_dir}: {exc.strerror or exc}") from exc
    try:
        _make_all(openssl, work, days)
        for name in file_names():
            os.chmod(work / name, 0o600 if name.endswith("-key.pem") else 0o644)
        for name in file_names():
            os.replace(work / name, out_dir / name)
    except OSError as exc:
        raise CertsError(f"cannot write to {out_dir}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CertFiles(
        out_dir / "ca.pem",
        out_dir / "ca-key.pem",
        {role: (out_dir / f"{role}.pem", out_dir / f"{role}-key.pem") for role in ROLES},
    )


def _make_all(openssl: str, work: Path, days: int) -> None:
    """The CA, then each role's key and certificate, in ``work``."""
    _run(
        openssl,
        "req", "-x509", "-new", *KEY_ARGS,
        "-keyout", str(work / "ca-key.pem"), "-out", str(work / "ca.pem"),
        "-days", str(days), "-subj", "/CN=htcsim Dask CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    extensions = work / "leaf.ext"
    for role in ROLES:
        request = work / f"{role}.csr"
        _run(
            openssl,
            "req", "-new", *KEY_ARGS,
            "-keyout", str(work / f"{role}-key.pem"), "-out", str(request),
            "-subj", f"/CN=htcsim-{role}",
        )  # fmt: skip
        extensions.write_text(LEAF_EXTENSIONS + f"subjectAltName = DNS:htcsim-{role}\n")
        _run(
            openssl,
            "x509", "-req", "-in", str(request),
            "-CA", str(work / "ca.pem"), "-CAkey", str(work / "ca-key.pem"),
            "-set_serial", f"0x{secrets.token_hex(16)}",
            "-days", str(days), "-extfile", str(extensions),
            "-out", str(work / f"{role}.pem"),
        )  # fmt: skip


def _run(openssl: str, *args: str) -> None:
    old = os.umask(0o077)  # the keys are never readable by others, not even for a moment
    try:
        done = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise CertsError(f"openssl {args[0]} did not finish in {exc.timeout:.0f} s") from exc
    finally:
        os.umask(old)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise CertsError(f"openssl {args[0]} failed: {lines[-1] if lines else done.returncode}")
