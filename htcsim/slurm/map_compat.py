"""The Slurm compatibility profile (``[slurm_compat]``) in Slurm's terms.

The profile describes what Slurm does rather than a setting of it: its
scheduler starts a job about a second after the event that allows it
(measured on Slurm 22.05: median 0.76-0.98 s, 95th percentile 2.2-3.0 s),
its backfill cycle runs every ``bf_interval`` seconds, and its time limits
are whole minutes. With the values ``htcsim import slurm-conf`` gives, the
replay does what Slurm does: those rows are exact. The interval is the one
key written to slurm.conf (SchedulerParameters, by ``map_order``).
"""

from __future__ import annotations

from htcsim.policy import Policy
from htcsim.slurm.plan import Plan, Row

SLURM_REACTION_S = 1
"""Slurm's reaction time as the profile models it (whole seconds)."""
DEFAULT_BF_INTERVAL_S = 30
"""Slurm's bf_interval when SchedulerParameters does not give one."""


def bf_interval(policy: Policy) -> int:
    """The bf_interval the export writes: the profile's, else Slurm's default."""
    return policy.slurm_backfill_interval_s or DEFAULT_BF_INTERVAL_S


def map_compat(policy: Policy, plan: Plan) -> None:
    """The [slurm_compat] keys."""
    reaction = policy.slurm_reaction_s
    if reaction == SLURM_REACTION_S:
        plan.rows.append(
            Row(
                "slurm_compat.reaction_s",
                str(reaction),
                "(nothing: Slurm's scheduler reacts so)",
                "exact",
                "Slurm 22.05 starts a job a median 0.76-0.98 s after the submission or "
                "completion that allows it (95th percentile 2.2-3.0 s); the replay a second after",
            )
        )
    else:
        plan.rows.append(
            Row(
                "slurm_compat.reaction_s",
                str(reaction),
                "(nothing)",
                "approximate",
                f"Slurm starts a job about {SLURM_REACTION_S} s after the event that allows it "
                f"(no setting changes that); the replay {reaction} s after"
                + (": set reaction_s = 1 to model it" if reaction == 0 else ""),
                round_trips=False,
            )
        )
    interval = policy.slurm_backfill_interval_s
    inert = "; no effect without backfill, in either" if policy.backfill == "none" else ""
    if interval:
        plan.rows.append(
            Row(
                "slurm_compat.backfill_interval_s",
                str(interval),
                f"SchedulerParameters bf_interval={interval}",
                "exact",
                "the backfill cycle every bf_interval seconds; the main scheduler starts jobs "
                "in priority order at events, in both" + inert,
            )
        )
    else:
        plan.rows.append(
            Row(
                "slurm_compat.backfill_interval_s",
                "0",
                f"SchedulerParameters bf_interval={DEFAULT_BF_INTERVAL_S} (Slurm's default)",
                "approximate",
                "htcsim backfills at every pass, Slurm every bf_interval seconds: set "
                f"backfill_interval_s = {DEFAULT_BF_INTERVAL_S} to model it" + inert,
                round_trips=False,
            )
        )
    if policy.slurm_whole_minute_limits:
        plan.rows.append(
            Row(
                "slurm_compat.whole_minute_limits",
                "true",
                "(nothing: Slurm's time limits are minutes)",
                "exact",
                "a limit of 61 s is 2 minutes in Slurm and 120 s in the replay",
            )
        )
    else:
        plan.rows.append(
            Row(
                "slurm_compat.whole_minute_limits",
                "false",
                "(nothing)",
                "approximate",
                "Slurm rounds every time limit up to whole minutes; the replay keeps the "
                "seconds: set whole_minute_limits = true to model it",
                round_trips=False,
            )
        )
    phase = policy.slurm_priority_phase_s
    inert = "; no effect without multifactor priority" if policy.order != "multifactor" else ""
    if phase >= 0:
        plan.rows.append(
            Row(
                "slurm_compat.priority_phase_s",
                str(phase),
                "(nothing: slurmctld's start time)",
                "exact",
                "slurmctld recomputes priorities every PriorityCalcPeriod counted from its "
                "start; the replay at the same seconds when the phase is that start on its "
                "clock (modulo the interval)" + inert,
                round_trips=False,
            )
        )
    else:
        plan.rows.append(
            Row(
                "slurm_compat.priority_phase_s",
                "-1",
                "(nothing)",
                "approximate",
                "slurmctld recomputes priorities every PriorityCalcPeriod counted from its "
                "start, the replay interval_s after its last recomputation: set "
                "priority_phase_s to slurmctld's start modulo the interval to model it" + inert,
                round_trips=False,
            )
        )
