"""Bearer tokens: who a request comes from and what it may do.

Why a file of tokens: an agent on a shared machine needs to know which user
submits (fairshare, limits and who may cancel what depend on it) without an
identity service; an operator hands each user a token, as with a Slurm or
HTCondor pool password. The file is TOML, one ``[[token]]`` table per token:
``id`` (a short name to list and revoke it by), ``sha256`` (the SHA-256 hex
of the token: the token itself is never stored, so reading the file gives
no usable token), ``user``, ``role`` (``user`` or ``admin``), optional
``group``, optional ``account`` (the Unix account the user's jobs run as;
default the user name) and ``created`` (Unix seconds). The file is mode 0600,
the agent's user's alone.

A token is 256 random bits (``secrets.token_urlsafe(32)``), shown once when
it is made (``htcsim agent token add``). A request's token is hashed and
looked up by its hash, then compared in constant time.

A file in the old format (the plaintext token under ``token``) is migrated
in place when read: each ``token`` becomes its ``sha256`` (and gets an
``id``); a file that cannot be rewritten (a read-only mount) is refused, the
message saying how to write the hashes by hand (``TokenFileError``).

``Tokens`` is the running agent's view of that file, read again whenever it
changes (its mtime, inode or size): a token added or revoked by
``htcsim agent token add/revoke`` takes effect at the next request, without
a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from htcsim.agent.engine.principal import Principal

ROLES = ("user", "admin")
KEYS = frozenset({"id", "sha256", "user", "role", "group", "account", "created"})
LEGACY_KEYS = frozenset({"token", "user", "role", "group", "account"})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TokenFileError(ValueError):
    """A bad token file; the message names the file and the entry."""


def token_hash(token: str) -> str:
    """The SHA-256 hex of a token, as the file stores it."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _read(path: Path) -> list[Any]:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TokenFileError(f"{path}: not valid TOML ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise TokenFileError(f"{path}: not UTF-8 text ({exc})") from exc
    entries = data.get("token", [])
    if not isinstance(entries, list):
        raise TokenFileError(f"{path}: token must be an array of tables ([[token]])")
    return entries


def _check(path: Path, k: int, entry: Any, ids: set[str], hashes: set[str]) -> dict[str, Any]:
    """One entry, checked (new or old format); returns it in the new format."""
    where = f"{path}: token entry {k + 1}"
    if not isinstance(entry, dict):
        raise TokenFileError(f"{where} is not a table")
    legacy = "token" in entry
    unknown = set(entry) - (LEGACY_KEYS | {"id", "created"} if legacy else KEYS)
    if unknown:
        raise TokenFileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    user, role = entry.get("user"), entry.get("role", "user")
    group, account = entry.get("group", ""), entry.get("account", "")
    if legacy:
        token = entry["token"]
        if not isinstance(token, str) or len(token) < 16:
            raise TokenFileError(f"{where}: token must be a string of at least 16 characters")
        digest = token_hash(token)
    else:
        digest = entry.get("sha256", "")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise TokenFileError(
                f"{where}: sha256 must be the 64 lowercase hex digits of the token's SHA-256"
            )
    if not isinstance(user, str) or not user:
        raise TokenFileError(f"{where}: user must be a non-empty string")
    if role not in ROLES:
        raise TokenFileError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(group, str):
        raise TokenFileError(f"{where}: group must be a string")
    if not isinstance(account, str):
        raise TokenFileError(f"{where}: account must be a string")
    token_id = entry.get("id") or (digest[:12] if legacy else "")
    if not isinstance(token_id, str) or not _ID.match(token_id):
        raise TokenFileError(f"{where}: id must be 1-64 letters, digits, '.', '_' or '-'")
    created = entry.get("created", 0)
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise TokenFileError(f"{where}: created must be a number (Unix seconds)")
    if digest in hashes:
        raise TokenFileError(f"{where}: the same token is listed twice")
    if token_id in ids:
        raise TokenFileError(f"{where}: id {token_id!r} is listed twice")
    hashes.add(digest)
    ids.add(token_id)
    out: dict[str, Any] = {"id": token_id, "sha256": digest, "user": user, "role": role}
    if group:
        out["group"] = group
    if account:
        out["account"] = account
    out["created"] = created
    return out


