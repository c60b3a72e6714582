"""The Unix accounts jobs run as: resolved at submit time, checked again at launch.

In ``owner`` mode (the agent runs as root, as slurmd does) each job runs as
its owner's account (``Principal.unix_account``): the name is resolved with
the passwd database when the job is submitted (an unknown account, or root
without ``allow_root``, is refused before anything is stored), the name and
uid are stored with the job, and each launch looks the name up again for the
primary group, the supplementary groups and the ``HOME``/``USER``/``LOGNAME``/
``SHELL`` the job sees. A name whose uid changed since the submission is not
launched: the job would run as somebody else.

Plain functions of the passwd and group databases, shared by admission and
launch.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from htcsim.agent.engine.principal import Principal
from htcsim.agent.engine.state import EngineError
from htcsim.agent.executors.base import LaunchError

IDENTITY_ENV = ("HOME", "USER", "LOGNAME", "SHELL")
"""The variables a job gets from its account's passwd entry, never from the agent."""


@dataclass(frozen=True)
class JobAccount:
    """The account a job runs as, as its launch needs it."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    env: dict[str, str]


def owner_account(principal: Principal, *, allow_root: bool) -> tuple[str, int]:
    """(account name, uid) the caller's jobs run as; an ``EngineError`` (403)
    naming the user and the account when it does not exist, or is root and
    ``allow_root`` is off."""
    name = principal.unix_account
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise EngineError(
            f"user {principal.user!r}: no Unix account {name!r} on the agent's machine to run "
            "their jobs as (the token's account, by default the user name)",
            status=403,
        ) from None
    if entry.pw_uid == 0 and not allow_root:
        raise EngineError(
            f"user {principal.user!r}: their jobs would run as root (account {name!r}, uid 0); "
            "refused unless the agent sets allow_root = true",
            status=403,
        )
    return name, entry.pw_uid


def job_account(job_id: int, name: str, uid: int | None) -> JobAccount:
    """The stored account of a job looked up for its launch; a ``LaunchError``
    when it is missing, gone, or no longer has the uid it had at submission."""
    if not name or uid is None:
        raise LaunchError(
            f"job {job_id}: no owner account recorded (submitted in single-user mode); "
            "the agent runs each job as its owner: resubmit it"
        )
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise LaunchError(f"job {job_id}: its account {name!r} no longer exists") from None
    if entry.pw_uid != uid:
        raise LaunchError(
            f"job {job_id}: its account {name!r} is now uid {entry.pw_uid}, "
            f"not {uid} as when it was submitted"
        )
    env = {"HOME": entry.pw_dir, "USER": name, "LOGNAME": name}
    if entry.pw_shell:
        env["SHELL"] = entry.pw_shell
    groups = tuple(os.getgrouplist(name, entry.pw_gid))
    return JobAccount(name, entry.pw_uid, entry.pw_gid, groups, env)
