"""The shepherd: the one process that starts, watches and reaps the agent's jobs.

Why a process of its own (as Slurm's slurmstepd or HTCondor's starter): it
is the parent of every job, so it learns every exit code and resource use
from the kernel (``wait4``), even while the agent is down, and it survives
the agent (its own session): an agent killed with ``kill -9`` reconnects on
restart and is told which jobs still run and how the others ended; nothing
is guessed. It also takes process creation off the agent's interpreter: the
agent sends a line of JSON per job, the shepherd (single-threaded, so
``fork`` is safe) forks, sets the child up and execs the job, no shell in
between.

Supervision: the process the agent starts is not the worker but its
*keeper* (``keeper``), a tiny parent that forks the worker, restarts it at
once when it dies and reaps the jobs the dead worker left (they are
reparented to the keeper, a child subreaper), recording their statuses for
the next worker. Each worker journals every job it starts, by pid and start
time, before the agent hears of it (``journal``). A new worker reconciles
before it serves (``adoption``): a job whose process still runs as the keeper's child is
adopted (a pidfd tells its end, the keeper its status); one that ended has
its status from the keeper's record (or the previous worker's ``exiting``
line); one that runs but whose status can no longer be learned (the keeper
was replaced too) is killed, every process of it (its cgroup, or its session
found by pid and start time), and reported *lost*; and every process of a job
the journal does not name (a start the dead worker had not written yet) is
killed. The agent requeues lost jobs as it does those of a failed node.

Protocol: JSON lines over a Unix socket ``shepherd.sock`` inside the run
directory, which belongs to the agent's account and is mode 0700 (nobody
else can even reach the socket); the keeper binds it once, so a restarted
worker listens at the same path. A connection is closed before a byte is
read unless its peer (``SO_PEERCRED``) has the shepherd's own uid, and its
first line must be ``{"op": "hello", "secret": ...}`` with the secret the
agent handed the shepherd on its stdin (kept in ``shepherd.secret``, 0600,
for a restarted agent): only then does it replace the current agent's
connection (which is told ``displaced``); otherwise it is closed and the
current one is kept. Agent -> shepherd: ``launch`` (a list of jobs),
``signal``, ``release`` (the agent committed an exit: forget it), ``ping``
(answered ``pong`` in order, and ``alive`` from within a long launch or a
long round of events: the agent's heartbeat), ``shutdown``. Shepherd -> agent: ``hello`` (after the
handshake: its pid and start time, its keeper's, how many times it was
restarted and why, running jobs, exits not yet released), ``started`` (pid
or error per job), ``exit`` (``lost`` set when the status is unknown),
``keeper`` (the keeper died), ``displaced``.

Jobs: each runs in a new session (so its own process group), pinned to its
CPUs, with its memory limit; with ``uid``/``gid``/``groups`` in its payload
it runs as that account (``setgroups``, ``setgid``, ``setuid`` in the child,
in that order), and its stdout/stderr are opened (``O_NOFOLLOW``) and its cwd
entered *as that account*, so ordinary file permissions decide what it may
write. A failure of that set-up comes back through a close-on-exec pipe as
the job's launch error; a program that cannot be executed is reported as the
job's exit, 127 or 126, as a shell does.

Containment: every process a job starts dies with it (cancel, walltime,
kill, and when the job's main process exits, as Slurm's proctrack/cgroup),
by one of:

* ``cgroup``: a cgroup v2 per job (``<agent's cgroup>/htcsim-<run>/job-N``),
  entered by the child itself before exec, so nothing escapes it; a
  SIGTERM goes to every process in it, a SIGKILL and the main process's end
  write ``cgroup.kill``, and the cgroup is removed once empty. It also
  carries ``memory.max`` where the memory controller is enabled.
* ``subreaper``: the shepherd is a child subreaper (``PR_SET_CHILD_SUBREAPER``):
  orphans of its jobs are reparented to it, not to init. It samples ``/proc``
  (every ``SCAN_S`` while jobs run, before each signal and at each exit) to
  learn each job's descendants by parent chain, session or process group,
  and kills all of them when the job ends. Limits: a process that leaves its
  session and whose parent exits within one sampling interval is found only
  as an orphan of the shepherd; it is attributed by its ``HTCSIM_JOB_ID``
  variable if it kept one, else killed at once (it can only come from one of
  the jobs). Pid reuse is guarded by the start time. A process the shepherd
  cannot signal (another account's, when the shepherd is not root) survives.

GPU devices: a job whose payload carries ``deny_devices`` (``[type, major,
minor]`` of the device files of GPUs that are not its own) is put, where the
cgroup v1 ``devices`` controller is mounted and writable, in a devices cgroup
of its own (``<devices mount>/<the shepherd's devices cgroup>/htcsim-<run>/job-N``)
with one ``devices.deny`` line per device (``c 195:1 rwm``), entered by the
child before it drops privileges and execs: opening another job's GPU fails
with EPERM, whatever the job's environment says. It is removed once empty.
Without that controller (a pure cgroup v2 host needs a BPF program,
BPF_PROG_TYPE_CGROUP_DEVICE, which is not implemented) jobs run without it;
``detect_devices_cgroup`` says why, and the agent logs it at start.

Only the standard library is imported: it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from htcsim.agent.executors.base import exit_record
from htcsim.agent.executors.local import proc
from htcsim.agent.executors.local.adoption import Adoption
from htcsim.agent.executors.local.journal import JOURNAL_FILE, Journal, ReapedLog
from htcsim.agent.executors.local.keeper import KeeperLink, keep
from htcsim.agent.executors.local.proc import proc_table
from htcsim.agent.executors.local.runfiles import (
    IDENTITY_FILE,
    MAX_PENDING,
    SECRET_FILE,
    SOCKET_FILE,
    listen,
    secure_dir,
    socket_path,
    unix_address,
    write_atomic,
)

RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
"""Python ignores these; a job gets them back at their default action."""
LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
"""O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of hanging the
launch; it is cleared once the file is open."""
HANDSHAKE_S = 10.0
"""A connection that has not presented the secret within this long is closed."""
SCAN_S = 0.2
"""How often the subreaper samples /proc while jobs run."""
SHUTDOWN_WAIT_S = 2.0
"""At shutdown: how long the worker waits for the jobs it killed to end."""
CONTAINMENTS = ("cgroup", "subreaper")
__all__ = [
    "MAX_PENDING",
    "SECRET_FILE",
    "SOCKET_FILE",
    "Shepherd",
    "detect_devices_cgroup",
    "proc_table",
    "secure_dir",
    "socket_path",
    "unix_address",
]


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def devices_v1_mount(mounts: Path = Path("/proc/self/mounts")) -> Path | None:
    """Where the cgroup v1 ``devices`` controller is mounted, or None."""
    with contextlib.suppress(OSError):
        for line in mounts.read_text().splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[2] == "cgroup" and "devices" in fields[3].split(","):
                return Path(fields[1])
    return None


def detect_devices_cgroup(
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    mounts: Path = Path("/proc/self/mounts"),
) -> tuple[Path | None, str]:
    """The cgroup v1 devices folder under which a devices cgroup per job can
    be made (this process's own devices cgroup), and why (not)."""
    root = devices_v1_mount(mounts)
    if root is None:
        v2 = any(
            len(line.split()) > 2 and line.split()[2] == "cgroup2" for line in _lines_of(mounts)
        )
        why = "no cgroup v1 devices controller mounted"
        if v2:
            why += (
                " (on a cgroup v2 host device access is controlled by a BPF program, "
                "BPF_PROG_TYPE_CGROUP_DEVICE, which htcsim does not load)"
            )
        return None, why
    rel = None
    try:
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "devices" in controllers.split(","):
                rel = path
    except (OSError, ValueError) as exc:
        return None, f"cannot read {proc_cgroup}: {exc}"
    if rel is None:
        return None, f"{proc_cgroup} has no devices entry"
    base = root / rel.strip().lstrip("/")
    if not os.access(base, os.W_OK):
        return None, f"the devices cgroup {base} is not writable"
    probe = base / f"htcsim-probe-{os.getpid()}"
    try:
        probe.mkdir()
        try:
            usable = (probe / "devices.deny").exists() and (probe / "cgroup.procs").exists()
        finally:
            probe.rmdir()
    except OSError as exc:
        return None, f"cannot make a devices cgroup under {base}: {exc}"
    if not usable:
        return None, f"no devices.deny under {base}"
    return base, f"devices cgroup v1 at {base}: a job is denied the other GPUs' device files"


def _lines_of(path: Path) -> list[str]:
    with contextlib.suppress(OSError):
        return path.read_text().splitlines()
    return []


def _still_allowed(listing: str, kind: str, major: int, minor: int) -> bool:
    """Whether a devices cgroup whose ``devices.list`` is ``listing`` lets
    (any access to) the device through. A default-allow cgroup lists only
    ``a *:* rwm`` whatever it denies, so the answer is then False: only a
    default-deny (allow list) cgroup can be checked, and must be."""
    entries = [line.split() for line in listing.splitlines() if line.strip()]
    if [e[:2] for e in entries] == [["a", "*:*"]]:
        return False
    for entry in entries:
        if len(entry) < 2 or ":" not in entry[1]:
            continue
        emajor, eminor = entry[1].split(":", 1)
        if entry[0] in ("a", kind) and emajor in ("*", str(major)) and eminor in ("*", str(minor)):
            return True
    return False


class _Forked(NamedTuple):
    """A job's child between its fork and its exec: the end of its report pipe."""

    job_id: int
    pid: int
    report_fd: int


class Shepherd(Adoption):
    """One worker: serves the agent's connection, starts, watches and reaps the jobs.

    ``link``: what its keeper handed it (the listening socket, the lock, the
    keeper's records); None runs a worker on its own (it binds the socket and
    takes the lock itself, and nothing it did not start can be adopted with
    its status).
    """

    def __init__(
        self,
        run_dir: Path,
        cgroup_base: Path | None,
        *,
        secret: str,
        containment: str = "subreaper",
        memory_cgroup: bool = False,
        devices_cgroup: Path | None = None,
        link: KeeperLink | None = None,
    ) -> None:
        if containment not in CONTAINMENTS:
            raise ValueError(f"containment must be one of {CONTAINMENTS}, not {containment!r}")
        if containment == "cgroup" and cgroup_base is None:
            raise ValueError("containment cgroup needs a cgroup v2 folder")
        if len(secret) < 32:
            raise ValueError("the shepherd needs the agent's secret")
        self.run_dir = run_dir
        secure_dir(run_dir)
        self.link = link
        self.secret = secret.encode()
        self.containment = containment
        self.memory_cgroup = memory_cgroup and cgroup_base is not None
        self.cgroup_root: Path | None = None
        if cgroup_base is not None and (containment == "cgroup" or self.memory_cgroup):
            digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
            self.cgroup_root = cgroup_base / f"htcsim-{digest}"
        self.devices_root: Path | None = None
        if devices_cgroup is not None:
            digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
            self.devices_root = devices_cgroup / f"htcsim-{digest}"
        if containment == "subreaper":
            proc.become_subreaper()
        if link is not None:
            self.lock = link.lock  # the keeper's, shared: held while either lives
        else:
            # one shepherd per run directory, for its whole life (the lock is not inherited)
            self.lock = open(run_dir / "shepherd.lock", "a")  # noqa: SIM115
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.lock.close()
                raise RuntimeError(f"another shepherd serves {run_dir}") from None
        # What a predecessor on this run directory killed with SIGKILL left:
        # empty cgroups (rmdir refuses a populated one, so those of jobs that
        # still run stay). Only this run's: an empty cgroup of another
        # shepherd may be a job's about to be entered.
        for root in (self.cgroup_root, self.devices_root):
            if root is not None:
                for stale in [*root.glob("job-*"), root / "shepherd", root]:
                    with contextlib.suppress(OSError):
                        stale.rmdir()
        # The shepherd lives in a leaf of its own beside its jobs' cgroups, so it
        # can step into a job's cgroup to spawn it and back (cgroup v2 puts
        # processes in leaves only, once a controller is enabled for children).
        self.base_cgroup = cgroup_base
        self.home_cgroup: Path | None = None
        self.in_cgroup: Path | None = cgroup_base  # the cgroup this process is in
        if self.cgroup_root is not None:
            self.home_cgroup = self.cgroup_root / "shepherd"
            self.home_cgroup.mkdir(parents=True, exist_ok=True)
            self._move_self(self.home_cgroup)
            if self.memory_cgroup:  # the jobs' cgroups get memory.max
                (self.cgroup_root / "cgroup.subtree_control").write_text("+memory")
        self.sel = selectors.DefaultSelector()
        self.listener = link.listener if link is not None else listen(run_dir)
        self.sel.register(self.listener, selectors.EVENT_READ, "listen")
        self.client: socket.socket | None = None
        self.inbuf = b""
        self.alive_seq = 0  # the last ping answered from within a long launch
        self.pending: dict[socket.socket, tuple[float, bytes]] = {}  # -> (deadline, bytes)
        self.jobs: dict[int, tuple[int, int]] = {}  # job -> (pid, pidfd)
        self.by_fd: dict[int, int] = {}
        self.starts: dict[int, int] = {}  # job -> its process's start time
        self.adopted: set[int] = set()  # jobs a previous worker started (the keeper's children)
        self.awaiting: dict[tuple[int, int], int] = {}  # (pid, start) of an adopted job that ended
        self.cgroups: dict[int, Path] = {}
        self.devices_groups: dict[int, Path] = {}
        self.doomed_cgroups: set[Path] = set()  # killed; removed once empty
        self.killed: set[int] = set()  # jobs sent SIGKILL
        self.members: dict[int, dict[int, int]] = {}  # subreaper: job -> {pid: start time}
        self.ended: set[int] = set()  # subreaper: jobs whose remaining members must die
        self.next_scan = 0.0
        self.affinity = tuple(sorted(os.sched_getaffinity(0)))
        self.cwd = os.getcwd()
        self.me = os.getpid()
        self.my_start = proc.start_time(self.me) or 0
        self.journal = Journal(run_dir / JOURNAL_FILE)
        self.keeper: proc.Process | None = None
        self.keeper_note = "no keeper: this worker runs on its own"
        self.reaped: ReapedLog | None = None
        if link is not None:
            self.keeper = proc.Process.open(link.keeper_pid, link.keeper_start)
            self.keeper_note = f"the keeper {link.keeper_pid} watches this worker"
            if self.keeper is None:
                self.keeper_note = f"the keeper {link.keeper_pid} is gone"
            else:
                self.sel.register(self.keeper.fd, selectors.EVENT_READ, "keeper")
            self.reaped = ReapedLog(link.reaped_path)
            self.sel.register(link.doorbell, selectors.EVENT_READ, "doorbell")
        self._reconcile()
        keeper_id = [link.keeper_pid, link.keeper_start] if link is not None else None
        write_atomic(
            run_dir / IDENTITY_FILE,
            json.dumps({"worker": [self.me, self.my_start], "keeper": keeper_id}) + "\n",
        )
        self.running = True
        if link is not None:
            with contextlib.suppress(OSError):
                os.write(link.ready, b"r")

    @property
    def exits(self) -> dict[int, dict[str, Any]]:
        """Exits reported, not yet released by the agent."""
        return self.journal.exits

    # ------------------------------------------------------------------ I/O

    def send(self, message: dict[str, Any]) -> None:
        if self.client is None:
            return
        try:
            self.client.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            self._drop_client()

    def _drop_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.client)
            self.client.close()
            self.client = None
            self.inbuf = b""

    def _accept(self) -> None:
        """A new connection: kept only if it is the shepherd's own uid, and
        pending (not yet the agent) until it presents the secret."""
        conn, _ = self.listener.accept()
        try:
            uid = peer_uid(conn)
        except OSError:
            uid = -1
        if uid != os.geteuid() or len(self.pending) >= MAX_PENDING:
            conn.close()  # before reading a byte
            return
        conn.setblocking(False)
        self.pending[conn] = (time.monotonic() + HANDSHAKE_S, b"")
        self.sel.register(conn, selectors.EVENT_READ, "pending")

    def _close_pending(self, conn: socket.socket) -> None:
        self.pending.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn)
        conn.close()

    def _read_pending(self, conn: Any) -> None:
        """The first line of a pending connection: the agent's handshake, or it is closed."""
        if conn not in self.pending:
            return
        deadline, buf = self.pending[conn]
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        buf += data
        if b"\n" not in buf:
            if not data or len(buf) > 4096:
                self._close_pending(conn)
            else:
                self.pending[conn] = (deadline, buf)
            return
        line, rest = buf.split(b"\n", 1)
        try:
            hello = json.loads(line)
            given = str(hello["secret"]).encode() if hello.get("op") == "hello" else b""
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeError):
            given = b""
        if not hmac.compare_digest(given, self.secret):
            self._close_pending(conn)  # the current agent keeps its connection
            return
        self.pending.pop(conn)
        self.sel.unregister(conn)
        conn.setblocking(True)
        if self.client is not None:
            self.send({"op": "displaced"})
        self._drop_client()  # one agent at a time: the newest that knows the secret
        self.client = conn
        self.inbuf = b""
        self.sel.register(conn, selectors.EVENT_READ, "client")
        self.send(self._hello())
        if rest:
            self.inbuf = rest
            self._lines()

    def _hello(self) -> dict[str, Any]:
        """What a newly connected agent is told: who serves it, what runs, what ended."""
        link = self.link
        running = {str(j): pid for j, (pid, _) in self.jobs.items()}
        running |= {str(j): pid for (pid, _), j in self.awaiting.items()}  # status on its way
        return {
            "op": "hello",
            "pid": self.me,
            "start": self.my_start,
            "keeper": {
                "pid": link.keeper_pid,
                "start": link.keeper_start,
                "alive": self._keeper_alive(),
                "note": self.keeper_note,
            }
            if link is not None
            else None,
            "generation": link.generation if link is not None else 0,
            "restart": {"reason": link.restart_reason, "time": link.restart_time}
            if link is not None and link.restart_reason
            else None,
            "replaced": link.replaced if link is not None else "",
            "containment": self.containment,
            "devices_cgroup": str(self.devices_root.parent) if self.devices_root else "",
            "running": running,
            "exits": list(self.exits.values()),
        }

    def _keepalive(self) -> None:
        """From within a long operation: answer the agent's heartbeat pings that
        arrived meanwhile with ``alive`` (liveness only: the ``pong`` that
        confirms the messages before a ping comes when the ping's turn comes)."""
        if self.client is None:
            return
        try:
            data = self.client.recv(1 << 20, socket.MSG_DONTWAIT)
        except OSError:
            return
        if not data:
            return  # nothing new (or the end, which the loop sees)
        start = self.inbuf.rfind(b"\n") + 1  # pings can only be in the new lines
        self.inbuf += data
        for line in self.inbuf[start:].split(b"\n")[:-1]:
            if b'"ping"' not in line:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                seq = int(json.loads(line)["seq"])
                if seq > self.alive_seq:
                    self.alive_seq = seq
                    self.send({"op": "alive", "seq": seq})

    def _expire_pending(self) -> None:
        now = time.monotonic()
        for conn, (deadline, _) in list(self.pending.items()):
            if deadline < now:
                self._close_pending(conn)

    def _read_client(self, conn: Any) -> None:
        if conn is not self.client:
            return  # an agent already dropped in this round of events (a failed send, a newer one)
        try:  # (a keepalive may have read what made it readable)
            data = self.client.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            data = None
        except OSError:
            data = b""
        if data == b"":
            self._drop_client()
            return
        self.inbuf += data or b""
        self._lines()

    def _lines(self) -> None:
        """Handle every complete line received, in order (those a keepalive
        reads meanwhile too)."""
        while b"\n" in self.inbuf:
            *lines, self.inbuf = self.inbuf.split(b"\n")
            for line in lines:
                if line.strip():
                    try:
                        self._handle(json.loads(line))
                    except Exception:  # one bad message never stops the shepherd
                        traceback.print_exc()

    def _handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "launch":
            # Every job of the message is forked first and only then waited for:
            # the children set themselves up (cgroup, identity, logs) and exec
            # side by side instead of one after the other.
            # A job of the shepherd's own account is spawned from inside its
            # cgroup: the shepherd steps from one job's cgroup to the next and
            # home once, after the message.
            forked = []
            try:
                for job in message["jobs"]:
                    forked.append(self._try_fork(job))
                    self._keepalive()
            finally:
                self._move_self(self.home_cgroup)
            results = []
            for one in forked:
                results.append(self._try_settle(one))
                self._keepalive()
            self.send({"op": "started", "jobs": results})
        elif op == "signal":
            self._signal(int(message["job"]), int(message["sig"]))
        elif op == "release":
            for job in message["jobs"]:
                self.journal.release(int(job))
        elif op == "ping":
            self.send({"op": "pong", "seq": message["seq"]})
        elif op == "shutdown":
            self.running = False

    # ------------------------------------------------------------------ jobs

    def _try_fork(self, job: dict[str, Any]) -> _Forked | dict[str, Any]:
        """``_fork``, with any failure turned into that job's error: one bad
        job never stops the shepherd."""
        try:
            return self._fork(job)
        except Exception as exc:
            return {"job": job.get("job"), "error": f"cannot start: {exc}"}

    def _try_settle(self, forked: _Forked | dict[str, Any]) -> dict[str, Any]:
        """``_settle``, with any failure turned into that job's error."""
        if isinstance(forked, dict):
            return forked
        try:
            return self._settle(forked)
        except Exception as exc:
            if forked.job_id not in self.jobs:
                self.journal.forget(forked.job_id)
            return {"job": forked.job_id, "error": f"cannot start: {exc}"}

    def _fork(self, job: dict[str, Any]) -> _Forked | dict[str, Any]:
        """Fork one job's child (it sets itself up and execs); ``_settle`` learns how it went."""
        job_id = int(job["job"])
        if job_id in self.jobs:
            return {"job": job_id, "error": "already running"}
        uid = int(job.get("uid", -1))
        if uid >= 0 and os.geteuid() != 0 and uid != os.geteuid():
            return {
                "job": job_id,
                "error": f"the shepherd runs as uid {os.geteuid()}, it cannot run jobs as {uid}",
            }
        group = self._job_cgroup(job_id, int(job.get("mem_mib") or 0))
        try:
            devices = self._devices_cgroup(job_id, job.get("deny_devices") or ())
        except BaseException:
            self._remove_cgroup(job_id)
            raise
        if uid < 0 and devices is None:
            return self._spawn(job, group)
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover (the child execs or _exits)
                os.close(r)
                self._child(job, group, w, devices)
        except BaseException:
            os.close(r)
            os.close(w)
            self._remove_cgroup(job_id)
            raise
        os.close(w)
        self._journal_start(job_id, pid)  # before anything else: a successor must know it
        return _Forked(job_id, pid, r)

    def _spawn(self, job: dict[str, Any], group: Path | None) -> dict[str, Any]:
        """A job of the shepherd's own account: ``posix_spawn`` (no copy of this
        process, several times cheaper than a fork), with everything the child
        needs set up here around the call, since this process is single-threaded:
        its directory, the logs (``O_NOFOLLOW``), CPU pinning, the memory rlimit,
        and its cgroup (this process steps into the job's cgroup for the call, so
        the job is born inside it and nothing it starts can be outside)."""
        job_id = int(job["job"])
        fds: list[int] = []
        try:
            try:
                os.chdir(job["cwd"])
            except OSError as exc:
                return self._spawn_failed(job_id, group, f"cannot enter {job['cwd']}", exc)
            for key in ("stdout", "stderr"):
                if key == "stderr" and job["stderr"] == job["stdout"]:
                    fds.append(fds[0])
                    continue
                try:
                    fd = os.open(job[key], LOG_FLAGS, 0o644)
                except OSError as exc:
                    return self._spawn_failed(job_id, group, f"cannot open {key} {job[key]}", exc)
                fds.append(fd)
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            cpus = tuple(job.get("cpus") or self.affinity)
            mem = int(job.get("mem_mib") or 0)
            rlimit = mem and not (group is not None and self.memory_cgroup)
            limit = resource.getrlimit(resource.RLIMIT_AS)
            not_run: OSError | None = None
            try:
                if cpus != self.affinity:
                    os.sched_setaffinity(0, cpus)
                if rlimit:
                    resource.setrlimit(resource.RLIMIT_AS, (mem << 20, limit[1]))
                self._move_self(group)
                try:
                    pid = os.posix_spawnp(
                        job["argv"][0],
                        job["argv"],
                        job["env"],
                        file_actions=[
                            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                            (os.POSIX_SPAWN_DUP2, fds[0], 1),
                            (os.POSIX_SPAWN_DUP2, fds[1], 2),
                        ],
                        setsid=True,
                        setsigmask=(),
                        setsigdef=(*RESET_SIGNALS, signal.SIGTERM),
                    )
                except OSError as exc:
                    not_run = exc
            finally:
                # the shepherd stays in the job's cgroup: the next job's spawn
                # moves it on, the end of the message home (_handle)
                if rlimit:
                    resource.setrlimit(resource.RLIMIT_AS, limit)
                if cpus != self.affinity:
                    os.sched_setaffinity(0, self.affinity)
            if not_run is not None:
                # the job "ran" and failed to exec, as a shell reports it: 127 / 126
                code = 127 if isinstance(not_run, FileNotFoundError) else 126
                os.write(
                    fds[1], f"htcsim: cannot run {job['argv'][0]}: {not_run.strerror}\n".encode()
                )
                self._remove_cgroup(job_id)
                self._record_exit(job_id, code, 0, -1.0, -1.0)
                return {"job": job_id, "pid": 0}
        except BaseException:
            self._remove_cgroup(job_id)
            raise
        finally:
            for fd in set(fds):
                os.close(fd)
            os.chdir(self.cwd)
        return self._started(job_id, pid)

    def _spawn_failed(
        self, job_id: int, group: Path | None, what: str, exc: OSError
    ) -> dict[str, Any]:
        self._remove_cgroup(job_id)
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP:
            reason = "it is a symbolic link (refused)"
        return {"job": job_id, "error": f"{what}: {reason}"}

    def _move_self(self, group: Path | None) -> None:
        """Put this process in ``group`` (a leaf of its own cgroup folder)."""
        if group is not None and group != self.in_cgroup:
            with open(group / "cgroup.procs", "w") as f:
                f.write("0")
            self.in_cgroup = group

    def _journal_start(self, job_id: int, pid: int) -> None:
        """Record (pid, start time) of a job's new process: a child of this worker
        not yet reaped, so the pid is still its own."""
        start = proc.start_time(pid) or 0
        self.starts[job_id] = start
        self.journal.started(job_id, pid, start)

    def _started(self, job_id: int, pid: int, *, journaled: bool = False) -> dict[str, Any]:
        if not journaled:
            self._journal_start(job_id, pid)
        pidfd = os.pidfd_open(pid)
        self.jobs[job_id] = (pid, pidfd)
        self.by_fd[pidfd] = job_id
        self.sel.register(pidfd, selectors.EVENT_READ, "job")
        if self.containment == "subreaper":
            self.members.setdefault(job_id, {})
        return {"job": job_id, "pid": pid}

    def _settle(self, forked: _Forked) -> dict[str, Any]:
        """Wait for the child's report (its pipe closes at exec); ``{"job", "pid"}``
        or ``{"job", "error"}``."""
        job_id, pid, r = forked
        report = b""
        try:
            while True:
                while not proc.readable(r, 0.1):  # a slow set-up (a file server): stay alive
                    self._keepalive()
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                report += chunk
        finally:
            os.close(r)
        if report:  # the child did not reach exec: it is already exiting
            os.waitpid(pid, 0)
            self._remove_cgroup(job_id)
            failure = json.loads(report)
            if "exec" in failure:
                # the job "ran" and failed to exec, as a shell reports it: 127 / 126
                self._record_exit(job_id, int(failure["exec"]), 0, -1.0, -1.0)
                return {"job": job_id, "pid": 0}
            self.journal.forget(job_id)
            return {"job": job_id, "error": failure["error"]}
        return self._started(job_id, pid, journaled=True)

    def _child(
        self, job: dict[str, Any], group: Path | None, report: int, devices: Path | None = None
    ) -> NoReturn:
        """In the forked child: set up and exec the job, or report why not."""
        what = "set up the job"
        try:
            os.setsid()
            if group is not None:
                what = f"enter the cgroup {group}"
                with open(group / "cgroup.procs", "w") as f:
                    f.write("0")
            if devices is not None:  # while still privileged: the job cannot leave it
                what = f"enter the devices cgroup {devices}"
                with open(devices / "cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))
            for sig in (*RESET_SIGNALS, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            cpus = tuple(job.get("cpus") or ())
            if cpus and cpus != self.affinity:
                what = f"pin to CPUs {list(cpus)}"
                os.sched_setaffinity(0, cpus)
            mem = int(job.get("mem_mib") or 0)
            if mem and not (group is not None and self.memory_cgroup):
                limit = resource.getrlimit(resource.RLIMIT_AS)
                resource.setrlimit(resource.RLIMIT_AS, (mem << 20, limit[1]))
            uid = int(job.get("uid", -1))
            if uid >= 0 and (os.geteuid() == 0 or uid != os.geteuid()):
                what = f"switch to uid {uid} gid {job['gid']}"
                os.setgroups([int(g) for g in job.get("groups") or ()])
                os.setgid(int(job["gid"]))
                os.setuid(uid)
            fds = [os.open(os.devnull, os.O_RDONLY)]
            for key in ("stdout", "stderr"):
                if key == "stderr" and job["stderr"] == job["stdout"]:
                    fds.append(fds[1])
                    continue
                what = f"open {key} {job[key]}"
                fd = os.open(job[key], LOG_FLAGS, 0o644)
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
                fds.append(fd)
            what = f"enter {job['cwd']}"
            os.chdir(job["cwd"])
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
        except BaseException as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
                reason = "it is a symbolic link (refused)"
            with contextlib.suppress(BaseException):
                os.write(report, json.dumps({"error": f"cannot {what}: {reason}"}).encode())
            os._exit(126)
        try:
            os.execvpe(job["argv"][0], job["argv"], job["env"])
        except BaseException as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            reason = str(exc.strerror if isinstance(exc, OSError) else exc)
            with contextlib.suppress(BaseException):
                os.write(2, f"htcsim: cannot run {job['argv'][0]}: {reason}\n".encode())
                os.write(report, json.dumps({"exec": code}).encode())
        os._exit(127)

    # ------------------------------------------------------------------ containment

    def _job_cgroup(self, job_id: int, mem_mib: int) -> Path | None:
        """The job's cgroup, made (a stale one of the same name is killed first)."""
        if self.cgroup_root is None or (self.containment != "cgroup" and not mem_mib):
            return None
        group = self.cgroup_root / f"job-{job_id}"
        if group.is_dir():
            with contextlib.suppress(OSError):
                (group / "cgroup.kill").write_text("1")
        for attempt in range(3):  # another shepherd's start may sweep an empty root away
            try:
                if not self.cgroup_root.is_dir():
                    self.cgroup_root.mkdir(exist_ok=True)
                    if self.memory_cgroup:
                        (self.cgroup_root / "cgroup.subtree_control").write_text("+memory")
                group.mkdir(exist_ok=True)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        if mem_mib and self.memory_cgroup:
            (group / "memory.max").write_text(str(mem_mib << 20))
            with contextlib.suppress(OSError):
                (group / "memory.swap.max").write_text("0")
        self.cgroups[job_id] = group
        return group

    def _devices_cgroup(self, job_id: int, deny: Any) -> Path | None:
        """The job's devices cgroup (v1), denying it the devices in ``deny``
        (``[type, major, minor]`` each); None without devices to deny or
        without the controller."""
        if not deny or self.devices_root is None:
            return None
        rules = []
        for kind, major, minor in deny:
            if kind not in ("c", "b"):
                raise ValueError(f"a device type is c or b, not {kind!r}")
            rules.append((str(kind), int(major), int(minor)))
        group = self.devices_root / f"job-{job_id}"
        for attempt in range(3):  # another shepherd's start may sweep an empty root away
            try:
                self.devices_root.mkdir(exist_ok=True)
                group.mkdir(exist_ok=True)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        self.devices_groups[job_id] = group
        try:
            for kind, major, minor in rules:
                with open(group / "devices.deny", "w") as f:
                    f.write(f"{kind} {major}:{minor} rwm")
            listing = (group / "devices.list").read_text()
            for kind, major, minor in rules:
                if _still_allowed(listing, kind, major, minor):
                    raise PermissionError(
                        f"the devices cgroup {group} still allows {kind} {major}:{minor} "
                        "(its parent allows it by a wider rule)"
                    )
        except BaseException:
            self._remove_devices_cgroup(job_id)
            raise
        return group

    def _remove_devices_cgroup(self, job_id: int) -> None:
        group = self.devices_groups.pop(job_id, None)
        if group is not None:
            self.doomed_cgroups.add(group)  # rmdir once its processes are gone
            self._sweep_cgroups()

    def _remove_cgroup(self, job_id: int) -> None:
        self._remove_devices_cgroup(job_id)
        group = self.cgroups.pop(job_id, None)
        if group is not None:
            if group == self.in_cgroup:  # never kill the shepherd with its job
                self._move_self(self.home_cgroup)
            with contextlib.suppress(OSError):
                (group / "cgroup.kill").write_text("1")
            self.doomed_cgroups.add(group)
            self._sweep_cgroups()

    def _sweep_cgroups(self) -> None:
        """Remove killed cgroups whose processes are all gone."""
        for group in list(self.doomed_cgroups):
            try:
                group.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                continue  # still dying
            self.doomed_cgroups.discard(group)
        root = self.devices_root
        idle = not self.devices_groups and all(
            root not in (g, g.parent) for g in self.doomed_cgroups
        )
        if root is not None and idle:
            with contextlib.suppress(OSError):  # made again by the next job
                root.rmdir()

    def _cgroup_pids(self, group: Path) -> list[int]:
        with contextlib.suppress(OSError, ValueError):
            return [int(p) for p in (group / "cgroup.procs").read_text().split()]
        return []

    def _scan(self) -> dict[int, proc.Stat]:
        """Subreaper: learn every job's descendants from /proc; kill those of
        ended jobs and orphans no job can be told for; reap orphans that died.
        The keeper's children count as orphans too (left by a previous worker;
        the keeper reaps them)."""
        me = self.me
        keeper = self.link.keeper_pid if self.link is not None else -1
        table = proc_table()
        owner: dict[int, int] = {}
        for job_id, (pid, _) in self.jobs.items():
            owner[pid] = job_id
        sessions = dict(owner)  # a job's leader pid is its session and process group id
        for job_id, members in self.members.items():
            for pid, start in list(members.items()):
                if pid in table and table[pid][4] == start:
                    owner.setdefault(pid, job_id)
                else:
                    del members[pid]
        unknown: dict[int, None] = {}

        def find(pid: int) -> int | None:
            chain = []
            job: int | None = None
            while pid in table and pid not in (0, 1, me, keeper):
                if pid in owner:
                    job = owner[pid]
                    break
                if pid in unknown:
                    break
                ppid, pgrp, sid, _, _ = table[pid]
                chain.append(pid)
                job = sessions.get(sid, sessions.get(pgrp))
                if job is not None:
                    break
                pid = ppid
            for p in chain:
                if job is None:
                    unknown[p] = None
                else:
                    owner[p] = job
            return job

        for pid, (ppid, _, _, state, start) in table.items():
            if pid == me:
                continue
            job = find(pid)
            if job is not None and self.jobs.get(job, (0,))[0] != pid:
                self.members.setdefault(job, {})[pid] = start
            if ppid in (me, keeper) and pid not in sessions:
                if state == "Z":
                    if ppid == me:
                        with contextlib.suppress(ChildProcessError):
                            os.waitpid(pid, os.WNOHANG)
                    continue
                if job is None:
                    job = proc.environ_job(pid)
                    if job is not None and job in self.members:
                        self.members[job][pid] = start
                    else:
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)  # an orphan of no known job
        for job_id in list(self.ended):
            members = self.members.get(job_id, {})
            for pid in members:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if not members:
                self.ended.discard(job_id)
                self.members.pop(job_id, None)
        return table

    def _signal(self, job_id: int, sig: int) -> None:
        entry = self.jobs.get(job_id)
        if entry is None:
            return
        if job_id in self.adopted and proc.readable(entry[1]):
            self._adopted_ended(job_id)  # not our child: its pid may be free already
            return
        if sig == signal.SIGKILL:
            self.killed.add(job_id)
        if self.containment == "subreaper":
            self._scan()  # before the signal, while the parent chain is intact
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(entry[0], sig)
        if sig not in (signal.SIGTERM, signal.SIGKILL):
            return  # e.g. the checkpoint signal: the job's process group only
        group = self.cgroups.get(job_id)
        if self.containment == "cgroup" and group is not None:
            if sig == signal.SIGKILL:
                with contextlib.suppress(OSError):
                    (group / "cgroup.kill").write_text("1")
            else:
                for pid in self._cgroup_pids(group):
                    with contextlib.suppress(OSError):
                        os.kill(pid, sig)
        elif self.containment == "subreaper":
            for pid in self.members.get(job_id, {}):
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)

    def _reap(self, pidfd: int) -> None:
        if not proc.readable(pidfd):
            return  # an event of a descriptor closed and reused within this round
        job_id = self.by_fd.pop(pidfd)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        if job_id in self.adopted:  # a previous worker's: the keeper reaps it
            self._jobs_fd_closed(job_id, pidfd)
            self._adopted_ended(job_id)
            return
        pid, _ = self.jobs[job_id]
        # the main process has ended: everything else of the job goes too. Its
        # pid is still a zombie here, so the process group id cannot be reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if self.containment == "subreaper":
            self._scan()  # the leader still counts as the job's: attribute the rest
        # Its status, read without reaping and journaled first: were this worker
        # killed between the wait and the journal, the status would be lost.
        with contextlib.suppress(ChildProcessError, OSError):
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            if info is not None:
                killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
                sig = info.si_status if killed else 0
                code = 128 + sig if killed else info.si_status
                self.journal.exiting(exit_record(job_id, code, sig, -1.0, -1.0))
        try:
            _, status, usage = os.wait4(pid, 0)
        except ChildProcessError:
            status, usage = -1, None
        del self.jobs[job_id]
        self.starts.pop(job_id, None)
        self.killed.discard(job_id)
        self._remove_cgroup(job_id)
        if self.containment == "subreaper":
            self.ended.add(job_id)
            self._scan()
        if usage is None:
            self._lost(job_id, "its process was reaped by another")
            return
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        code = 128 + sig if sig else os.WEXITSTATUS(status)
        self._record_exit(
            job_id, code, sig, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0
        )

    def _jobs_fd_closed(self, job_id: int, pidfd: int) -> None:
        """``_reap`` closed the job's pidfd: say so in ``jobs``."""
        pid, _ = self.jobs[job_id]
        self.jobs[job_id] = (pid, -1)

    def _record_exit(
        self, job_id: int, code: int, sig: int, cpu: float, rss: float, lost: str = ""
    ) -> None:
        record = exit_record(job_id, code, sig, cpu, rss, lost=lost)
        self.journal.ended(record)
        self.send(record)

    # ------------------------------------------------------------------ loop

    def _tick(self) -> None:
        if self.pending:
            self._expire_pending()
        if self.doomed_cgroups:
            self._sweep_cgroups()
        if self.containment == "subreaper" and time.monotonic() >= self.next_scan:
            self.next_scan = time.monotonic() + SCAN_S
            if self.jobs or self.ended:
                self._scan()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "running", False))
        while self.running:
            busy = self.containment == "subreaper" and (self.jobs or self.ended)
            timeout = SCAN_S if busy or self.doomed_cgroups else 1.0
            for key, _ in self.sel.select(timeout=timeout):
                if key.data == "listen":
                    self._accept()
                elif key.data == "pending":
                    self._read_pending(key.fileobj)
                elif key.data == "client":
                    self._read_client(key.fileobj)
                elif key.data == "doorbell":
                    assert self.link is not None
                    with contextlib.suppress(OSError):
                        os.read(self.link.doorbell, 4096)
                    self._collect_reaped()
                elif key.data == "keeper":
                    self._keeper_died()
                elif key.fd in self.by_fd:  # not closed by an earlier event of this round
                    self._reap(key.fd)
                self._keepalive()  # a round of many exits must not leave the agent unanswered
            if self.client is not None and b"\n" in self.inbuf:
                self._lines()  # what keepalives read
            self._tick()
        self._wait_for_killed()
        self.journal.close()
        if self.link is None:  # the keeper's socket serves the next worker
            with contextlib.suppress(OSError):
                socket_path(self.run_dir).unlink()
        self._cleanup_cgroups()

    def _wait_for_killed(self) -> None:
        """At shutdown: let the jobs killed just before end and record their exits,
        so that none is left to the keeper (which would start a worker for it)."""
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        while self.killed & set(self.jobs) and time.monotonic() < deadline:
            for key, _ in self.sel.select(timeout=0.05):
                if key.data == "job" and key.fd in self.by_fd:
                    self._reap(key.fd)

    def _cleanup_cgroups(self) -> None:
        """At exit: remove the cgroups of killed jobs once empty (waiting a
        little for them to die), then the shepherd's own if nothing is left."""
        if self.cgroup_root is None and self.devices_root is None:
            return
        killed = {self.cgroups[j] for j in self.killed if j in self.cgroups}
        self.doomed_cgroups |= killed
        deadline = time.monotonic() + 2.0
        while True:
            self._sweep_cgroups()
            if not self.doomed_cgroups or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if self.home_cgroup is not None and self.base_cgroup is not None:
            with contextlib.suppress(OSError):
                self._move_self(self.base_cgroup)
                self.home_cgroup.rmdir()
        for root in (self.cgroup_root, self.devices_root):
            if root is not None:
                with contextlib.suppress(OSError):
                    root.rmdir()


def main(argv: list[str]) -> int:
    """``shepherd RUN_DIR OPTIONS_JSON``; the secret is the first line of stdin.
    This process becomes the keeper; each worker is a fork of it."""
    run_dir = Path(argv[0]).resolve()
    options = json.loads(argv[1]) if len(argv) > 1 else {}
    secret = sys.stdin.readline().strip()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    cgroup = options.get("cgroup") or ""
    containment = options.get("containment", "subreaper")
    devices = options.get("devices_cgroup") or ""
    if containment not in CONTAINMENTS or len(secret) < 32:
        print(f"htcsim shepherd: bad options or secret for {run_dir}", file=sys.stderr)
        return 2

    def worker(link: KeeperLink) -> None:
        Shepherd(
            run_dir,
            Path(cgroup) if cgroup else None,
            secret=secret,
            containment=containment,
            memory_cgroup=bool(options.get("memory_cgroup")),
            devices_cgroup=Path(devices) if devices else None,
            link=link,
        ).run()

    return keep(run_dir, worker)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
