"""Admission: what the engine's callers ask of it about jobs, and what an
accepted request changes.

A submission is validated (in owner mode the caller's Unix account first:
``accounts.owner_account``; resources against the nodes, qos against the
policy, dependencies within the batch and on stored jobs), accounted (users
and groups named to the kernel), stored and handed to the kernel with its
dependency edges; cancel, hold and release check every job before changing
any; a new policy reconfigures the kernel. When a job ends as its dependents
exclude, the kernel cancels them and the cascade records why.

This is the engine's contract with its callers (which request is refused,
with which status and field) and the one way jobs enter the kernel; the
restart admits the store's unfinished jobs through ``_admit`` too. The turn
loop only dispatches the commands here.
"""

from __future__ import annotations

import json
import signal as signals
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import Any

import numpy as np

from htcsim.agent.engine.accounts import owner_account
from htcsim.agent.engine.principal import Principal
from htcsim.agent.engine.state import EngineError, EngineState
from htcsim.agent.store.jobs import FINAL_STATES, JobFilter, Keyed, NewJob, StateChange
from htcsim.kernel import (
    DEPENDENCY_KINDS,
    JOB_SPEC_DTYPE,
    RESOURCES,
    JobState,
    KernelInputError,
    check_acyclic,
)
from htcsim.policy import Policy, policy_to_toml

KEY_REUSED = "Idempotency-Key: already used for a different request"
"""The refusal (409) of a key sent again with another request (another body or route)."""


