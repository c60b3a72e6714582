"""A site's Slurm accounting, from what sacctmgr prints or a script of sacctmgr commands.

Three inputs, told apart by their first line:

- ``sacctmgr dump CLUSTER file=F``: ``Cluster - 'name':K=V:...``, then
  ``Parent - 'acct'`` lines followed by the ``Account - ...`` and
  ``User - ...`` lines under that parent. Shares (``FairShare``) and
  association limits; QOS definitions are not in a dump.
- ``sacctmgr --parsable2 show qos``: a header of column names separated by
  ``|``, then one QOS a line (``-p``'s trailing ``|`` is accepted).
- a shell script of ``sacctmgr`` commands (``add``/``create`` and
  ``modify``/``update`` of accounts, users, QOS and clusters), one command a
  line (``\\`` continuations joined), such as the one ``htcsim export slurm``
  writes. Other shell lines are skipped; ``delete`` commands are listed as
  not applied.

Keys are case-insensitive and sacctmgr's short forms are accepted
(``MaxJobsPU`` for ``MaxJobsPerUser``, ``GrpSubmit`` for ``GrpSubmitJobs``,
``Share`` for ``Fairshare``...). Malformed input stops with the file and line.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from htcsim.slurm.errors import SlurmError

_ALIASES = {
    "share": "fairshare",
    "shares": "fairshare",
    "grpsubmit": "grpsubmitjobs",
    "maxsubmit": "maxsubmitjobs",
    "maxtres": "maxtresperjob",
    "maxjobspu": "maxjobsperuser",
    "maxsubmitpu": "maxsubmitjobsperuser",
    "maxsubmitjobspu": "maxsubmitjobsperuser",
    "maxtrespu": "maxtresperuser",
    "maxjobspa": "maxjobsperaccount",
    "maxsubmitpa": "maxsubmitjobsperaccount",
    "maxsubmitjobspa": "maxsubmitjobsperaccount",
    "maxtrespa": "maxtresperaccount",
    "acct": "account",
    "accounts": "account",
    "names": "name",
    "users": "user",
    "clusters": "cluster",
}
_ENTITIES = {
    "account": "account",
    "accounts": "account",
    "acct": "account",
    "user": "user",
    "users": "user",
    "qos": "qos",
    "cluster": "cluster",
    "clusters": "cluster",
}
_DUMP_LINE = re.compile(r"^(Cluster|Parent|Account|User)\s+-\s+(.*)$", re.IGNORECASE)
_SACCTMGR = re.compile(r"(^|[\s;&|(])(\S*/)?sacctmgr(\s|$)")


def canonical(key: str) -> str:
    """A sacctmgr key in lower case, short forms spelled out."""
    low = key.strip().lower()
    return _ALIASES.get(low, low)


@dataclass
class Entity:
    """An account, a user's association with an account, a QOS: its settings (keys as
    :func:`canonical` gives them) and where it was first named."""

    name: str
    where: str
    parent: str = ""  # an account's parent account; a user association's account
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Accounting:
    """Everything read from one or more accounting inputs, merged in reading order."""

    cluster: dict[str, str] = field(default_factory=dict)  # the cluster's root association
    accounts: dict[str, Entity] = field(default_factory=dict)
    users: dict[tuple[str, str], Entity] = field(default_factory=dict)  # (user, account)
    qos: dict[str, Entity] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    not_applied: list[str] = field(default_factory=list)  # "file:line: text"


def read_accounting(path: str | Path, into: Accounting | None = None) -> Accounting:
    """Read one input (its kind told by its first line) into ``into`` (or a new one)."""
    acc = into if into is not None else Accounting()
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SlurmError(f"{shown}: cannot read it ({exc.strerror or exc})") from exc
    acc.sources.append(shown)
    lines = text.splitlines()
    first = next(
        ((n, line) for n, line in enumerate(lines, 1) if line.strip() and not _comment(line)),
        None,
    )
    if first is None:
        raise SlurmError(f"{shown}: empty; expected a sacctmgr dump, QOS listing or script")
    number, line = first
    if _DUMP_LINE.match(line.strip()):
        _read_dump(lines, shown, acc)
    elif "|" in line and "name" in [c.strip().lower() for c in line.split("|")]:
        _read_qos_listing(lines, number, shown, acc)
    elif line.startswith("#!") or any(_SACCTMGR.search(x) for x in lines):
        _read_script(lines, shown, acc)
    else:
        raise SlurmError(
            f"{shown}:{number}: not a sacctmgr dump (Cluster - ...), a QOS listing "
            "(sacctmgr --parsable2 show qos) or a script of sacctmgr commands"
        )
    return acc


def _comment(line: str) -> bool:
    stripped = line.strip()
    return stripped.startswith("#") and not stripped.startswith("#!")


# --------------------------------------------------------------------------- dump


def _read_dump(lines: list[str], shown: str, acc: Accounting) -> None:
    parent = "root"
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{shown}:{number}"
        match = _DUMP_LINE.match(line)
        if match is None:
            raise SlurmError(f"{where}: expected Cluster, Parent, Account or User - 'name':...")
        title = match.group(1).lower()
        fields = _split_colons(match.group(2), where)
        name = _unquote(fields[0])
        params: dict[str, str] = {}
        for item in fields[1:]:
            key, sep, value = item.partition("=")
            if not sep:
                raise SlurmError(f"{where}: {item!r} is not KEY=VALUE")
            params[canonical(key)] = _unquote(value)
        if title == "cluster":
            acc.cluster.update(params)
        elif title == "parent":
            parent = name
        elif title == "account":
            entity = acc.accounts.setdefault(name, Entity(name, where, parent))
            entity.parent = parent
            entity.params.update(params)
        else:
            user = acc.users.setdefault((name, parent), Entity(name, where, parent))
            user.params.update(params)


def _split_colons(text: str, where: str) -> list[str]:
    out, current, quote = [], "", ""
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            current += ch
        elif ch == ":":
            out.append(current)
            current = ""
        else:
            current += ch
    if quote:
        raise SlurmError(f"{where}: a quote is not closed")
    out.append(current)
    return [part.strip() for part in out]


def _unquote(text: str) -> str:
    value = text.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


# ------------------------------------------------------------------------ QOS listing


def _read_qos_listing(lines: list[str], header_at: int, shown: str, acc: Accounting) -> None:
    head = lines[header_at - 1].rstrip()
    trailing = head.endswith("|")  # -p ends every line with |, -P does not
    header = [canonical(c) for c in (head[:-1] if trailing else head).split("|")]
    for number, raw in enumerate(lines[header_at:], header_at + 1):
        line = raw.rstrip()
        if not line:
            continue
        cells = (line[:-1] if trailing and line.endswith("|") else line).split("|")
        if len(cells) != len(header):
            raise SlurmError(
                f"{shown}:{number}: {len(cells)} fields where the header has {len(header)}"
            )
        row = dict(zip(header, (c.strip() for c in cells), strict=True))
        name = row.pop("name")
        if not name:
            raise SlurmError(f"{shown}:{number}: a QOS without a name")
        entity = acc.qos.setdefault(name, Entity(name, f"{shown}:{number}"))
        entity.params.update({k: v for k, v in row.items() if v != ""})


# ----------------------------------------------------------------------------- script


def _read_script(lines: list[str], shown: str, acc: Accounting) -> None:
    pending, start = "", 0
    for number, raw in enumerate(lines, 1):
        if not pending:
            start = number
        if raw.rstrip("\r").endswith("\\"):
            pending += raw.rstrip("\r")[:-1]
            continue
        line = pending + raw
        pending = ""
        if _SACCTMGR.search(line) is None or line.strip().startswith("#"):
            continue
        _command(line, f"{shown}:{start}", acc)


def _command(line: str, where: str, acc: Accounting) -> None:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise SlurmError(f"{where}: cannot split the command line ({exc})") from exc
    at = next((k for k, t in enumerate(tokens) if t.rsplit("/", 1)[-1] == "sacctmgr"), None)
    if at is None:  # the word is inside a quoted string or a $(...)
        return
    args: list[str] = []
    for token in tokens[at + 1 :]:
        if token and all(ch in "();|&<>" for ch in token):
            break
        args.append(token)
    args = _drop_options(args)
    if not args:
        return
    verb = args[0].lower()
    if verb in ("show", "list", "dump", "load", "archive", "help", "version"):
        return
    if verb in ("delete", "remove"):
        acc.not_applied.append(f"{where}: {' '.join(args)}")
        return
    if verb not in ("add", "create", "modify", "update"):
        raise SlurmError(f"{where}: sacctmgr {args[0]}: not a sacctmgr command")
    if len(args) < 2:
        raise SlurmError(f"{where}: sacctmgr {verb} needs an entity (account, user, qos...)")
    entity = _ENTITIES.get(args[1].lower())
    if entity is None:
        acc.not_applied.append(f"{where}: {' '.join(args)}")
        return
    if verb in ("add", "create"):
        _add(entity, args[2:], where, acc)
    else:
        _modify(entity, args[2:], where, acc)


def _drop_options(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-M", "--clusters"):
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


def _pairs(args: list[str], where: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Bare words (names) and KEY=VALUE pairs (keys canonical; ``QOS+=x`` keeps its +)."""
    names: list[str] = []
    pairs: list[tuple[str, str]] = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            names.extend(n for n in arg.split(",") if n)
            continue
        if not key:
            raise SlurmError(f"{where}: {arg!r} has no key")
        pairs.append((canonical(key), value))
    return names, pairs


