"""A real Slurm on this host, for tests and the validation experiment.

One munged (its own key and socket), one ``slurmctld`` and one ``slurmd``
per node (``slurmd -N NAME``, each on its own port) on 127.0.0.1, all in a
temporary run directory, with a slurm.conf that ``include``s the fragment
``htcsim export slurm`` wrote for the policy under test. The fragment's
settings come last, so they win, as at a site. The node lines are written
here rather than taken from the export: several slurmd on one host need
``NodeAddr`` and ``Port`` on each node, which a site's export does not carry.

Completed jobs are written by ``jobcomp/filetxt`` (one record per job with
its submit, start and end), which needs no accounting database. Daemons run
as root (Slurm starts jobs as their owners only then); munged runs as the
``munge`` account, which needs to traverse the run directory, so it lives
under /tmp with mode 0755 rather than under pytest's private tmp.

With ``accounting=True`` a private MariaDB and a slurmdbd start too
(tests/slurm_dbd.py) and the records also go to the accounting database,
which ``sacct`` reads; the exported ``sacctmgr.sh`` then sets up the QOS and
the users' shares before slurmctld starts.

Everything started is stopped by PID in :meth:`SlurmCluster.stop`;
:meth:`SlurmCluster.remove` deletes the run directory after.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests import slurm_dbd
from tests.slurm_dbd import Accounting

READY_S = 120.0
"""Bound on the wait for munged, slurmctld and every node to be up and idle."""
STOP_S = 15.0
"""How long a daemon gets to exit after SIGTERM before SIGKILL."""
BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol")


def missing_binaries() -> list[str]:
    """The Slurm and munge programs not found (the tests skip when any is)."""
    return slurm_dbd.missing_programs(BINARIES)


def skip_reason() -> str | None:
    """Why a real Slurm cannot run here, or None when it can."""
    missing = missing_binaries()
    if missing:
        return f"Slurm/munge not installed ({', '.join(missing)}): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "a real Slurm here needs root (slurmd starts jobs as their owners)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' account (installed with the munge package)"
    return None


def accounts_reason(users: tuple[str, ...] | list[str]) -> str | None:
    """Why jobs cannot be submitted as these Unix accounts, or None."""
    missing = []
    for user in users:
        try:
            pwd.getpwnam(user)
        except KeyError:
            missing.append(user)
    return f"accounts {', '.join(missing)} missing (.ci/run creates them)" if missing else None


@contextlib.contextmanager
def running_cluster(fragment: Path, text: str, nodes: tuple[Node, ...]) -> Iterator[SlurmCluster]:
    """A cluster on ``nodes`` that includes ``fragment`` (written with
    ``text``), stopped and removed when the block ends."""
    fragment.write_text(text)
    cluster = start_cluster(fragment, nodes)
    try:
        yield cluster
    finally:
        cluster.stop()
        cluster.remove()


def _which(name: str) -> str:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(name)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int


@dataclass
class SlurmCluster:
    """A running Slurm: ``env`` is what client commands need (SLURM_CONF)."""

    rundir: Path
    nodes: tuple[Node, ...]
    fragment: Path
    partition: str = "batch"
    accounting: Accounting | None = None
    users: tuple[str, ...] = ()  # associated with the account (with accounting)
    sacctmgr_script: Path | None = None  # the exported sacctmgr.sh (with accounting)
    pids: dict[str, int] = field(default_factory=dict)
    ctld_started: float = 0.0  # epoch seconds just before slurmctld was spawned
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.rundir / "slurm.conf"

    @property
    def jobcomp(self) -> Path:
        return self.rundir / "jobcomp.txt"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = env.get("PATH", "") + os.pathsep + "/usr/sbin"
        return env

    def run(self, *args: str, timeout: float = 60.0) -> str:
        """A Slurm client command against this cluster; its stdout."""
        done = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def _spawn(self, key: str, args: list[str], log: str, user: str | None = None) -> None:
        out = open(self.rundir / "log" / log, "wb")  # noqa: SIM115 - kept open for the daemon
        if user is not None:
            args = [_which("runuser"), "-u", user, "--", *args]
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        out.close()
        self._procs.append(proc)
        self.pids[key] = proc.pid

    def _wait(self, what: str, ready: object, deadline: float) -> None:
        while time.monotonic() < deadline:
            if callable(ready) and ready():
                return
            for proc in self._procs:
                if proc.poll() is not None:
                    code = proc.returncode
                    raise RuntimeError(f"{proc.args!r} exited with {code}: {self._logs()}")
            time.sleep(0.2)
        raise TimeoutError(f"{what} not ready after {READY_S:.0f} s: {self._logs()}")

    def _logs(self) -> str:
        tails = []
        for log in sorted((self.rundir / "log").glob("*")):
            text = log.read_text(errors="replace").strip().splitlines()[-3:]
            if text:
                tails.append(f"[{log.name}] " + " | ".join(text))
        return "; ".join(tails)

    def idle_nodes(self) -> int:
        try:
            out = self.run("sinfo", "-h", "-N", "-t", "idle", "-o", "%N", timeout=10)
        except (RuntimeError, subprocess.TimeoutExpired):
            return 0
        return len(set(out.split()))

    def start(self) -> None:
        deadline = time.monotonic() + READY_S
        munge = self.rundir / "munge"
        key = munge / "munge.key"
        sock = munge / "munge.socket.2"
        subprocess.run(
            [_which("runuser"), "-u", "munge", "--", _which("mungekey"), "--create",
             f"--keyfile={key}"],
            check=True, capture_output=True,
        )  # fmt: skip
        self._spawn(
            "munged",
            [
                _which("munged"), "--foreground", f"--socket={sock}", f"--key-file={key}",
                f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
            "munged.out",
            user="munge",
        )  # fmt: skip
        self._wait("munged", sock.exists, deadline)
        if self.accounting is not None:
            self._start_accounting(self.accounting, deadline)
        # its priority and usage thread ticks every PriorityCalcPeriod from here
        self.ctld_started = time.time()
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-c", "-i", "-f", str(self.conf)],
                    "slurmctld.out")  # fmt: skip

        def ctld_up() -> bool:
            try:
                return "UP" in self.run("scontrol", "ping", timeout=10)
            except (RuntimeError, subprocess.TimeoutExpired):
                return False

        self._wait("slurmctld", ctld_up, deadline)
        for node in self.nodes:
            (self.rundir / "spool" / f"slurmd.{node.name}").mkdir(parents=True, exist_ok=True)
            self._spawn(
                f"slurmd.{node.name}",
                [_which("slurmd"), "-D", "-N", node.name, "-f", str(self.conf)],
                f"slurmd.{node.name}.out",
            )
        self._wait("the nodes", lambda: self.idle_nodes() >= len(self.nodes), deadline)

    def _start_accounting(self, acct: Accounting, deadline: float) -> None:
        """MariaDB, slurmdbd, the associations and sacctmgr.sh (before slurmctld,
        which then loads them from slurmdbd as it starts)."""
        slurm_dbd.install_db(acct, _which)
        self._spawn("mariadbd", slurm_dbd.mariadbd_args(acct, _which), "mariadbd.out")

        def db_up() -> bool:
            try:
                return slurm_dbd.sql(acct, _which, "SELECT 1").strip() == "1"
            except (RuntimeError, subprocess.TimeoutExpired):
                return False

        self._wait("mariadbd", db_up, deadline)
        slurm_dbd.create_database(acct, _which)
        acct.write_dbd_conf(socket.gethostname().split(".")[0])
        self._spawn("slurmdbd", [_which("slurmdbd"), "-D"], "slurmdbd.out")

        def dbd_up() -> bool:
            try:
                self.run("sacctmgr", "-n", "-P", "show", "cluster", timeout=10)
            except (RuntimeError, subprocess.TimeoutExpired):
                return False
            return True

        self._wait("slurmdbd", dbd_up, deadline)
        for command in slurm_dbd.associations("htcsimval", self.users):
            self.run(*command)
        if self.sacctmgr_script is not None:
            self.run("sh", str(self.sacctmgr_script))

    def stop(self) -> None:
        """Cancel every job and wait (at most STOP_S) for them to end, then
        SIGTERM each daemon started here (slurmd first), SIGKILL after STOP_S,
        and last kill the step daemons of jobs still left: a ``slurmstepd``
        whose slurmd is gone waits for it forever."""
        if self._procs:  # slurmctld may answer (else squeue fails at once)
            with contextlib.suppress(subprocess.SubprocessError, OSError, RuntimeError):
                jobs = self.run("squeue", "-h", "-o", "%i", timeout=STOP_S).split()
                if jobs:
                    self.run("scancel", "--full", *jobs, timeout=STOP_S)
                    deadline = time.monotonic() + STOP_S
                    while self.run("squeue", "-h", "-o", "%i", timeout=STOP_S).split():
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.2)
        steps = self._step_daemons()
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_S)
        self._procs.clear()
        for pid in steps + self._step_daemons():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _step_daemons(self) -> list[int]:
        """The ``slurmstepd`` processes of this cluster (their logs are in its
        run directory)."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if not (entry / "cmdline").read_bytes().startswith(b"slurmstepd"):
                    continue
                links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
            except OSError:
                continue
            if any(link.startswith(str(self.rundir)) for link in links):
                out.append(int(entry.name))
        return out

    def remove(self) -> None:
        """Delete the run directory (after :meth:`stop`)."""
        shutil.rmtree(self.rundir, ignore_errors=True)


