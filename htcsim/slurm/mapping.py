"""What each policy key becomes in Slurm, and MAPPING.md, which says so.

Why one entry point: the slurm.conf fragment, the sacctmgr script and
MAPPING.md must say the same thing about every key, so :func:`plan_export`
decides the translation once (``map_order``, ``map_limits``, ``map_nodes``,
``map_compat`` each take a part of the policy) and the writers only render the plan.
"""

from __future__ import annotations

from htcsim.policy import Policy
from htcsim.slurm import values as sv
from htcsim.slurm.map_compat import map_compat
from htcsim.slurm.map_limits import gpu_caps, map_limits
from htcsim.slurm.map_nodes import map_nodes
from htcsim.slurm.map_order import map_order
from htcsim.slurm.names import Names
from htcsim.slurm.plan import Plan


def plan_export(policy: Policy, names: Names | None = None, *, cluster: bool = False) -> Plan:
    """The translation of ``policy`` (with ``cluster``: node and partition lines will be
    written, so settings that need node or partition names can be)."""
    names = names or Names()
    plan = Plan()
    map_order(policy, plan, names)
    map_limits(policy, plan, names, cluster)
    map_nodes(policy, plan, cluster)
    map_compat(policy, plan)
    if plan.qos:
        plan.add("limits", "AccountingStorageEnforce", "associations,limits,qos")
        plan.extras.append(
            "AccountingStorageEnforce=associations,limits,qos: without `limits` Slurm does "
            "not enforce QOS limits, without `qos` a job may name any QOS"
        )
    if gpu_caps(policy):
        plan.add("limits", "AccountingStorageTRES", sv.TRES_GPU)
        plan.extras.append(
            "AccountingStorageTRES=gres/gpu: Slurm counts GPUs (for GPU limits) only when "
            "told to; add the TRES your site already tracks to this list"
        )
    return plan


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


def mapping_markdown(plan: Plan, header: list[str], cluster_notes: list[str]) -> str:
    """MAPPING.md: how to apply the files, then one row per policy key."""
    counts = {s: sum(r.status == s for r in plan.rows) for s in ("exact", "approximate")}
    impossible = plan.impossible
    lines = ["# What the policy became in Slurm", "", *header, ""]
    lines.append(
        f"{len(plan.rows)} policy keys: {counts['exact']} exact, {counts['approximate']} "
        f"approximate, {len(impossible)} impossible."
    )
    if impossible:
        lines.extend(["", "Impossible in Slurm (written as the nearest setting, or not at all):"])
        lines.extend(f"- `{r.key}` = {r.value}: {r.note}" for r in impossible)
    lines.extend(
        [
            "",
            "| policy key | value | Slurm | mapping | how / why |",
            "|---|---|---|---|---|",
        ]
    )
    for r in plan.rows:
        cells = (f"`{r.key}`", r.value, r.slurm, r.status, r.note)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.extend(["", "## Written without a policy key", ""])
    lines.extend(f"- {extra}" for extra in plan.extras)
    if cluster_notes:
        lines.extend(["", "## The cluster file", ""])
        lines.extend(f"- {note}" for note in cluster_notes)
    return "\n".join(lines) + "\n"


def warning_line(plan: Plan, mapping_path: str) -> str:
    """The one line the export prints when Slurm cannot express part of the policy."""
    keys = ", ".join(f"{r.key} = {r.value}" for r in plan.impossible)
    n = len(plan.impossible)
    return (
        f"{n} policy setting{'s' if n > 1 else ''} cannot be expressed in Slurm ({keys}); "
        f"{mapping_path} says why and what was written instead"
    )
