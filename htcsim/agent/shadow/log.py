"""What the decision log tells of each job's live runs, read ahead of the shadow twin.

Why a separate reading: the twin needs a job's real runtime as soon as the
log records it, long before the twin's clock gets there (it starts jobs
earlier or later than the live agent did), and it needs to know, for a job
still running live, how long it has run so far (a lower bound on its
runtime). ``LiveRuns.learn`` takes rows in log order, as soon as they are
read, and keeps per job: when it was submitted, each live run (start, node,
and how it ended: finished, cancelled, cut short by a node failure or an
agent restart) and its runtime once a run finished.
"""

from __future__ import annotations

from typing import Any

OPEN, FINISH, CANCEL, LOST, RESTART = "", "finish", "cancel", "lost", "restart"
"""How a live run ended ("": it has not)."""


class LiveRun:
    """One live run of a job: from a start (or an adoption) to its end."""

    __slots__ = ("end", "end_seq", "how", "node", "start")

    def __init__(self, start: int, node: int) -> None:
        self.start = start
        self.node = node  # index in the live kernel of the time
        self.end = -1
        self.how = OPEN
        self.end_seq = 0  # the log row that ended it

    @property
    def cut_short(self) -> bool:
        return self.how in (LOST, RESTART)


class ShadowJob:
    """One job: live facts (``LiveRuns``) and the twin's run (``ShadowTwin``)."""

    __slots__ = (
        "adopted",
        "cancel_s",
        "final_s",
        "job_id",
        "live_node",
        "live_start",
        "ok",
        "plan",
        "run_node",
        "run_start",
        "runs",
        "slot",
        "submit_s",
        "token",
        "twin_final",
        "twin_node",
        "twin_start",
    )

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.submit_s = -1  # first submit (kernel time)
        self.adopted = False  # running before the twin could decide: not compared
        self.live_start = -1  # first live start, and its node's name
        self.live_node = ""
        self.runs: list[LiveRun] = []
        self.final_s = -1  # runtime of the live run that finished (-1: none yet)
        self.ok = 1
        self.cancel_s = -1  # cancelled live at (-1: not)
        self.twin_start = -1  # first twin start, and its node's name
        self.twin_node = ""
        self.twin_final = False  # twin_start is at or before the twin's horizon
        self.slot = -1  # in the twin's current kernel
        self.run_start = -1  # the twin's current run (-1: not running)
        self.run_node = -1
        self.plan = 0  # how that run ends (ShadowTwin's _NONE, _ROW, ...)
        self.token = 0  # bumped whenever its planned end changes

    def runtime_floor(self) -> int:
        """Seconds the job is known to need: a run cut short ran at least that long."""
        return max((r.end - r.start for r in self.runs if r.cut_short), default=0)

    def runtime(self) -> int:
        """The runtime the twin gives the job (once a live run finished)."""
        return max(self.final_s, self.runtime_floor())


class LiveRuns:
    """The live facts of every job, from the decision log in order.

    ``learn`` returns the job whose facts changed (or, for a node failure or
    a restart, None after calling ``on_change`` for each job it affects), so
    the twin can revise how that job's run ends.
    """

    def __init__(self) -> None:
        self.jobs: dict[int, ShadowJob] = {}
        self.open: dict[int, LiveRun] = {}  # runs not ended, by job id
        self.node_names: list[str] = []  # of the live kernel where the reading is

    def job(self, job_id: int) -> ShadowJob:
        job = self.jobs.get(job_id)
        if job is None:
            job = self.jobs[job_id] = ShadowJob(job_id)
        return job

    def learn(self, seq: int, t: int, op: str, job_id: int | None, data: Any) -> list[ShadowJob]:
        """The facts of one row; the jobs they changed. A finish row's data gains
        ``run_start``: the start of the live run it ends."""
        if op == "restart":
            self.node_names = [str(n[0]) for n in data["nodes"]]
            return [self._close(j, t, RESTART, seq) for j in list(self.open)]
        if op == "fail":
            lost = [j for j, run in self.open.items() if run.node == int(data["node"])]
            return [self._close(j, t, LOST, seq) for j in lost]
        if job_id is None:
            return []
        job = self.job(job_id)
        if op == "submit":
            if job.submit_s < 0:
                job.submit_s = t
            return []
        if op == "start":
            node = int(data["node"])
            self._open(job, LiveRun(t, node))
            if job.live_start < 0:
                job.live_start = t
                job.live_node = self._name(node)
        elif op == "adopt":
            self._adopt(job, int(data["start"]), int(data["node"]))
        elif op == "finish":
            run = self.open.get(job_id)
            data["run_start"] = run.start if run is not None else None
            cancelled = bool(data.get("cancelled"))
            if cancelled:
                job.cancel_s = t
            if run is not None:
                if not cancelled:
                    job.final_s, job.ok = t - run.start, int(data["ok"])
                self._close(job_id, t, CANCEL if cancelled else FINISH, seq)
        elif op == "cancel":
            job.cancel_s = t
        else:
            return []
        return [job]

    def _name(self, node: int) -> str:
        return self.node_names[node] if node < len(self.node_names) else str(node)

    def _open(self, job: ShadowJob, run: LiveRun) -> None:
        job.runs.append(run)
        self.open[job.job_id] = run

    def _adopt(self, job: ShadowJob, start: int, node: int) -> None:
        """A restarted agent found the job running: the run the restart cut is
        going on (the same start), or one the log never showed began."""
        last = job.runs[-1] if job.runs else None
        if last is not None and last.how == RESTART and last.start == start:
            last.end, last.how, last.end_seq = -1, OPEN, 0
            self.open[job.job_id] = last
        else:
            self._open(job, LiveRun(start, node))
        if job.live_start < 0:
            job.adopted = True

    def _close(self, job_id: int, t: int, how: str, seq: int) -> ShadowJob:
        run = self.open.pop(job_id)
        run.end, run.how, run.end_seq = t, how, seq
        return self.jobs[job_id]
