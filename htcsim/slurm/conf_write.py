"""The slurm.conf fragment: the plan's settings, and node and partition lines for a cluster.

The fragment is meant for ``include`` at the end of a site's slurm.conf: a
setting given twice keeps its last value, so the fragment's values win, and
a list-valued setting (SchedulerParameters, AccountingStorageEnforce,
AccountingStorageTRES) replaces the site's whole list; the header says so.

Nodes: each node type becomes one NodeName line, ``TYPE[1-N]`` (a name that
ends in a digit gets a ``-``), with CPUs, RealMemory (MiB, Slurm's MB),
TmpDisk (scratch, MiB), ``Gres=gpu:N`` and an increasing Weight in
cluster-file order, so that Slurm fills the types in the order htcsim does.
With autoscaling a type defines its max nodes, State=CLOUD, and its min goes
to SuspendExcNodes. Partitions: one PartitionName line each (the first is the
default, as htcsim sends a job of no listed partition to the first), or one
partition of every node when the cluster has none.
"""

from __future__ import annotations

from dataclasses import dataclass

from htcsim.cluster import Cluster
from htcsim.policy import Policy
from htcsim.slurm import values as sv
from htcsim.slurm.errors import SlurmError
from htcsim.slurm.plan import Plan

SECTIONS = ("priority", "backfill", "limits", "failures", "power saving")
"""The order of the fragment's sections."""
DEFAULT_PARTITION = "batch"
"""The partition of every node, written for a cluster file without partitions."""


@dataclass(frozen=True)
class NodeLine:
    type_name: str
    hosts: str
    count: int
    line: str


def node_prefix(type_name: str) -> str:
    """The host name prefix of a node type's nodes (``gpu`` -> ``gpu1``, ``a100`` ->
    ``a100-1``)."""
    if not sv.valid_node_prefix(type_name.rstrip("0123456789") or "x"):
        raise SlurmError(
            f"node type {type_name!r} cannot name Slurm nodes: use letters, digits, '-', "
            "'_' or '.', starting with a letter and ending with a letter or digits"
        )
    return f"{type_name}-" if type_name[-1].isdigit() else type_name


def node_lines(cluster: Cluster, policy: Policy) -> list[NodeLine]:
    out = []
    for weight, t in enumerate(cluster.node_types, start=1):
        count = policy.autoscale_bounds(t.name, t.count)[1] if policy.autoscale else t.count
        hosts = sv.hostlist(node_prefix(t.name), 1, count)
        parts = [f"NodeName={hosts}", f"CPUs={t.cores}"]
        if t.mem_mib:
            parts.append(f"RealMemory={t.mem_mib}")
        if t.scratch_mib:
            parts.append(f"TmpDisk={t.scratch_mib}")
        if t.gpus:
            parts.append(f"Gres=gpu:{t.gpus}")
        parts.append(f"Weight={weight}")
        parts.append("State=CLOUD" if policy.autoscale else "State=UNKNOWN")
        out.append(NodeLine(t.name, hosts, count, " ".join(parts)))
    return out


def partition_lines(
    cluster: Cluster, nodes: list[NodeLine], options: list[tuple[str, str]]
) -> list[str]:
    hosts = {n.type_name: n.hosts for n in nodes}
    partitions = [(p.name, [hosts[t] for t in p.node_types]) for p in cluster.partitions]
    if not partitions:
        partitions = [(DEFAULT_PARTITION, ["ALL"])]
    out = []
    for k, (name, members) in enumerate(partitions):
        parts = [f"PartitionName={name}", f"Nodes={','.join(members)}"]
        parts.append(f"Default={'YES' if k == 0 else 'NO'}")
        parts.extend(["MaxTime=INFINITE", "State=UP"])
        parts.extend(f"{key}={value}" for key, value in options)
        out.append(" ".join(parts))
    return out


def suspend_exc_nodes(cluster: Cluster, policy: Policy, nodes: list[NodeLine]) -> str:
    """``SuspendExcNodes`` for the autoscaling minima: ``hosts:min`` per node type."""
    items = []
    for t, line in zip(cluster.node_types, nodes, strict=True):
        low = policy.autoscale_bounds(t.name, t.count)[0]
        if low:
            items.append(f"{line.hosts}:{low}")
    return ",".join(items)


def slurm_conf_text(
    plan: Plan, header: list[str], cluster: Cluster | None = None, policy: Policy | None = None
) -> str:
    """The fragment: a header, the settings by section, then nodes and partitions."""
    lines = [f"# {h}" if h else "#" for h in header]
    settings = list(plan.settings)
    nodes: list[NodeLine] = []
    if cluster is not None and policy is not None:
        nodes = node_lines(cluster, policy)
        if policy.autoscale:
            excluded = suspend_exc_nodes(cluster, policy, nodes)
            if excluded:
                settings.append(("power saving", "SuspendExcNodes", excluded))
    sections = list(dict.fromkeys(name for name, _, _ in settings))
    for section in sorted(sections, key=lambda s: SECTIONS.index(s) if s in SECTIONS else 99):
        lines.extend(["", f"# {section}"])
        lines.extend(f"{key}={value}" for name, key, value in settings if name == section)
    if cluster is not None and policy is not None:
        lines.extend(["", "# nodes and partitions (from the cluster file)"])
        if any(t.gpus for t in cluster.node_types):
            lines.append("GresTypes=gpu")
        lines.extend(n.line for n in nodes)
        lines.extend(partition_lines(cluster, nodes, plan.partition_options))
    elif plan.partition_options:
        options = " ".join(f"{k}={v}" for k, v in plan.partition_options)
        lines.extend(["", f"# add to every PartitionName line of your slurm.conf: {options}"])
    return "\n".join(lines) + "\n"
