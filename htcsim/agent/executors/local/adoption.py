"""Adoption: what a new shepherd worker does with the jobs a dead one left.

Why a part of its own: it is the one place where the worker acts on processes
it did not start. At its start (``_reconcile``), under the keeper's record
lock, each job the journal says runs is settled: its status recorded by the
keeper (it ended meanwhile), adopted (its process still runs as the keeper's
child, so the keeper will report its end), or, running but beyond the keeper
(a keeper that was replaced too: its parent is now init), killed, every
process of it (its cgroup, or its session found by pid and start time), and
reported lost; gone without a record, lost too. Then every process of a job
the journal does not name is killed: cgroups of no adopted job, and children
of the keeper that belong to none (a start the dead worker had not journaled).
An adopted job's end comes as a pidfd event; its status from the keeper's
record (``_collect_reaped``), matched by pid *and* start time. Should the
keeper die, the adopted jobs' statuses could never be learned: they are
killed and reported lost (``_keeper_died``).

Only the standard library: the shepherd imports it and must start fast.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from htcsim.agent.executors.local import proc
from htcsim.agent.executors.local.journal import Journal, ReapedLog
from htcsim.agent.executors.local.keeper import KeeperLink
from htcsim.agent.executors.local.proc import proc_table

KILL_WAIT_S = 10.0
"""How long a worker waits for the processes of a job it killed to be gone."""


class Adoption(ABC):
    """The worker's part that adopts, settles or kills a dead worker's jobs
    (see the module docstring); ``Shepherd`` holds the state it uses."""

    me: int
    link: KeeperLink | None
    keeper: proc.Process | None
    keeper_note: str
    reaped: ReapedLog | None
    journal: Journal
    sel: selectors.BaseSelector
    containment: str
    jobs: dict[int, tuple[int, int]]  # job -> (pid, pidfd)
    by_fd: dict[int, int]
    starts: dict[int, int]  # job -> its process's start time
    adopted: set[int]  # jobs a previous worker started (the keeper's children)
    awaiting: dict[tuple[int, int], int]  # (pid, start) of an adopted job that ended -> job
    cgroup_root: Path | None
    devices_root: Path | None
    cgroups: dict[int, Path]
    devices_groups: dict[int, Path]
    doomed_cgroups: set[Path]
    killed: set[int]
    members: dict[int, dict[int, int]]
    ended: set[int]

    @abstractmethod
    def _record_exit(
        self, job_id: int, code: int, sig: int, cpu: float, rss: float, lost: str = ""
    ) -> None:
        """Journal a job's exit and report it to the agent."""

    @abstractmethod
    def _scan(self) -> dict[int, proc.Stat]:
        """Subreaper: attribute processes to jobs, kill those of ended jobs."""

    @abstractmethod
    def _remove_cgroup(self, job_id: int) -> None:
        """Kill a job's cgroups and remove them once empty."""

    @abstractmethod
    def _cgroup_pids(self, group: Path) -> list[int]:
        """The processes in a cgroup."""

    @abstractmethod
    def _keepalive(self) -> None:
        """Answer the agent's pings from within a long operation."""

    @abstractmethod
    def send(self, message: dict[str, Any]) -> None:
        """A message to the agent, if one is connected."""

    def _keeper_alive(self) -> bool:
        return self.keeper is not None and not self.keeper.ended()

    # ------------------------------------------------------------------ reconciliation

    def _reconcile(self) -> None:
        """Before serving: settle every job the journal says runs, and kill every
        process of a job it does not name (see the module docstring)."""
        keeper_pid = self.link.keeper_pid if self.link is not None and self._keeper_alive() else -1
        with self._reaped_lock():
            records = {
                (int(r["pid"]), int(r["start"])): r
                for r in (self.reaped.read() if self.reaped is not None else [])
            }
            table = proc_table()
            for job, (pid, start) in list(self.journal.running.items()):
                record = records.pop((pid, start), None)
                st = table.get(pid)
                if record is not None:
                    self._keeper_exit(job, record)
                elif st is not None and st.start == start and st.ppid == keeper_pid:
                    if not self._adopt(job, pid, start):
                        self._lost(job, "its process ended as the shepherd restarted")
                elif st is not None and st.start == start and st.state != "Z":
                    self._kill_job(job, pid, start, table)
                    self._lost(
                        job,
                        "killed: the shepherd was restarted without its keeper, so its "
                        "exit status could not have been learned",
                    )
                else:
                    self._lost(job, "its process ended while the shepherd was down")
            if self.reaped is not None:
                self.reaped.clear()  # the rest are processes of no job
        self._kill_strays(proc_table(), keeper_pid)

    @contextlib.contextmanager
    def _reaped_lock(self) -> Iterator[None]:
        if self.reaped is None:
            yield
            return
        with self.reaped.locked():
            yield

    def _adopt(self, job_id: int, pid: int, start: int) -> bool:
        """Watch a job a previous worker started (now the keeper's child)."""
        process = proc.Process.open(pid, start)
        if process is None:
            return False
        self.jobs[job_id] = (pid, process.fd)
        self.by_fd[process.fd] = job_id
        self.starts[job_id] = start
        self.adopted.add(job_id)
        self.sel.register(process.fd, selectors.EVENT_READ, "job")
        name = f"job-{job_id}"
        if self.cgroup_root is not None and (self.cgroup_root / name).is_dir():
            self.cgroups[job_id] = self.cgroup_root / name
        if self.devices_root is not None and (self.devices_root / name).is_dir():
            self.devices_groups[job_id] = self.devices_root / name
        if self.containment == "subreaper":
            self.members.setdefault(job_id, {})
        return True

    def _lost(self, job_id: int, cause: str) -> None:
        """Report a job whose exit status is unknown, its processes gone: the
        agent requeues it (its node's failure, as it were)."""
        self._record_exit(job_id, -1, 0, -1.0, -1.0, lost=cause)

    def _session_of(self, leader: int, table: dict[int, proc.Stat]) -> dict[int, int]:
        """pid -> start of every process of the job whose main process is
        ``leader``: its session and process group, and their descendants."""
        found = {
            pid: st.start
            for pid, st in table.items()
            if pid == leader or st.sid == leader or st.pgrp == leader
        }
        grew = True
        while grew:
            grew = False
            for pid, st in table.items():
                if pid not in found and st.ppid in found and pid != self.me:
                    found[pid] = st.start
                    grew = True
        return found

    def _kill_job(self, job_id: int, pid: int, start: int, table: dict[int, proc.Stat]) -> None:
        """Kill every process of a job that cannot be adopted, and wait until they are gone."""
        name = f"job-{job_id}"
        groups = []
        if self.cgroup_root is not None and (self.cgroup_root / name).is_dir():
            groups.append(self.cgroup_root / name)
        if self.devices_root is not None and (self.devices_root / name).is_dir():
            groups.append(self.devices_root / name)
        st = table.get(pid)
        members = self._session_of(pid, table) if st is not None and st.start == start else {}
        self._kill_all(groups, members)

    def _kill_all(self, groups: list[Path], members: dict[int, int]) -> None:
        """SIGKILL every process of ``groups`` (cgroups) and of ``members`` (pid
        -> start time), and wait until they are all gone (``KILL_WAIT_S``)."""
        held: list[proc.Process] = []
        for pid, start in members.items():
            process = proc.Process.open(pid, start)
            if process is not None:
                held.append(process)
        deadline = time.monotonic() + KILL_WAIT_S
        try:
            while True:
                for group in groups:
                    self._kill_cgroup(group)
                for process in held:
                    process.kill()
                    if process.ended():
                        process.close()
                held = [p for p in held if p.fd >= 0]
                if (not held and not any(self._cgroup_pids(g) for g in groups)) or (
                    time.monotonic() > deadline
                ):
                    break
                self._keepalive()
                time.sleep(0.01)
        finally:
            for process in held:
                process.close()
        for group in groups:
            self.doomed_cgroups.add(group)

    def _kill_cgroup(self, group: Path) -> None:
        """Kill everything in a cgroup: ``cgroup.kill`` (v2), else each process (v1)."""
        try:
            (group / "cgroup.kill").write_text("1")
            return
        except OSError:
            pass
        for pid in self._cgroup_pids(group):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)  # a member of the cgroup: cannot be reused

    def _kill_strays(self, table: dict[int, proc.Stat], keeper_pid: int) -> None:
        """Kill the processes of jobs the journal does not name: cgroups of no
        adopted job, and children of the keeper that belong to none."""
        groups = []
        for root in (self.cgroup_root, self.devices_root):
            if root is None:
                continue
            for group in root.glob("job-*"):
                with contextlib.suppress(ValueError):
                    if int(group.name[4:]) not in self.jobs and self._cgroup_pids(group):
                        groups.append(group)
        strays: dict[int, int] = {}
        if keeper_pid > 0:
            inside = {p for g in self.cgroups.values() for p in self._cgroup_pids(g)}
            leaders = {pid for pid, _ in self.jobs.values()}
            for pid, st in table.items():
                if st.ppid != keeper_pid or pid == self.me or pid in leaders or st.state == "Z":
                    continue
                if pid in inside or st.sid in leaders or st.pgrp in leaders:
                    continue  # an adopted job's (its end takes it)
                if self.containment == "subreaper" and proc.environ_job(pid) in self.adopted:
                    continue
                strays |= self._session_of(pid, table)
        if groups or strays:
            self._kill_all(groups, strays)

    # ------------------------------------------------------------------ adopted jobs

    def _keeper_exit(self, job_id: int, record: dict[str, Any]) -> None:
        """An adopted job's exit, from the keeper's record of its wait status."""
        status = int(record["status"])
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        code = 128 + sig if sig else os.waitstatus_to_exitcode(status)
        self._record_exit(
            job_id, code, sig, float(record["cpu"]), float(record["maxrss_kib"]) / 1024.0
        )

    def _adopted_ended(self, job_id: int, *, collect: bool = True) -> None:
        """An adopted job's process ended: the rest of the job dies with it (as
        for a job of this worker's) and its status is awaited from the keeper."""
        pid, pidfd = self.jobs[job_id]
        if pidfd in self.by_fd:
            del self.by_fd[pidfd]
            self.sel.unregister(pidfd)
            os.close(pidfd)
        if self.containment == "subreaper":
            self._scan()  # the leader still counts as the job's: attribute the rest
        del self.jobs[job_id]
        self.adopted.discard(job_id)
        self.killed.discard(job_id)
        self._remove_cgroup(job_id)
        if self.containment == "subreaper":
            self.ended.add(job_id)
            self._scan()
        self.awaiting[(pid, self.starts.pop(job_id, 0))] = job_id
        if collect:
            self._collect_reaped()

    def _collect_reaped(self) -> None:
        """Take the keeper's records: the statuses of adopted jobs that ended.
        Without a keeper, an ended adopted job's status will never come: lost."""
        if self.reaped is not None:
            with self.reaped.locked():
                for record in self.reaped.read():
                    key = (int(record["pid"]), int(record["start"]))
                    if key not in self.awaiting:
                        job = next(
                            (j for j in self.adopted if (self.jobs[j][0], self.starts[j]) == key),
                            None,
                        )
                        if job is None:
                            continue  # a process of no job (an orphan the keeper inherited)
                        self._adopted_ended(job, collect=False)  # its pidfd event comes later
                    self._keeper_exit(self.awaiting.pop(key), record)
                self.reaped.clear()
        if self.awaiting and not self._keeper_alive():
            for job_id in list(self.awaiting.values()):
                self._lost(job_id, "it ended after the shepherd's keeper died: exit status unknown")
            self.awaiting.clear()

    def _keeper_died(self) -> None:
        """The keeper is gone: the adopted jobs' statuses can no longer be learned
        (their parent is now init), so they are killed and reported lost; this
        worker's own jobs are not touched."""
        assert self.keeper is not None and self.link is not None
        self.sel.unregister(self.keeper.fd)
        self.keeper.close()
        self.keeper_note = f"the keeper {self.link.keeper_pid} is gone"
        self._collect_reaped()  # what it recorded before it died
        table = proc_table()
        for job_id in list(self.adopted):
            pid, _ = self.jobs[job_id]
            start = self.starts[job_id]
            self._kill_job(job_id, pid, start, table)
            self._adopted_ended(job_id, collect=False)
            self.awaiting.pop((pid, start), None)
            self._lost(job_id, "killed: the shepherd's keeper died, its exit status was lost")
        self.send({"op": "keeper", "alive": False, "reason": self.keeper_note})
