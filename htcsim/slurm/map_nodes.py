"""Autoscaling and node failures in Slurm's terms: power saving, JobRequeue.

Slurm's power saving powers off a node idle for SuspendTime seconds and
resumes powered-down nodes (ResumeProgram) as soon as the scheduler picks
them, at most ResumeRate per minute; a resume that takes longer than
ResumeTimeout marks the node DOWN; SuspendExcNodes=NODES:N keeps N of those
nodes up. JobRequeue sets whether batch jobs are requeued after a node
failure by default.
"""

from __future__ import annotations

from typing import Any

from htcsim.policy import TOML_KEYS, Policy
from htcsim.slurm.plan import Plan, Row, key_values, text


def map_nodes(policy: Policy, plan: Plan, cluster: bool) -> None:
    """The [autoscale] and [failures] keys."""
    _autoscale(policy, plan, cluster)
    _failures(policy, plan)


def _autoscale(policy: Policy, plan: Plan, cluster: bool) -> None:
    keys = [k for k in TOML_KEYS["autoscale"] if k != "enabled"]
    values = key_values(policy)
    if not policy.autoscale:
        plan.add("power saving", "SuspendTime", -1)
        plan.rows.append(
            Row("autoscale.enabled", "false", "SuspendTime=-1 (power saving off)", "exact")
        )
        for key in keys:
            plan.rows.append(
                Row(
                    f"autoscale.{key}",
                    text(values[f"autoscale.{key}"]),
                    "(not written: autoscaling is off)",
                    "exact",
                    "no effect while autoscaling is off, in either",
                    round_trips=False,
                )
            )
        return
    idle = policy.autoscale_idle_s
    plan.add("power saving", "SuspendTime", idle)
    plan.add("power saving", "SuspendTimeout", 30)
    plan.add("power saving", "ResumeTimeout", policy.autoscale_boot_delay_s)
    plan.add("power saving", "ResumeRate", policy.autoscale_step)
    plan.add("power saving", "SuspendRate", 0)
    plan.extras.append(
        "SuspendTimeout=30 (Slurm's default): htcsim powers a node off at once; "
        "SuspendRate=0 (no limit): htcsim powers off every node due at once. Power saving "
        "also needs ResumeProgram and SuspendProgram, your site's scripts that boot and "
        "power off a node: set them in slurm.conf"
    )
    plan.rows.append(
        Row(
            "autoscale.enabled",
            "true",
            "power saving (SuspendTime, ResumeProgram, SuspendProgram)"
            + (", State=CLOUD nodes" if cluster else ""),
            "exact",
        )
    )
    plan.rows.append(Row("autoscale.idle_s", str(idle), f"SuspendTime={idle}", "exact"))
    boot = policy.autoscale_boot_delay_s
    plan.rows.append(
        Row(
            "autoscale.boot_delay_s",
            str(boot),
            f"ResumeTimeout={boot}",
            "approximate",
            "Slurm's ResumeTimeout is the longest a boot may take before the node is marked "
            "DOWN; htcsim's boot delay is how long a boot takes: add a margin if boots vary",
        )
    )
    step = policy.autoscale_step
    plan.rows.append(
        Row(
            "autoscale.step",
            str(step),
            f"ResumeRate={step}",
            "approximate",
            "Slurm caps the nodes resumed per minute for the whole cluster; htcsim the nodes "
            "booted per node type and decision",
        )
    )
    for key, zero_note, why in (
        (
            "scale_up_wait_s",
            "Slurm resumes nodes for a job as soon as it picks them",
            "Slurm resumes powered-down nodes as soon as the scheduler picks them for a job; "
            "it has no wait before scaling up",
        ),
        (
            "cooldown_s",
            "Slurm has no cooldown",
            "Slurm paces boots only by ResumeRate (nodes per minute), not by a pause per "
            "node type after each action",
        ),
    ):
        value = values[f"autoscale.{key}"]
        if value == 0:
            plan.rows.append(Row(f"autoscale.{key}", "0", "(nothing)", "exact", zero_note))
        else:
            plan.rows.append(
                Row(f"autoscale.{key}", str(value), "", "impossible", why, round_trips=False)
            )
    plan.rows.append(
        Row(
            "autoscale.interval_s",
            str(policy.autoscale_interval_s),
            "(not written)",
            "approximate",
            "Slurm's power-save thread wakes every power_save_interval seconds (a "
            "SlurmctldParameters option, 10 by default); not written, since "
            "SlurmctldParameters holds other site options",
            round_trips=policy.autoscale_interval_s == 0,
        )
    )
    _autoscale_bounds(policy, plan, cluster, values)


def _autoscale_bounds(policy: Policy, plan: Plan, cluster: bool, values: dict[str, Any]) -> None:
    """The min and max per node type. The import reads them back per node type (from
    SuspendExcNodes and the node counts), so a default for every type comes back as the
    same numbers spelled per type: the bounds hold, the keys differ (``round_trips``)."""
    for key, setting in (("min", "SuspendExcNodes"), ("max", "NodeName")):
        single = values[f"autoscale.{key}_nodes"]
        per_type = values[f"autoscale.{key}"]
        used = bool(single) or any(per_type.values())
        if key == "min":
            how = (
                "SuspendExcNodes=NODES:N keeps N nodes of each type from powering down; Slurm "
                "does not boot nodes to reach N (htcsim starts with them up)"
            )
        else:
            how = "the type's NodeName line defines that many nodes (State=CLOUD)"
        for label, value in ((f"{key}_nodes", single), (key, per_type)):
            row = f"autoscale.{label}"
            if used and label.endswith("_nodes") and not value:
                below = f"0: the per-type values (autoscale.{key}) apply"
                plan.rows.append(Row(row, "0", "(nothing)", "exact", below, round_trips=False))
            elif not used:
                none = "no minimum" if key == "min" else "the type's count"
                plan.rows.append(
                    Row(row, text(value), "(nothing)", "exact", none, round_trips=False)
                )
            elif cluster:
                plan.rows.append(
                    Row(row, text(value), setting, "approximate", how, round_trips=False)
                )
            else:
                plan.rows.append(
                    Row(
                        row,
                        text(value),
                        "",
                        "impossible",
                        "needs node names: give --cluster",
                        round_trips=False,
                    )
                )


def _failures(policy: Policy, plan: Plan) -> None:
    requeue = 1 if policy.on_node_failure == "requeue" else 0
    plan.add("failures", "JobRequeue", requeue)
    plan.rows.append(
        Row(
            "failures.on_node_failure",
            text(policy.on_node_failure),
            f"JobRequeue={requeue}",
            "approximate",
            "the default for batch jobs; a job may still ask otherwise (sbatch --requeue or "
            "--no-requeue)",
        )
    )
    retries = policy.max_retries
    if retries == 0:
        plan.rows.append(Row("failures.max_retries", "0", "(nothing: no limit)", "exact"))
    else:
        plan.rows.append(
            Row(
                "failures.max_retries",
                str(retries),
                "",
                "impossible",
                "Slurm has no cap on the requeues after node failures (MaxBatchRequeue counts "
                "requeues after launch failures)",
                round_trips=False,
            )
        )
