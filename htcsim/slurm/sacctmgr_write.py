"""The sacctmgr script: the plan's QOS, accounts and users, set so that it can be re-run.

Why a script of separate commands: each entity is added only when sacctmgr
does not show it, then every value the policy manages is set with ``modify
... set`` (``-1`` clears a limit the policy no longer has), so running the
script again after a change of the policy converges on the new values. A
failed command is reported on stderr and the script goes on; it exits 1 when
any failed. Users must already be associated with an account (the policy
does not say which): their share is set on every association they have.

Each command stays on one line, so that ``htcsim import slurm-conf
--sacctmgr`` reads the script back (``sacctmgr_read``).
"""

from __future__ import annotations

import shlex

from htcsim.slurm.plan import Plan

PRELUDE = """\
set -u
failed=0
fail() { echo "sacctmgr.sh: failed: $*" >&2; failed=1; }
missing() {  # missing ENTITY NAME FIELD: true when sacctmgr shows no such entity
    [ -z "$(sacctmgr -n -P show "$1" name="$2" format="$3" 2>/dev/null)" ]
}"""


def sacctmgr_script(plan: Plan, header: list[str]) -> str:
    q = shlex.quote
    lines = ["#!/bin/sh", *(f"# {h}" if h else "#" for h in header), "", PRELUDE]
    for spec in plan.qos:
        name = q(spec.name)
        lines.extend(["", f"# QOS {spec.name}: {spec.comment}"])
        lines.append(
            f"if missing qos {name} Name; then "
            f'sacctmgr -i add qos {name} || fail "add qos {spec.name}"; fi'
        )
        values = " ".join(f"{k}={v}" for k, v in spec.settings)
        lines.append(
            f"sacctmgr -i modify qos where name={name} set {values} "
            f'|| fail "modify qos {spec.name}"'
        )
        if not spec.partition:
            lines.append(
                f"sacctmgr -i modify account where name=root set QOS+={name} "
                f'|| fail "let every association use qos {spec.name}"'
            )
    if plan.accounts:
        lines.extend(["", "# accounts (the policy's groups) and their shares among accounts"])
    for account, share in plan.accounts:
        name = q(account)
        lines.append(
            f"if missing account {name} Account; then sacctmgr -i add account {name} "
            f'Fairshare={share} || fail "add account {account}"; fi'
        )
        lines.append(
            f"sacctmgr -i modify account where name={name} set Fairshare={share} "
            f'|| fail "modify account {account}"'
        )
    if plan.users:
        lines.extend(
            [
                "",
                "# users and their shares within their account; each must already be",
                "# associated with an account (sacctmgr add user NAME account=ACCOUNT)",
            ]
        )
    for user, share in plan.users:
        lines.append(
            f"sacctmgr -i modify user where name={q(user)} set Fairshare={share} "
            f'|| fail "modify user {user} (is it associated with an account?)"'
        )
    lines.extend(["", 'exit "$failed"'])
    return "\n".join(lines) + "\n"
