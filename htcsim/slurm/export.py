"""``htcsim export slurm``: the directory a Slurm administrator applies.

Three files: ``slurm.conf`` (a fragment to include at the end of the site's
slurm.conf), ``sacctmgr.sh`` (QOS, accounts and user shares, re-runnable) and
``MAPPING.md`` (each policy key, what it became, exact/approximate/impossible).
A policy that uses something Slurm cannot express is still exported; the
result carries the one warning line the command prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from htcsim import __version__
from htcsim.cluster import Cluster
from htcsim.policy import Policy
from htcsim.slurm.conf_write import node_lines, slurm_conf_text
from htcsim.slurm.errors import SlurmError
from htcsim.slurm.mapping import mapping_markdown, plan_export, warning_line
from htcsim.slurm.names import Names
from htcsim.slurm.plan import LIMITS_QOS, Plan
from htcsim.slurm.sacctmgr_write import sacctmgr_script

FILES = ("slurm.conf", "sacctmgr.sh", "MAPPING.md")


@dataclass(frozen=True)
class Exported:
    files: tuple[Path, ...]
    plan: Plan
    warning: str | None


def export_slurm(
    policy: Policy,
    out_dir: str | Path,
    *,
    cluster: Cluster | None = None,
    names: Names | None = None,
    policy_name: str = "policy.toml",
    cluster_name: str | None = None,
) -> Exported:
    """Write the three files into ``out_dir`` (created if missing)."""
    names = names or Names()
    if any(q.name.lower() == LIMITS_QOS for q in policy.qos):
        raise SlurmError(
            f"a QoS is named {LIMITS_QOS!r}, the name the export gives the partition QOS "
            "that carries the limits; rename it"
        )
    if cluster is not None:
        node_lines(cluster, policy)  # node names: an unusable node type name fails here
    plan = plan_export(policy, names, cluster=cluster is not None)
    source = policy_name + (f" and {cluster_name}" if cluster_name else "")
    written = f"written by htcsim {__version__} from {source}"
    conf_header = [
        f"slurm.conf fragment {written}.",
        "Include it at the end of slurm.conf (include htcsim-slurm.conf): a setting",
        "given twice keeps its last value, and SchedulerParameters,",
        "AccountingStorageEnforce and AccountingStorageTRES replace yours: merge your",
        "other options into them. SchedulerType and PriorityType take effect when",
        "slurmctld restarts, the others with scontrol reconfigure. MAPPING.md says",
        "what each policy key became and how faithfully.",
    ]
    script_header = [
        f"sacctmgr script {written}.",
        "Run it as a Slurm administrator. It adds the QOS and accounts that are",
        "missing and sets every value the policy manages (-1 clears a limit), so it",
        "can be run again after the policy changes. A failed command is reported and",
        "the script goes on; it exits 1 if any failed.",
    ]
    md_header = [
        f"Files {written}:",
        "",
        "- `slurm.conf`: include it at the end of your slurm.conf; restart slurmctld "
        "(SchedulerType and PriorityType need a restart).",
        "- `sacctmgr.sh`: run it once as a Slurm administrator, and again after a change "
        "of the policy.",
        "",
        "**exact**: Slurm does what the simulator does with that value. **approximate**: "
        "close, the note says how it differs. **impossible**: Slurm cannot express it; the "
        "note says why and what was written instead.",
    ]
    cluster_notes = _cluster_notes(cluster, policy) if cluster is not None else []
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    paths = tuple(target / name for name in FILES)
    paths[0].write_text(slurm_conf_text(plan, conf_header, cluster, policy), encoding="utf-8")
    paths[1].write_text(sacctmgr_script(plan, script_header), encoding="utf-8")
    paths[1].chmod(0o755)
    paths[2].write_text(mapping_markdown(plan, md_header, cluster_notes), encoding="utf-8")
    warning = warning_line(plan, str(paths[2])) if plan.impossible else None
    return Exported(paths, plan, warning)


def _cluster_notes(cluster: Cluster, policy: Policy) -> list[str]:
    notes = []
    for line, t in zip(node_lines(cluster, policy), cluster.node_types, strict=True):
        notes.append(f"node type `{t.name}` ({t.count} nodes): `{line.line}` (exact)")
        if t.price_per_hour:
            notes.append(
                f"node type `{t.name}` price_per_hour = {t.price_per_hour}: not written "
                "(Slurm has no price per node; TRESBillingWeights weigh usage, not money)"
            )
    if policy.autoscale:
        notes.append(
            "State=CLOUD: nodes that do not exist while powered off (cloud); for nodes that "
            "do, drop it (Slurm's power saving suspends any idle node after SuspendTime)"
        )
    for p in cluster.partitions:
        if p.ids:
            notes.append(
                f"partition `{p.name}` ids = {list(p.ids)}: not a Slurm setting (jobs name "
                "their partition; the ids link a workload's jobs to it in htcsim)"
            )
    if not cluster.partitions:
        notes.append("no partitions: one partition `batch` of every node")
    for r in cluster.reservations:
        notes.append(
            f"reservation `{r.name}`: not written (a Slurm reservation is made on the running "
            "cluster with dates, scontrol create reservation; the cluster file's are seconds "
            "from a workload's start)"
        )
    return notes
