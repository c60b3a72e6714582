"""Slurm's accounting for the test cluster: a private MariaDB and a slurmdbd on 127.0.0.1.

Multifactor priority with QOS and fairshare needs the accounting database:
the QOS, the accounts and the users' shares live there (the exported
``sacctmgr.sh`` writes them), and slurmctld reads the associations and the
usage from slurmdbd. tests/slurm_harness.py starts this when asked
(``start_cluster(..., accounting=True)``), after munged and before slurmctld:

- MariaDB with its own data directory under the run directory, initialised
  by ``mariadb-install-db``, listening on 127.0.0.1 at a free port and on a
  socket in the run directory, run as root (``--user=root``): nothing of the
  host's database is used or touched;
- the ``slurm_acct_db`` database and a ``slurm`` user for it with a random
  password;
- slurmdbd (``slurmdbd.conf`` next to slurm.conf, mode 0600, owned by the
  SlurmUser, root), on 127.0.0.1 at a free port;
- the cluster, one account ``htcsim`` and the workload's users in it
  (sacctmgr.sh sets shares on existing associations only), then the
  exported ``sacctmgr.sh`` itself.

The processes are the harness's: it stops them by PID with the others.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("mariadbd", "mariadb-install-db", "mariadb", "slurmdbd", "sacctmgr", "sacct")
ACCOUNT = "htcsim"
"""The one Slurm account the workload's users belong to."""


def missing_programs(names: tuple[str, ...]) -> list[str]:
    """The programs among ``names`` on neither PATH nor the sbin folders."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [b for b in names if shutil.which(b, path=path) is None]


def missing_binaries() -> list[str]:
    """The MariaDB and slurmdbd programs not found."""
    return missing_programs(BINARIES)


def skip_reason() -> str | None:
    """Why the accounting database cannot run here, or None when it can."""
    missing = missing_binaries()
    if missing:
        return (
            f"MariaDB/slurmdbd not installed ({', '.join(missing)}): "
            "apt-get install mariadb-server slurmdbd"
        )
    return None


@dataclass(frozen=True)
class Accounting:
    """Where the database and slurmdbd of one cluster listen."""

    rundir: Path
    db_port: int
    dbd_port: int
    password: str

    @property
    def datadir(self) -> Path:
        return self.rundir / "mysql"

    @property
    def socket(self) -> Path:
        return self.rundir / "run" / "mariadb.sock"

    def slurm_conf_lines(self) -> list[str]:
        """What slurm.conf says to send the records to this slurmdbd. The
        clients' connections to slurmdbd take their munge socket from
        AccountingStoragePass, not from AuthInfo."""
        return [
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=127.0.0.1",
            f"AccountingStoragePort={self.dbd_port}",
            f"AccountingStoragePass={self.rundir / 'munge' / 'munge.socket.2'}",
        ]

    def write_dbd_conf(self, host: str) -> Path:
        """slurmdbd.conf next to slurm.conf (slurmdbd looks for it there), 0600."""
        rd = self.rundir
        path = rd / "slurmdbd.conf"
        lines = [
            "AuthType=auth/munge",
            f"AuthInfo=socket={rd / 'munge' / 'munge.socket.2'}",
            f"DbdHost={host}",
            "DbdAddr=127.0.0.1",
            f"DbdPort={self.dbd_port}",
            "SlurmUser=root",
            "DebugLevel=info",
            f"LogFile={rd / 'log' / 'slurmdbd.log'}",
            f"PidFile={rd / 'run' / 'slurmdbd.pid'}",
            "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1",
            f"StoragePort={self.db_port}",
            "StorageUser=slurm",
            f"StoragePass={self.password}",
            "StorageLoc=slurm_acct_db",
        ]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        os.chown(path, 0, 0)
        return path


def new_accounting(rundir: Path, db_port: int, dbd_port: int) -> Accounting:
    return Accounting(rundir, db_port, dbd_port, secrets.token_hex(12))


def install_db(acct: Accounting, which: Callable[[str], str]) -> None:
    """An empty MariaDB data directory (system tables only)."""
    acct.datadir.mkdir()
    done = subprocess.run(
        [which("mariadb-install-db"), "--user=root", f"--datadir={acct.datadir}",
         "--auth-root-authentication-method=socket", "--skip-test-db"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"mariadb-install-db: {done.stderr.strip()[-500:]}")


def mariadbd_args(acct: Accounting, which: Callable[[str], str]) -> list[str]:
    return [
        which("mariadbd"), "--no-defaults", "--user=root", f"--datadir={acct.datadir}",
        "--skip-networking=0", "--bind-address=127.0.0.1", f"--port={acct.db_port}",
        f"--socket={acct.socket}", f"--pid-file={acct.rundir / 'run' / 'mariadb.pid'}",
        "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
    ]  # fmt: skip


def sql(acct: Accounting, which: Callable[[str], str], statement: str) -> str:
    """One statement as the database's root, through its socket."""
    done = subprocess.run(
        [which("mariadb"), "--no-defaults", f"--socket={acct.socket}", "-u", "root",
         "-N", "-e", statement],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"mariadb: {done.stderr.strip()}")
    return done.stdout


def create_database(acct: Accounting, which: Callable[[str], str]) -> None:
    """slurm_acct_db and its user, who connects over TCP from 127.0.0.1."""
    sql(
        acct,
        which,
        "CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
        f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{acct.password}'; "
        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;",
    )


def associations(cluster: str, users: tuple[str, ...]) -> list[list[str]]:
    """sacctmgr commands: the cluster, the account and each user in it."""
    commands = [
        ["sacctmgr", "-i", "add", "cluster", cluster],
        ["sacctmgr", "-i", "add", "account", ACCOUNT, f"Cluster={cluster}"],
    ]
    commands.extend(
        ["sacctmgr", "-i", "add", "user", user, f"Account={ACCOUNT}", f"Cluster={cluster}"]
        for user in users
    )
    return commands