def _add(entity: str, args: list[str], where: str, acc: Accounting) -> None:
    names, pairs = _pairs(args, where)
    params: dict[str, str] = {}
    accounts = [""]
    parent = "root"
    for key, value in pairs:
        if key == "name":
            names.extend(n for n in value.split(",") if n)
        elif key == "account" and entity == "user":
            accounts = [a for a in value.split(",") if a]
        elif key == "parent":
            parent = value
        elif key != "cluster":
            params[key] = value
    if not names:
        raise SlurmError(f"{where}: sacctmgr add {entity} names no {entity}")
    for name in names:
        _apply(entity, name, accounts, params, where, acc, parent)


def _modify(entity: str, args: list[str], where: str, acc: Accounting) -> None:
    lowered = [a.lower() for a in args]
    if "set" not in lowered:
        raise SlurmError(f"{where}: sacctmgr modify {entity} has no 'set'")
    cut = lowered.index("set")
    after = args[cut + 1 :]
    later = next((k for k, a in enumerate(after) if a.lower() == "where"), len(after))
    filters = [a for a in args[:cut] + after[later + 1 :] if a.lower() != "where"]
    sets = after[:later]  # "set K=V ... where K=V": the words after a later where filter
    names, pairs = _pairs(filters, where)
    accounts: list[str] = []
    for key, value in pairs:
        if key in ("name", "user") or (key == "account" and entity == "account"):
            names.extend(n for n in value.split(",") if n)
        elif key == "account":
            accounts.extend(a for a in value.split(",") if a)
    more, set_pairs = _pairs(sets, where)
    if more:
        raise SlurmError(f"{where}: {' '.join(more)!r} after 'set' is not KEY=VALUE")
    params = {k: v for k, v in set_pairs}
    if entity == "cluster":
        acc.cluster.update(params)
        return
    if not names:
        raise SlurmError(f"{where}: sacctmgr modify {entity} names no {entity} (where name=...)")
    for name in names:
        _apply(entity, name, accounts or [""], params, where, acc, None)


def _apply(
    entity: str,
    name: str,
    accounts: list[str],
    params: dict[str, str],
    where: str,
    acc: Accounting,
    parent: str | None,
) -> None:
    if entity == "cluster":
        acc.cluster.update(params)
    elif entity == "qos":
        acc.qos.setdefault(name, Entity(name, where)).params.update(params)
    elif entity == "account":
        account = acc.accounts.setdefault(name, Entity(name, where, parent or "root"))
        if parent is not None:
            account.parent = parent
        account.params.update(params)
    else:
        known = [key for key in acc.users if key[0] == name]
        targets = known if accounts == [""] and known else [(name, a) for a in accounts]
        for key in targets:
            acc.users.setdefault(key, Entity(name, where, key[1])).params.update(params)
