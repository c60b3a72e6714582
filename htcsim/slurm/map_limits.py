"""QoS, limits and placement in Slurm's terms: QOS records, a partition QOS, LLN.

The policy's QoS become Slurm QOS (Priority, GrpJobs, GrpTRES, GrpSubmitJobs);
its per-user and per-group caps become the limits of one QOS set as the
partition QOS of every partition, so that they count every job whatever its
own QOS (MaxJobsPerUser, MaxTRESPerUser, ... PerAccount: htcsim's groups are
Slurm accounts). Slurm keeps names in lower case; a GPU TRES limit needs
``gres/gpu`` in AccountingStorageTRES.
"""

from __future__ import annotations

from htcsim.policy import LIMIT_NAMES, Policy, QoS
from htcsim.slurm import values as sv
from htcsim.slurm.names import Names
from htcsim.slurm.plan import (
    LIMITS_QOS,
    Plan,
    QosSpec,
    Row,
    slurm_name,
    text,
    uint32,
)

_QOS_LIMITS = {  # QoS field -> (QOS setting, TRES name or "")
    "running_jobs": ("GrpJobs", ""),
    "cores": ("GrpTRES", sv.TRES_CPU),
    "gpus": ("GrpTRES", sv.TRES_GPU),
    "queued_jobs": ("GrpSubmitJobs", ""),
}
_LIMIT_SETTINGS = {  # what -> (per-user setting, per-account setting, TRES name or "")
    "running_jobs": ("MaxJobsPerUser", "MaxJobsPerAccount", ""),
    "cores": ("MaxTRESPerUser", "MaxTRESPerAccount", sv.TRES_CPU),
    "gpus": ("MaxTRESPerUser", "MaxTRESPerAccount", sv.TRES_GPU),
    "queued_jobs": ("MaxSubmitJobsPerUser", "MaxSubmitJobsPerAccount", ""),
}
_REFUSES = (
    "Slurm refuses a submission beyond the cap (pending and running jobs together); "
    "htcsim accepts the job and considers only the first N pending ones"
)


def map_limits(policy: Policy, plan: Plan, names: Names, cluster: bool) -> None:
    """The [[qos]], [limits] and [placement] keys."""
    _qos(policy, plan, names, gpu_caps(policy))
    _limits(policy, plan, cluster, gpu_caps(policy))
    _placement(policy, plan, cluster)


def gpu_caps(policy: Policy) -> bool:
    """Whether any cap counts GPUs: then every TRES limit says gres/gpu (-1 clears a cap
    an earlier policy had), and Slurm must count GPUs (AccountingStorageTRES)."""
    return bool(
        any(q.gpus for q in policy.qos) or policy.max_gpus_per_user or policy.max_gpus_per_group
    )


def _qos(policy: Policy, plan: Plan, names: Names, gpu: bool) -> None:
    for qos in policy.qos:
        name, renamed = slurm_name(names, "qos", qos.name)
        prefix = f"qos.{qos.name}"
        number, exact = uint32(qos.priority)
        settings: list[tuple[str, str]] = [("Priority", str(number))]
        plan.rows.append(
            Row(
                f"{prefix}.priority",
                text(qos.priority),
                f"sacctmgr: QOS {name} Priority={number}",
                "exact" if exact and not renamed else "approximate",
                "; ".join(n for n in (renamed, "" if exact else f"an integer, {number}") if n),
                exact and not renamed,
            )
        )
        tres: dict[str, int] = {}
        for what, (setting, tres_name) in _QOS_LIMITS.items():
            value = getattr(qos, what)
            written = value if value else -1
            if tres_name:
                if tres_name == sv.TRES_CPU or gpu:
                    tres[tres_name] = written
                shown = f"GrpTRES {tres_name}={written}"
            else:
                settings.append((setting, str(written)))
                shown = f"{setting}={written}"
            approx = what == "queued_jobs" and value
            plan.rows.append(
                Row(
                    f"{prefix}.{what}",
                    str(value),
                    f"sacctmgr: QOS {name} {shown}",
                    "approximate" if approx else "exact",
                    _REFUSES if approx else ("no limit" if not value else ""),
                )
            )
        settings.insert(2, ("GrpTRES", sv.format_tres(tres)))
        plan.qos.append(QosSpec(name, tuple(settings), f"QoS {qos.name}"))
        plan.rows.append(_queues_row(qos, name, names))


