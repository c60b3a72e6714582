"""What a job the kernel started needs to run: cores and GPU devices on its
node, and the description of its process.

``_place`` takes the job's cores from its node's free ones (for pinning) and
its GPUs' device indices (the lowest free ones, or those a re-adopted job
holds), and makes its ``Running`` record, for a job a pass starts as for one
the restart adopts; ``_free_devices`` gives them back when it ends. The
kernel decides the node; this decides which devices on it.
``_launch_spec`` turns the stored job into what an executor starts:
its command and log paths with ``{id}``, ``{index}``, ``{array_id}``
expanded, its environment (a few of the agent's variables, its account's
``HOME``/``USER``/``LOGNAME``/``SHELL`` in owner mode, the job's own, the
``HTCSIM_*`` ones, ``CUDA_VISIBLE_DEVICES`` and kin naming its GPUs), its
account (uid, gid, groups; -1 in single-user mode), its CPUs and memory
limit, its node's address, and the device files of the machine's GPUs
that are not its own (``deny_devices``: type, major, minor from ``os.stat``,
for the shepherd's devices cgroup; ``gpu_device_files``, missing files skipped).

It is separate from the turn loop, which hands these specs to the executor,
because it is a translation of a stored job into a process, independent of
when and how the loop starts it.
"""

from __future__ import annotations

import os
import signal as signals
import stat
from collections.abc import Mapping, Sequence
from typing import Any

from htcsim.agent.engine.accounts import IDENTITY_ENV, job_account
from htcsim.agent.engine.state import EngineState, Running
from htcsim.agent.executors.base import LaunchSpec
from htcsim.agent.store.jobs import NewJob

ENV_KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL")
"""The agent's variables a job inherits (HTCondor's default: not the whole environment);
in owner mode ``HOME``, ``USER``, ``LOGNAME``, ``SHELL`` come from the job's account instead."""

DEVICE_ENV = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
"""Set to the job's GPU device indices (empty for a job without GPUs: it sees none)."""


class Launch(EngineState):
    """A started job's cores and launch spec."""

    def _place(
        self,
        job_id: int,
        slot: int,
        node: int,
        start: float,
        job: NewJob,
        gpu_ids: Sequence[int] | None = None,
    ) -> Running:
        """The record of a job running on ``node`` since ``start``, with its cores
        taken from the node's free ones (for pinning) and its GPU devices: the
        ``gpu_ids`` it holds (a re-adopted job), else the lowest free ones."""
        free = self.free_gpus[node]
        free.sort()
        gpus = list(gpu_ids) if gpu_ids is not None else free[: job.gpus]
        self.free_gpus[node] = [g for g in free if g not in gpus]
        return Running(
            job_id=job_id,
            slot=slot,
            node=node,
            cores=[self.free_cores[node].pop(0) for _ in range(job.cores)],
            start=start,
            walltime_s=job.walltime_s,
            signal=_signal_number(job.signal) if job.signal else 0,
            signal_before_s=job.signal_before_s,
            user=job.user,
            gpu_ids=gpus,
        )

    def _free_devices(self, run: Running) -> None:
        """``run`` ended: its cores and GPU devices are its node's again."""
        self.free_cores[run.node].extend(run.cores)
        self.free_cores[run.node].sort()
        devices = set(self.node_specs[run.node].devices)
        free = self.free_gpus[run.node]
        free.extend(g for g in run.gpu_ids if g in devices and g not in free)
        free.sort()

    def _launch_spec(self, run: Running, row: dict[str, Any]) -> LaunchSpec:
        """What the executor needs to start the job: placeholders expanded, the
        environment (the agent's basic variables, the job's, HTCSIM_*), logs, CPUs."""
        node = self.node_specs[run.node]
        index = "" if row["array_index"] is None else str(row["array_index"])
        values = {
            "id": str(run.job_id),
            "index": index,
            "array_id": "" if row["array_id"] is None else str(row["array_id"]),
        }
        env = dict(self._base_env)
        uid, gid = -1, -1
        groups: tuple[int, ...] = ()
        if self.run_as == "owner":  # never the agent's identity: its account's
            account = job_account(run.job_id, row["account"], row["uid"])
            uid, gid, groups = account.uid, account.gid, account.groups
            for key in IDENTITY_ENV:
                env.pop(key, None)
            env.update(account.env)
        env.update(row["env"])
        devices = ",".join(str(g) for g in run.gpu_ids)
        env.update(
            HTCSIM_JOB_ID=values["id"],
            HTCSIM_ARRAY_INDEX=index,
            HTCSIM_ARRAY_ID=values["array_id"],
            HTCSIM_NODE=node.name,
            HTCSIM_CORES=str(row["cores"]),
        )
        env.update(dict.fromkeys(DEVICE_ENV, devices))
        return LaunchSpec(
            job_id=run.job_id,
            argv=[_expand(a, values) for a in row["command"]],
            cwd=row["cwd"],
            env=env,
            stdout=_log_path(row["stdout"] or "htcsim-{id}.out", row["cwd"], values),
            stderr=_log_path(row["stderr"] or "htcsim-{id}.err", row["cwd"], values),
            cpus=tuple(sorted({node.cpus[c % len(node.cpus)] for c in run.cores}))
            if node.cpus
            else (),
            mem_limit_mib=int(row["mem_mib"]),
            node=node.address,
            uid=uid,
            gid=gid,
            groups=groups,
            deny_devices=deny_devices(self.gpu_files, run.gpu_ids),
        )


def deny_devices(files: Mapping[int, str], own: Sequence[int]) -> tuple[tuple[str, int, int], ...]:
    """(type, major, minor) of the device files of the GPUs in ``files`` that
    are not in ``own``; a missing file or one that is no device is skipped, and
    a device one of ``own`` also names is never denied."""

    def device(path: str) -> tuple[str, int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        if stat.S_ISCHR(st.st_mode):
            return ("c", os.major(st.st_rdev), os.minor(st.st_rdev))
        if stat.S_ISBLK(st.st_mode):
            return ("b", os.major(st.st_rdev), os.minor(st.st_rdev))
        return None

    mine = {device(files[g]) for g in own if g in files}
    out = []
    for gpu, path in sorted(files.items()):
        triple = device(path) if gpu not in own else None
        if triple is not None and triple not in mine and triple not in out:
            out.append(triple)
    return tuple(out)


def _signal_number(name: str) -> int:
    return int(signals.Signals[name if name.startswith("SIG") else f"SIG{name}"])


def _expand(text: str, values: dict[str, str]) -> str:
    """``{id}``, ``{index}``, ``{array_id}`` in a command or path; other braces stay."""
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _log_path(pattern: str, cwd: str, values: dict[str, str]) -> str:
    path = _expand(pattern, values)
    return path if os.path.isabs(path) else os.path.join(cwd, path)