def write_conf(cluster: SlurmCluster, ctld_port: int, node_ports: list[int]) -> None:
    """slurm.conf: what one host needs, the nodes, then ``include`` of the fragment."""
    rd = cluster.rundir
    host = socket.gethostname().split(".")[0]
    lines = [
        "# a single-host Slurm for htcsim's tests: everything on 127.0.0.1",
        "ClusterName=htcsimval",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        "CommunicationParameters=NoInAddrAny",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={rd / 'munge' / 'munge.socket.2'}",
        f"StateSaveLocation={rd / 'state'}",
        f"SlurmdSpoolDir={rd / 'spool'}/slurmd.%n",
        f"SlurmctldPidFile={rd / 'run'}/slurmctld.pid",
        f"SlurmdPidFile={rd / 'run'}/slurmd.%n.pid",
        f"SlurmctldLogFile={rd / 'log'}/slurmctld.log",
        f"SlurmdLogFile={rd / 'log'}/slurmd.%n.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=error",
        # no cgroups on a test machine; more CPUs per node than the host has
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SlurmdParameters=config_overrides",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        *(
            cluster.accounting.slurm_conf_lines()
            if cluster.accounting is not None
            else ["AccountingStorageType=accounting_storage/none"]
        ),
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={cluster.jobcomp}",
        "MinJobAge=300",
        "MessageTimeout=20",
        "SlurmdTimeout=300",
        "ReturnToService=2",
        "KillWait=5",
        "InactiveLimit=0",
        "Waittime=0",
        "MailProg=/bin/true",
    ]
    for node, port in zip(cluster.nodes, node_ports, strict=True):
        lines.append(
            f"NodeName={node.name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} "
            f"CPUs={node.cpus} RealMemory=1024 State=UNKNOWN"
        )
    lines.append(
        f"PartitionName={cluster.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
    )
    lines.append(f"include {cluster.fragment}")
    cluster.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")