def read_entries(path: Path, *, migrate: bool = True) -> list[dict[str, Any]]:
    """The file's entries, checked, in the hashed format; a missing file has none.

    Entries in the old plaintext format are rewritten as hashes in place
    (``migrate``); if the file cannot be rewritten the read is refused."""
    if not path.exists():
        return []
    raw = _read(path)
    ids: set[str] = set()
    hashes: set[str] = set()
    entries = [_check(path, k, e, ids, hashes) for k, e in enumerate(raw)]
    if any(isinstance(e, dict) and "token" in e for e in raw):
        if not migrate:
            raise TokenFileError(
                f"{path}: holds plaintext tokens (key 'token'); start the agent or run "
                "`htcsim agent token list` with write access to it to store them as hashes"
            )
        try:
            write_entries(path, entries)
        except OSError as exc:
            raise TokenFileError(
                f"{path}: holds plaintext tokens (key 'token') and cannot be rewritten as "
                f"hashes ({exc.strerror}); replace each 'token = \"T\"' by 'sha256 = \"<sha256 "
                "hex of T>\"' (printf %s T | sha256sum)"
            ) from None
    return entries


def write_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    """Replace the file atomically (a new file of mode 0600, then rename)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(tomli_w.dumps({"token": entries}))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _principal(entry: dict[str, Any]) -> Principal:
    return Principal(entry["user"], entry["role"], entry.get("group", ""), entry.get("account", ""))


def load_tokens(path: Path) -> dict[str, Principal]:
    """sha256 hex of a token -> principal; a missing file is an empty table (every
    request is refused). Old plaintext entries are migrated to hashes in place."""
    return {e["sha256"]: _principal(e) for e in read_entries(path)}


def add_token(
    path: Path, user: str, role: str = "user", group: str = "", *, account: str = ""
) -> str:
    """Add a new random token for ``user`` to the file (created 0600); returns the token,
    which only its hash is kept of."""
    if role not in ROLES:
        raise TokenFileError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not user:
        raise TokenFileError("user must be a non-empty string")
    entries = read_entries(path)  # refuse to extend a broken file
    token = secrets.token_urlsafe(32)
    ids = {e["id"] for e in entries}
    token_id = secrets.token_hex(4)
    while token_id in ids:
        token_id = secrets.token_hex(4)
    entry: dict[str, Any] = {"id": token_id, "sha256": token_hash(token), "user": user}
    entry["role"] = role
    if group:
        entry["group"] = group
    if account:
        entry["account"] = account
    entry["created"] = int(time.time())
    write_entries(path, [*entries, entry])
    return token


def revoke_token(path: Path, token_id: str) -> dict[str, Any]:
    """Remove the entry ``token_id``; returns it (TokenFileError if there is none)."""
    entries = read_entries(path)
    keep = [e for e in entries if e["id"] != token_id]
    if len(keep) == len(entries):
        raise TokenFileError(f"{path}: no token with id {token_id!r}")
    write_entries(path, keep)
    return next(e for e in entries if e["id"] == token_id)


class Tokens:
    """The token file, read again when it changes (add or revoke without a restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._table: dict[str, tuple[str, Principal]] = {}

    def lookup(self, token: str) -> Principal | None:
        try:
            st = self.path.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._table = {h: (h, p) for h, p in load_tokens(self.path).items()}
            self._stamp = stamp
        digest = token_hash(token)
        # found by its hash (which a caller cannot steer), then compared in constant time
        stored, principal = self._table.get(digest, ("", None))
        if principal is None or not hmac.compare_digest(stored, digest):
            return None
        return principal
