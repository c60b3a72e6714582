"""Who asks the engine for something: the identity every command carries.

The API authenticates a request (``htcsim.agent.api.auth``) and hands the
engine this value; the engine decides with it what the caller may see and
change (own jobs, or everything for an admin), so it lives with the engine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """The caller of a request."""

    user: str
    role: str = "user"
    group: str = ""
    account: str = ""
    """The Unix account the caller's jobs run as (the token's ``account``); empty: ``user``."""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def unix_account(self) -> str:
        """The account name to run this caller's jobs as (before the agent's mode applies)."""
        return self.account or self.user