def start_cluster(
    fragment: Path,
    nodes: tuple[Node, ...],
    accounting: bool = False,
    users: tuple[str, ...] = (),
) -> SlurmCluster:
    """Start a cluster of ``nodes`` under the slurm.conf ``fragment``; stop() it after.

    ``accounting``: with MariaDB and slurmdbd, ``users`` in one account, and the
    ``sacctmgr.sh`` exported next to the fragment run before slurmctld starts."""
    rundir = Path(tempfile.mkdtemp(prefix="htcsim-slurm-", dir="/tmp"))
    rundir.chmod(0o755)
    for sub in ("state", "spool", "log", "run", "munge"):
        (rundir / sub).mkdir()
    munge = pwd.getpwnam("munge")
    os.chown(rundir / "munge", munge.pw_uid, munge.pw_gid)
    (rundir / "munge").chmod(0o755)
    local = rundir / "htcsim-slurm.conf"
    shutil.copy(fragment, local)
    cluster = SlurmCluster(rundir=rundir, nodes=nodes, fragment=local, users=users)
    if accounting:
        cluster.accounting = slurm_dbd.new_accounting(rundir, free_port(), free_port())
        script = fragment.parent / "sacctmgr.sh"
        if script.exists():
            cluster.sacctmgr_script = rundir / "sacctmgr.sh"
            shutil.copy(script, cluster.sacctmgr_script)
    write_conf(cluster, free_port(), [free_port() for _ in nodes])
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        cluster.remove()
        raise
    return cluster