class Admission(EngineState):
    """Submissions, the commands on jobs and policies, the dependency cascade."""

    # ------------------------------------------------------------------ command handlers

    def _account(self, user: str, group: str) -> tuple[int, int]:
        new = False
        if user not in self.users:
            self.users[user] = len(self.users)
            new = True
        if group not in self.groups:
            self.groups[group] = len(self.groups)
            new = True
        if new:
            self.kernel.set_account_names(list(self.users), list(self.groups))
            self._log.append(
                (
                    int(self.clock()),
                    "accounts",
                    None,
                    json.dumps({"users": list(self.users), "groups": list(self.groups)}),
                )
            )
        return self.users[user], self.groups[group]

    def _specs(self, jobs: Sequence[NewJob]) -> np.ndarray:
        specs = np.zeros(len(jobs), dtype=JOB_SPEC_DTYPE)
        qos_index = {q.name: k for k, q in enumerate(self.policy.qos)}
        for k, job in enumerate(jobs):
            if job.qos and job.qos not in qos_index:
                known = ", ".join(qos_index) or "none defined"
                raise EngineError(f"unknown qos {job.qos!r} (known: {known})", field="qos")
            specs[k]["job_id"] = k
            specs[k]["walltime_s"] = job.walltime_s
            specs[k]["n_tasks"] = 1
            specs[k]["per_task"][:3] = (job.cores, job.mem_mib, job.gpus)
            specs[k]["qos_idx"] = qos_index.get(job.qos, -1)
            specs[k]["user_idx"] = -1
            specs[k]["group_idx"] = -1
        try:
            self.kernel.check_jobs(specs)
        except KernelInputError as exc:
            k = exc.row if exc.row is not None else 0
            who = "" if len(jobs) == 1 else f"job {k} of the request: "
            if exc.resource is None:
                raise EngineError(f"{who}{exc}", field="resources") from exc
            asked = int(specs[k]["per_task"][RESOURCES.index(exc.resource)])
            most = int(self.kernel.capacity[:, RESOURCES.index(exc.resource)].max())
            raise EngineError(
                f"{who}{exc.resource}: {asked} asked, more than any node of the cluster has "
                f"(at most {most}; a job runs on one node)",
                field=exc.resource,
            ) from exc
        return specs

    def _do_submit(
        self,
        now: int,
        principal: Principal,
        jobs: list[NewJob],
        workflow: str | None,
        keyed: Keyed | None,
        answer: Callable[[list[int]], Any],
    ) -> Any:
        """Store and admit a submission; ``answer(ids)``. A keyed one whose key is
        already recorded answers as it did the first time, creating nothing; a
        new one records its answer under its key in the same transaction as its
        jobs (the turn's batch), before the kernel hears of them."""
        if keyed is not None:
            since = self._now_f - self.config.idempotency_ttl_s
            found = self.store.idempotent_answer(principal.user, keyed.key, since)
            if found is not None:
                request, recorded = found
                if request != keyed.request:
                    raise EngineError(KEY_REUSED, status=409, field="Idempotency-Key")
                return recorded
        if not jobs:
            raise EngineError("no job in the request", field="jobs")
        self._check_submit_cap(principal, len(jobs))
        if self.run_as == "owner":  # the owner's account, resolved now and stored with the job
            name, uid = owner_account(principal, allow_root=self.config.allow_root)
            jobs = [replace(job, account=name, uid=uid) for job in jobs]
        specs = self._specs(jobs)
        local = [(c, p) for c, job in enumerate(jobs) for p, _, _ in job.after]
        for child, parent in local:
            if not 0 <= parent < len(jobs) or parent == child:
                raise EngineError(
                    f"job {child} of the request depends on batch index {parent}", field="after"
                )
        if local:
            try:
                check_acyclic(
                    np.array([c for c, _ in local]), np.array([p for _, p in local]), len(jobs)
                )
            except KernelInputError as exc:
                raise EngineError(
                    str(exc).replace("job slots", "jobs of the request"), field="after"
                ) from exc
        parents = {p for job in jobs for p, _, _ in job.depends_on}
        states = self.store.states_of(sorted(parents))
        for p in parents:
            if p not in states:
                raise EngineError(f"dependency on unknown job {p}", field="depends_on")
        for change in self._changes:  # ends decided this turn, not yet in the store
            if change.job_id in parents and change.state in FINAL_STATES:
                states[change.job_id] = change.state
        ids = self.store.add_jobs(jobs, now=self._now_f, workflow=workflow)
        result = answer(ids)
        if keyed is not None:
            self.store.remember_idempotent(principal.user, keyed, result, now=self._now_f)
        self._admit(ids, jobs, specs, states, now)
        self.metrics.submitted.inc(len(ids))
        return result

    def _check_submit_cap(self, principal: Principal, n_new: int) -> None:
        """Refuse, before anything is stored, jobs beyond the user's submission cap.

        As Slurm's MaxSubmitJobsPerUser: the policy's ``queued_jobs_per_user``
        only limits which pending jobs a pass considers, so a user could still
        fill the store; this bounds what one user may have accepted at once.
        The engine applies submissions one at a time, so the count is exact.
        """
        cap = self.config.max_submit_jobs_per_user
        if cap <= 0:
            return
        active = self.store.active_jobs_of(principal.user)
        if active + n_new > cap:
            raise EngineError(
                f"user {principal.user!r} has {active} jobs pending, held or running; "
                f"{n_new} more would pass max_submit_jobs_per_user = {cap}",
                status=429,
                field="jobs",
            )

    def _admit(
        self,
        ids: list[int],
        jobs: Sequence[NewJob],
        specs: np.ndarray,
        parent_states: dict[int, str],
        now: int,
        *,
        submit: bool = True,
    ) -> set[int]:
        """Hand accepted jobs to the kernel (dependencies included) and log it;
        the jobs whose dependency on an earlier job can never be met are
        returned (and cancelled when ``submit``)."""
        for k, job in enumerate(jobs):
            specs[k]["job_id"] = ids[k]
            specs[k]["submit_s"] = now
            specs[k]["user_idx"], specs[k]["group_idx"] = self._account(job.user, job.group)
        first = self.kernel.add_jobs(specs, checked=True)  # checked by _specs
        for k, job_id in enumerate(ids):
            self.slot_of[job_id] = first + k
            self.job_of.append(job_id)
        self._log.extend(
            (
                now,
                "add",
                job_id,
                json.dumps(
                    {
                        "cores": job.cores,
                        "mem_mib": job.mem_mib,
                        "gpus": job.gpus,
                        "walltime_s": job.walltime_s,
                        "user": int(specs[k]["user_idx"]),
                        "group": int(specs[k]["group_idx"]),
                        "qos": int(specs[k]["qos_idx"]),
                    }
                ),
            )
            for k, (job_id, job) in enumerate(zip(ids, jobs, strict=True))
        )
        child, parent, kind, delay, doomed = [], [], [], [], set()
        never: dict[int, str] = {}  # job id -> why its dependency can never be met
        for k, job in enumerate(jobs):
            edges = list(job.depends_on) + [(ids[p], kd, d) for p, kd, d in job.after]
            for p, kd, d in edges:
                self.children.setdefault(p, []).append((ids[k], kd))
                if parent_states.get(p) in FINAL_STATES and not _edge_met(kd, parent_states[p]):
                    never.setdefault(ids[k], _never_cause(p, kd, parent_states[p]))
                if p in self.slot_of:  # the kernel knows the parent, ended or not
                    child.append(self.slot_of[ids[k]])
                    parent.append(self.slot_of[p])
                    kind.append(DEPENDENCY_KINDS[kd])
                    delay.append(d)
                elif not _edge_met(kd, parent_states.get(p, "")):
                    doomed.add(ids[k])
        if child:
            self.kernel.add_dependencies(
                np.array(child), np.array(parent), np.array(kind, dtype=np.int32), np.array(delay)
            )
            self._log.append(
                (
                    now,
                    "deps",
                    None,
                    json.dumps(
                        [
                            [self.job_of[c], self.job_of[p], k, d]
                            for c, p, k, d in zip(child, parent, kind, delay, strict=True)
                        ]
                    ),
                )
            )
        if not submit:
            return doomed
        for k, job_id in enumerate(ids):
            cause = never.get(job_id, "a dependency can never be satisfied")
            if job_id in doomed:
                self._cancel_pending(job_id, now, cause)
                continue
            self.kernel.submit(self.slot_of[job_id], now)
            self._log.append((now, "submit", job_id, "{}"))
            if self.kernel.state_of(self.slot_of[job_id]) == JobState["CANCELLED"]:
                # its parent, known to the kernel, already ended as the edge excludes
                self._record_dependency_cancel(job_id, cause)
                continue
            if jobs[k].hold:
                self.kernel.hold(self.slot_of[job_id])
                self._log.append((now, "hold", job_id, "{}"))
        self._dirty = True
        return doomed

    def _owned(self, principal: Principal, job_id: int) -> dict[str, Any]:
        try:
            row = self.store.job(job_id)
        except KeyError:
            raise EngineError(f"no job {job_id}", status=404, field="job_id") from None
        if not principal.is_admin and row["user"] != principal.user:
            raise EngineError(f"no job {job_id}", status=404, field="job_id")
        return row

    def _cancel_pending(self, job_id: int, now: int, cause: str) -> None:
        slot = self.slot_of[job_id]
        self.kernel.cancel(slot, now)
        self._log.append((now, "cancel", job_id, "{}"))
        self._ended.add(job_id)
        self._changes.append(StateChange(job_id, "cancelled", cause, {"end_time": self._now_f}))
        self.metrics.finished.labels("cancelled").inc()
        self._dirty = True
        self._cascade(job_id, now)

    # ------------------------------------------------------------------ cancel, hold, release

    def _cancel_refusal(self, row: dict[str, Any]) -> str | None:
        if row["id"] not in self.running and (
            row["state"] in FINAL_STATES or row["id"] in self._ended
        ):
            return f"job {row['id']} already ended ({row['state']})"
        return None

    def _hold_refusal(self, row: dict[str, Any]) -> str | None:
        slot = self.slot_of.get(row["id"])
        if slot is None or self.kernel.state_of(slot) != JobState["PENDING"]:
            waits = slot is not None and self.kernel.state_of(slot) == JobState["HELD"]
            return (
                f"job {row['id']} is not pending ({row['state']}"
                + (", waiting for a dependency" if waits else "")
                + "): only a pending job can be held"
            )
        return None

    def _release_refusal(self, row: dict[str, Any]) -> str | None:
        if row["id"] not in self.slot_of or row["state"] != "held":
            return f"job {row['id']} is not held ({row['state']})"
        return None

    def _cancel_one(self, now: int, principal: Principal, job_id: int) -> None:
        run = self.running.get(job_id)
        if run is None:
            self._cancel_pending(job_id, now, f"cancelled by {principal.user}")
        elif run.phase != "cancelling":
            run.phase = "cancelling"
            self.executor.signal(job_id, signals.SIGTERM)
            self._push_timer(self.clock() + self.config.kill_grace_s, "kill", run)
            self.store.update(job_id, reason=f"cancelled by {principal.user}")

    def _hold_one(self, now: int, principal: Principal, job_id: int) -> None:
        self.kernel.hold(self.slot_of[job_id])
        self._log.append((now, "hold", job_id, "{}"))
        self._changes.append(
            StateChange(job_id, "held", f"held by {principal.user}", {"reason": "Held"})
        )
        self._dirty = True

    def _release_one(self, now: int, principal: Principal, job_id: int) -> None:
        self.kernel.release(self.slot_of[job_id], now)
        self._log.append((now, "release", job_id, "{}"))
        self._changes.append(
            StateChange(job_id, "pending", f"released by {principal.user}", {"reason": ""})
        )
        self._dirty = True

    def _act_all(
        self, now: int, principal: Principal, action: str, job_ids: list[int]
    ) -> list[int]:
        """The per-job routes: every job checked before any is changed (all or none)."""
        rows = [self._owned(principal, j) for j in job_ids]
        refusal = getattr(self, f"_{action}_refusal")
        for row in rows:
            why = refusal(row)
            if why is not None:
                raise EngineError(why, status=409)
        apply = getattr(self, f"_{action}_one")
        for job_id in job_ids:
            apply(now, principal, job_id)
        return job_ids

    def _do_cancel(self, now: int, principal: Principal, job_ids: list[int]) -> list[int]:
        return self._act_all(now, principal, "cancel", job_ids)

    def _do_hold(self, now: int, principal: Principal, job_ids: list[int]) -> list[int]:
        return self._act_all(now, principal, "hold", job_ids)

    def _do_release(self, now: int, principal: Principal, job_ids: list[int]) -> list[int]:
        return self._act_all(now, principal, "release", job_ids)

    def _do_bulk(
        self, now: int, principal: Principal, action: str, job_ids: list[int], where: JobFilter
    ) -> dict[str, Any]:
        """Cancel, hold or release many jobs in this one turn (one commit).

        Named ids each act or get an error of their own (404: not the caller's
        or no such job; 409: not in a state the action applies to), the others
        acting still; a named id the filter does not match is left alone. With
        no ids, the filter selects the jobs (a user's own only), and those the
        action does not apply to (a pending job to release) are not selected.
        """
        if action not in BULK_STATES:
            raise EngineError(f"unknown action {action!r}", field="action")
        if not principal.is_admin:
            if where.user is not None and where.user != principal.user:
                # another user's jobs are never selected: the filter matches none
                return {"ids": [], "errors": []}
            where = replace(where, user=principal.user)
        refusal = getattr(self, f"_{action}_refusal")
        chosen: list[int] = []
        errors: list[dict[str, Any]] = []
        if job_ids:
            rows = self.store.jobs_by_id(job_ids)
            for job_id in dict.fromkeys(job_ids):
                row = rows.get(job_id)
                if row is None or (not principal.is_admin and row["user"] != principal.user):
                    errors.append({"id": job_id, "status": 404, "detail": f"no job {job_id}"})
                    continue
                if not where.matches(row):
                    continue
                why = refusal(row)
                if why is not None:
                    errors.append({"id": job_id, "status": 409, "detail": why})
                    continue
                chosen.append(job_id)
        else:
            if not where.states:
                where = replace(where, states=BULK_STATES[action])
            for job_id, user, state in self.store.select(where):
                if refusal({"id": job_id, "user": user, "state": state}) is None:
                    chosen.append(job_id)
        apply = getattr(self, f"_{action}_one")
        for job_id in chosen:
            apply(now, principal, job_id)
        return {"ids": chosen, "errors": errors}

    def _do_policy(self, now: int, principal: Principal, policy: Policy, note: str) -> int:
        if self.pool is not None and _autoscale_knobs(policy) != _autoscale_knobs(self.policy):
            raise EngineError(
                "the [autoscale] section applies from the agent's start: restart the agent "
                "with the new policy to change it",
                status=409,
                field="autoscale",
            )
        text = policy_to_toml(policy)
        self.kernel.configure(policy)
        self.kernel.set_account_names(list(self.users), list(self.groups))
        self.policy = policy
        self._log.append((now, "policy", None, json.dumps({"toml": text})))
        self._dirty = True
        return self.store.audit_policy(principal.user, text, note)

    # ------------------------------------------------------------------ the dependency cascade

    def _cascade(self, job_id: int, now: int, state: str = "cancelled") -> None:
        """Dependents the kernel cancelled because ``job_id`` ended (``state``)
        as they exclude, and theirs in turn: each recorded at once, its cause
        naming the parent and the dependency kind. Called on every end, a
        success included (afternotok)."""
        todo = [(job_id, state)]
        while todo:
            parent, parent_state = todo.pop()
            kinds: dict[int, list[str]] = {}
            for child, kd in self.children.get(parent, ()):
                kinds.setdefault(child, []).append(kd)
            for child, kds in kinds.items():
                slot = self.slot_of.get(child)
                if slot is None or self.kernel.state_of(slot) != JobState["CANCELLED"]:
                    continue
                if child in self._ended:
                    continue
                unmet = [kd for kd in kds if not _edge_met(kd, parent_state)] or kds
                self._record_dependency_cancel(child, _never_cause(parent, unmet[0], parent_state))
                todo.append((child, "cancelled"))

    def _record_dependency_cancel(self, job_id: int, cause: str) -> None:
        self._ended.add(job_id)
        self._changes.append(
            StateChange(
                job_id,
                "cancelled",
                cause,
                {"end_time": self._now_f, "reason": "DependencyNeverSatisfied"},
            )
        )
        self.metrics.finished.labels("cancelled").inc()


BULK_STATES: dict[str, tuple[str, ...]] = {
    "cancel": ("pending", "held", "running"),
    "hold": ("pending",),
    "release": ("held",),
}
"""The states a bulk action selects by filter when the caller names none."""


def _autoscale_knobs(policy: Policy) -> tuple[Any, ...]:
    return tuple(getattr(policy, f.name) for f in fields(policy) if f.name.startswith("autoscale"))


def _never_cause(parent: int, kind: str, parent_state: str) -> str:
    """Why a job whose ``kind`` dependency on ``parent`` can never be met was cancelled."""
    return (
        f"dependency {kind} on job {parent} can never be satisfied "
        f"(job {parent} ended {parent_state})"
    )


def _edge_met(kind: str, parent_state: str) -> bool:
    """Whether a dependency on a job that already ended is satisfied."""
    if kind == "afterany":
        return True
    if kind == "afterok":
        return parent_state == "completed"
    return parent_state in ("failed", "cancelled", "timeout", "node_fail")
