"""The shepherd's run directory: its files, its protection, its listening socket.

Shared by the keeper (which binds the socket and takes the lock, once for
every worker it starts), the worker and the agent's executor. Only the
standard library: the shepherd imports it and must start fast.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

SOCKET_FILE = "shepherd.sock"
SECRET_FILE = "shepherd.secret"
LOCK_FILE = "shepherd.lock"
LIVE_FILE = "shepherd.live"
"""Written by a keeper at its start, removed at its clean end: found by the
next keeper, it says the previous shepherd was killed."""
LOG_FILE = "shepherd.log"
IDENTITY_FILE = "shepherd.pid"
"""Written by each worker at its start: its and its keeper's (pid, start time),
so that an agent can kill (verified) a worker that never answers."""
MAX_PENDING = 16


def socket_path(run_dir: Path) -> Path:
    """The shepherd's socket: a file in the (0700) run directory."""
    return run_dir / SOCKET_FILE


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address to ``bind``/``connect`` for ``path``: the path itself or, when
    too long for ``sun_path``, the same file reached through ``/proc/self/fd``."""
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def secure_dir(path: Path) -> None:
    """Create ``path`` with mode 0700 if missing; refuse one that is a symlink or
    not this uid's, and take group/other permissions off one that has them."""
    old = os.umask(0o077)
    try:
        path.mkdir(parents=True, exist_ok=True)
    finally:
        os.umask(old)
    st = os.lstat(path)
    if os.path.islink(path) or not os.path.isdir(path):
        raise NotADirectoryError(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise PermissionError(f"{path} belongs to uid {st.st_uid}, not to {os.geteuid()}")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by a file holding ``text`` (never half-written)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def listen(run_dir: Path) -> socket.socket:
    """Bind the run directory's socket (0600, replacing a dead shepherd's file:
    the caller holds the run directory's lock, so no live one serves it)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = socket_path(run_dir)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    old = os.umask(0o177)
    try:
        with unix_address(path) as address:
            listener.bind(address)
    finally:
        os.umask(old)
    listener.listen(MAX_PENDING)
    return listener
