"""Check the files and directories a command is given before it does any work.

Why up front: a replay of a year of jobs that ends in "cannot write" wastes the
replay, and the error Python raises there (FileExistsError with a traceback)
names neither the option nor what to do. Each check answers in one line that
names the option and the path; the command raises the exit it returns.
Private to ``htcsim.cli``; standard library only, so a command's start-up
stays light.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from htcsim.cli._console import fail


def _named(flag: str, path: Path) -> str:
    """``--out results`` for an option; the path alone for an argument (``flag`` empty)."""
    return f"{flag} {path}" if flag else str(path)


def input_file(path: Path, flag: str) -> None:
    """``path`` must be a readable file (``flag``: the option naming it; "" for an argument)."""
    if not path.exists():
        raise fail(f"{_named(flag, path)}: no such file")
    if path.is_dir():
        raise fail(f"{_named(flag, path)}: is a directory; give a file")
    if not os.access(path, os.R_OK):
        raise fail(f"{_named(flag, path)}: cannot read it (permission denied)")


def output_file(
    path: Path, flag: str, *, overwrite: bool = True, make_parents: bool = False
) -> None:
    """A file can be written at ``path``: not a directory, its directory there and writable.

    ``overwrite`` False refuses an existing file (``policy init`` never
    replaces a policy someone edited); ``make_parents`` True accepts missing
    directories above it, which the command creates (``report -o``).
    """
    if path.is_dir():
        raise fail(f"{_named(flag, path)}: is a directory; give a file name")
    if path.exists():
        if not overwrite:
            raise fail(f"{_named(flag, path)}: exists; not overwriting it")
        if not os.access(path, os.W_OK):
            raise fail(f"{_named(flag, path)}: cannot write it (permission denied)")
        return
    parent = path.parent
    if make_parents:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    elif not parent.exists():
        raise fail(f"{_named(flag, path)}: directory {parent} does not exist")
    if not parent.is_dir():
        raise fail(f"{_named(flag, path)}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise fail(f"{_named(flag, path)}: cannot write in {parent} (permission denied)")


def output_dir(path: Path, flag: str) -> None:
    """A directory can be used or created at ``path`` (with its missing parents).

    An existing file there is refused (the command would fail at its end,
    after the work); so is a path under a file or in a directory not writable.
    """
    if path.exists():
        if not path.is_dir():
            raise fail(f"{_named(flag, path)}: is a file; give a directory (created if missing)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise fail(f"{_named(flag, path)}: cannot write in it (permission denied)")
        return
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise fail(f"{_named(flag, path)}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise fail(f"{_named(flag, path)}: cannot create it in {ancestor} (permission denied)")


def write_failed(path: Path, flag: str, exc: OSError) -> typer.Exit:
    """The one line for a write that failed anyway (disk full, a race): the exit to raise."""
    return fail(f"{_named(flag, path)}: cannot write it ({exc.strerror or exc})")
