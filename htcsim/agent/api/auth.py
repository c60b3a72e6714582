"""Bearer tokens: who a request comes from and what it may do.

Why a file of tokens: an agent on a shared machine needs to know which user
submits (fairshare, limits and who may cancel what depend on it) without an
identity service; an operator hands each user a token, as with a Slurm or
HTCondor pool password. The file is TOML, one ``[[token]]`` table per token
(token, user, role ``user`` or ``admin``, optional group, optional ``account``:
the Unix account the user's jobs run as, by default the user name), readable by the
agent's user only. ``Tokens`` is the running agent's view of that file,
read again whenever it changes.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

import tomli_w

from htcsim.agent.engine.principal import Principal

ROLES = ("user", "admin")


class TokenFileError(ValueError):
    """A bad token file; the message names the file and the entry."""


def load_tokens(path: Path) -> dict[str, Principal]:
    """token -> principal; a missing file is an empty table (every request is refused)."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TokenFileError(f"{path}: not valid TOML ({exc})") from exc
    out: dict[str, Principal] = {}
    for k, entry in enumerate(data.get("token", [])):
        where = f"{path}: token entry {k + 1}"
        if not isinstance(entry, dict):
            raise TokenFileError(f"{where} is not a table")
        unknown = set(entry) - {"token", "user", "role", "group", "account"}
        if unknown:
            raise TokenFileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        token, user = entry.get("token"), entry.get("user")
        role, group = entry.get("role", "user"), entry.get("group", "")
        account = entry.get("account", "")
        if not isinstance(token, str) or len(token) < 16:
            raise TokenFileError(f"{where}: token must be a string of at least 16 characters")
        if not isinstance(user, str) or not user:
            raise TokenFileError(f"{where}: user must be a non-empty string")
        if role not in ROLES:
            raise TokenFileError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(group, str):
            raise TokenFileError(f"{where}: group must be a string")
        if not isinstance(account, str):
            raise TokenFileError(f"{where}: account must be a string (a Unix account name)")
        if token in out:
            raise TokenFileError(f"{where}: the same token is listed twice")
        out[token] = Principal(user, role, group, account)
    return out


def add_token(
    path: Path, user: str, role: str = "user", group: str = "", *, account: str = ""
) -> str:
    """Append a new random token for ``user`` to the file (created 0600); returns it.
    ``account``: the Unix account the user's jobs run as (empty: the user name)."""
    if role not in ROLES:
        raise TokenFileError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    entries: list[dict[str, str]] = []
    if path.exists():
        load_tokens(path)  # refuse to extend a broken file
        entries = list(tomllib.loads(path.read_text()).get("token", []))
    token = secrets.token_urlsafe(32)
    entry = {"token": token, "user": user, "role": role}
    if group:
        entry["group"] = group
    if account:
        entry["account"] = account
    entries.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(tomli_w.dumps({"token": entries}))
    return token


class Tokens:
    """The token file, read again when it changes (add a user without a restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._table: dict[str, Principal] = {}

    def lookup(self, token: str) -> Principal | None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime != self._mtime:
            self._table = load_tokens(self.path)
            self._mtime = mtime
        return self._table.get(token)