def _queues_row(qos: QoS, name: str, names: Names) -> Row:
    linked = names.ids("qos", name) if names else []
    note = (
        "Slurm jobs name their QOS (sbatch --qos); the queue numbers only link a workload's "
        "jobs to the QoS in htcsim"
    )
    if linked:
        note += f"; the name tables give {name} the numbers {linked}"
    return Row(
        f"qos.{qos.name}.queues",
        text(list(qos.queues)),
        "(not a Slurm setting)",
        "approximate",
        note,
        round_trips=bool(linked) and sorted(qos.queues) == linked,
    )


def _limits(policy: Policy, plan: Plan, cluster: bool, gpu: bool) -> None:
    caps = {
        (who, what): policy.limits_of(who)[k]
        for who in ("user", "group")
        for k, what in enumerate(LIMIT_NAMES)
    }
    if not any(caps.values()):
        for who, what in caps:
            plan.rows.append(Row(f"limits.{what}_per_{who}", "0", "(nothing: no limit)", "exact"))
        return
    settings: list[tuple[str, str]] = []
    for who, column in (("user", 0), ("group", 1)):
        tres: dict[str, int] = {}
        for what in LIMIT_NAMES:
            setting = _LIMIT_SETTINGS[what][column]
            tres_name = _LIMIT_SETTINGS[what][2]
            value = caps[(who, what)]
            written = value if value else -1
            if tres_name:
                if tres_name == sv.TRES_CPU or gpu:
                    tres[tres_name] = written
                shown = f"{setting} {tres_name}={written}"
            else:
                settings.append((setting, str(written)))
                shown = f"{setting}={written}"
            notes = []
            if what == "queued_jobs" and value:
                notes.append(_REFUSES)
            if who == "group":
                notes.append("htcsim's groups are Slurm accounts")
            if not cluster:
                notes.append(f"applies once every partition has QOS={LIMITS_QOS}")
            plan.rows.append(
                Row(
                    f"limits.{what}_per_{who}",
                    str(value),
                    f"sacctmgr: QOS {LIMITS_QOS} {shown}",
                    "approximate" if what == "queued_jobs" and value else "exact",
                    "; ".join(notes),
                )
            )
        settings.append((_LIMIT_SETTINGS["cores"][column], sv.format_tres(tres)))
    plan.qos.append(
        QosSpec(
            LIMITS_QOS,
            tuple(settings),
            "the partition QOS of every partition: the per-user and per-account limits",
            partition=True,
        )
    )
    plan.partition_options.append(("QOS", LIMITS_QOS))


def _placement(policy: Policy, plan: Plan, cluster: bool) -> None:
    strategy = policy.placement
    # Slurm's cons_tres (its node selection, equal weights, no topology): runs of
    # consecutive nodes that can take the job; the tightest run that holds it;
    # in it the node with the fewest free CPUs that holds it, first of equals.
    weights = " (node types get increasing weights in cluster-file order)" if cluster else ""
    slurm_rule = (
        "Slurm's cons_tres takes, among the nodes of the lowest Weight" + weights + ", the run "
        "of consecutive nodes with room that holds the job with the fewest free CPUs, and in it "
        "the node with the fewest free CPUs that holds the job, slurm.conf order breaking ties"
    )
    if strategy == "cons_tres":
        plan.rows.append(
            Row(
                "placement.strategy",
                '"cons_tres"',
                "(Slurm's default node selection)",
                "approximate" if cluster else "exact",
                "htcsim's cons_tres is that rule: "
                + slurm_rule
                + ("; htcsim's ignores weights" if cluster else ""),
            )
        )
        return
    nearest = "; cons_tres is Slurm's rule"
    if strategy == "first_fit":
        plan.rows.append(
            Row(
                "placement.strategy",
                '"first_fit"',
                "(Slurm's default node selection)",
                "approximate",
                slurm_rule + "; htcsim's first_fit takes the first node with room" + nearest,
                round_trips=False,
            )
        )
    elif strategy == "spread":
        plan.partition_options.append(("LLN", "YES"))
        plan.rows.append(
            Row(
                "placement.strategy",
                '"spread"',
                "LLN=YES on every partition",
                "approximate",
                "Slurm's least-loaded nodes: the most idle CPUs, as htcsim's most free cores"
                + ("" if cluster else "; add LLN=YES to your PartitionName lines"),
                round_trips=cluster,
            )
        )
    else:
        plan.rows.append(
            Row(
                "placement.strategy",
                '"best_fit"',
                "(Slurm's default node selection)",
                "approximate",
                slurm_rule + "; htcsim's best_fit takes the node left with the fewest free cores "
                "among all nodes" + nearest,
                round_trips=False,
            )
        )
