"""Queue order, backfill, multifactor priority and fairshare in Slurm's terms.

Slurm's behaviour this relies on: PriorityType priority/basic orders by
submit time, priority/multifactor by weighted factors whose weights are
unsigned 32-bit integers; the backfill scheduler reserves resources for every
job it tests unless ``bf_job_part_count_reserve`` limits that to the first N
of each partition, and ``bf_max_job_test`` is at most 1,000,000; the priority
durations (PriorityMaxAge, PriorityDecayHalfLife, PriorityCalcPeriod) are
whole minutes; fair tree is the default fairshare since Slurm 19.05 and
``NO_FAIR_TREE`` selects the classic one; a half-life of 0 needs
``PriorityUsageResetPeriod`` said.
"""

from __future__ import annotations

from htcsim.policy import Policy
from htcsim.slurm import values as sv
from htcsim.slurm.map_compat import bf_interval
from htcsim.slurm.names import Names
from htcsim.slurm.plan import (
    MAX_BF_JOB_TEST,
    Plan,
    Row,
    Status,
    minutes_note,
    slurm_name,
    text,
    uint32,
)

DEFAULT_BF = (("bf_resolution", "60"), ("bf_window", "1440"))
"""Backfill settings with no policy key, written at Slurm's defaults so the fragment
says what the backfill cycle does (bf_interval is [slurm_compat]'s, see ``map_compat``)."""


def map_order(policy: Policy, plan: Plan, names: Names) -> None:
    """The [queue], [backfill], [priority] and [fairshare] keys."""
    _queue(policy, plan)
    _backfill(policy, plan)
    _priority(policy, plan)
    _fairshare(policy, plan, names)


def _queue(policy: Policy, plan: Plan) -> None:
    order = policy.order
    if order in ("fcfs", "multifactor"):
        kind = "basic" if order == "fcfs" else "multifactor"
        plan.add("priority", "PriorityType", f"priority/{kind}")
        plan.rows.append(Row("queue.order", text(order), f"PriorityType=priority/{kind}", "exact"))
        return
    plan.add("priority", "PriorityType", "priority/basic")
    why = {
        "sjf": "no Slurm priority factor is the requested time (multifactor weighs age, size, "
        "fairshare, QOS, partition, association and TRES)",
        "priority": "the priorities come from the workload, one per job; Slurm sets a job's "
        "priority by hand (scontrol update JobId=N Priority=P), not in its configuration",
    }[order]
    plan.rows.append(
        Row(
            "queue.order",
            text(order),
            "PriorityType=priority/basic",
            "impossible",
            f"{why}; written as priority/basic (submit order), the nearest",
            round_trips=False,
        )
    )


def _backfill(policy: Policy, plan: Plan) -> None:
    mode = policy.backfill
    depth = policy.backfill_depth or MAX_BF_JOB_TEST
    params = [("bf_max_job_test", str(min(depth, MAX_BF_JOB_TEST)))]
    cycle = (
        "Slurm plans backfill every bf_interval seconds (slurm_compat.backfill_interval_s), "
        "within bf_window minutes, at bf_resolution seconds"
    )
    if mode == "none":
        plan.add("backfill", "SchedulerType", "sched/builtin")
        plan.rows.append(Row("backfill.mode", '"none"', "SchedulerType=sched/builtin", "exact"))
    elif mode == "easy":
        plan.add("backfill", "SchedulerType", "sched/backfill")
        params.append(("bf_job_part_count_reserve", "1"))
        plan.rows.append(
            Row(
                "backfill.mode",
                '"easy"',
                "SchedulerType=sched/backfill, bf_job_part_count_reserve=1",
                "approximate",
                "only the first job of each partition gets a reservation, as in EASY; " + cycle,
            )
        )
    else:
        plan.add("backfill", "SchedulerType", "sched/backfill")
        params.append(("bf_job_part_count_reserve", "0"))
        plan.rows.append(
            Row(
                "backfill.mode",
                '"conservative"',
                "SchedulerType=sched/backfill, bf_job_part_count_reserve=0",
                "approximate",
                "every job the backfill cycle tests gets a reservation, as in conservative "
                "backfilling, but only up to bf_max_job_test jobs and bf_window ahead; " + cycle,
            )
        )
    params.append(("bf_interval", str(bf_interval(policy))))
    params.extend(DEFAULT_BF)
    plan.add("backfill", "SchedulerParameters", ",".join(f"{k}={v}" for k, v in params))
    plan.extras.append(
        "SchedulerParameters bf_resolution=60, bf_window=1440 (Slurm's defaults): htcsim "
        "plans with no horizon; raise bf_window (minutes) to your longest partition MaxTime "
        "so that long jobs get reservations"
    )
    note = (
        "Slurm counts the jobs its backfill cycle tests, htcsim the jobs a pass examines "
        "(those started in queue order too)"
    )
    if not policy.backfill_depth:
        note += f"; 0 (all) is written as {MAX_BF_JOB_TEST}, Slurm's largest value"
    if mode == "none":
        note += "; no effect without backfill, in either"
    if policy.backfill_depth > MAX_BF_JOB_TEST:
        note += f"; capped at {MAX_BF_JOB_TEST}"
    plan.rows.append(
        Row(
            "backfill.depth",
            str(policy.backfill_depth),
            f"bf_max_job_test={params[0][1]}",
            "approximate",
            note,
            round_trips=policy.backfill_depth < MAX_BF_JOB_TEST,
        )
    )
    limit = policy.starvation_limit_s
    if limit == 0:
        plan.rows.append(Row("backfill.starvation_limit_s", "0", "(nothing: off)", "exact"))
    else:
        plan.rows.append(
            Row(
                "backfill.starvation_limit_s",
                str(limit),
                "",
                "impossible",
                "Slurm has no rule that moves a job waiting longer than a limit to the front "
                "with a reservation; its age factor (PriorityWeightAge up to PriorityMaxAge) "
                "raises waiting jobs gradually",
                round_trips=False,
            )
        )


def _priority(policy: Policy, plan: Plan) -> None:
    for key, setting in (
        ("weight_age", "PriorityWeightAge"),
        ("weight_size", "PriorityWeightJobSize"),
        ("weight_fairshare", "PriorityWeightFairshare"),
        ("weight_qos", "PriorityWeightQOS"),
    ):
        value = getattr(policy, f"priority_{key}")
        number, exact = uint32(value)
        plan.add("priority", setting, number)
        status: Status = "exact" if exact else "approximate"
        note = "" if exact else f"Slurm's weights are unsigned 32-bit integers: {number}"
        if key == "weight_size" and value:
            status = "approximate"
            note = "; ".join(
                n
                for n in (
                    note,
                    "Slurm's size factor averages the job's share of the nodes and of the "
                    "CPUs; htcsim's is the share of the cores (the same for whole-node jobs)",
                )
                if n
            )
        plan.rows.append(
            Row(f"priority.{key}", text(value), f"{setting}={number}", status, note, exact)
        )
    plan.add("priority", "PriorityWeightPartition", 0)
    plan.extras.append("PriorityWeightPartition=0: htcsim has no partition priority factor")
    max_age = policy.priority_max_age_s
    note = minutes_note(max_age, "PriorityMaxAge")
    plan.add("priority", "PriorityMaxAge", sv.format_dhm(max_age))
    plan.rows.append(
        Row(
            "priority.max_age_s",
            str(max_age),
            f"PriorityMaxAge={sv.format_dhm(max_age)}",
            "approximate" if note else "exact",
            note,
            not note,
        )
    )
    favor = "YES" if policy.priority_favor == "small" else "NO"
    plan.add("priority", "PriorityFavorSmall", favor)
    plan.rows.append(
        Row("priority.favor", text(policy.priority_favor), f"PriorityFavorSmall={favor}", "exact")
    )
    interval = policy.priority_interval_s
    note = minutes_note(interval, "PriorityCalcPeriod")
    plan.add("priority", "PriorityCalcPeriod", sv.to_minutes(interval))
    plan.rows.append(
        Row(
            "priority.interval_s",
            str(interval),
            f"PriorityCalcPeriod={sv.to_minutes(interval)} (minutes)",
            "approximate" if note else "exact",
            note,
            not note,
        )
    )
    if not policy.nice:
        plan.rows.append(Row("priority.nice", "{}", "(nothing: none)", "exact"))
    else:
        plan.rows.append(
            Row(
                "priority.nice",
                text(dict(policy.nice)),
                "",
                "impossible",
                "Slurm's nice is per job (sbatch --nice, scontrol update), not per user; "
                "a job_submit plugin could set it from the user",
                round_trips=False,
            )
        )


def _fairshare(policy: Policy, plan: Plan, names: Names) -> None:
    flag = "FAIR_TREE" if policy.fairshare_algorithm == "fair_tree" else "NO_FAIR_TREE"
    plan.add("priority", "PriorityFlags", flag)
    plan.rows.append(
        Row(
            "fairshare.algorithm",
            text(policy.fairshare_algorithm),
            f"PriorityFlags={flag}",
            "exact",
            "fair tree is Slurm's default; FAIR_TREE is written so that this fragment "
            "overrides a NO_FAIR_TREE set earlier"
            if flag == "FAIR_TREE"
            else "",
        )
    )
    half = policy.fairshare_half_life_s
    if half == 0:
        plan.add("priority", "PriorityDecayHalfLife", "0")
        plan.add("priority", "PriorityUsageResetPeriod", "NONE")
        plan.rows.append(
            Row(
                "fairshare.half_life_s",
                "0",
                "PriorityDecayHalfLife=0, PriorityUsageResetPeriod=NONE",
                "exact",
                "usage never decays (Slurm needs the reset period said when there is no decay)",
            )
        )
    else:
        note = minutes_note(half, "PriorityDecayHalfLife")
        plan.add("priority", "PriorityDecayHalfLife", sv.format_dhm(half))
        plan.rows.append(
            Row(
                "fairshare.half_life_s",
                str(half),
                f"PriorityDecayHalfLife={sv.format_dhm(half)}",
                "approximate" if note else "exact",
                note,
                not note,
            )
        )
    for key, kind, target in (
        ("groups", "groups", plan.accounts),
        ("users", "users", plan.users),
    ):
        shares = policy.group_shares if key == "groups" else policy.user_shares
        notes, exact = [], True
        for workload_name, share in shares:
            name, renamed = slurm_name(names, kind, workload_name)
            number = max(int(share + 0.5), 1)
            if float(number) != share:
                exact = False
                notes.append(f"{workload_name}: Fairshare is an integer, {number}")
            if renamed:
                notes.append(renamed)
            target.append((name, number))
        how = (
            "accounts with Fairshare= (htcsim's groups are Slurm accounts)"
            if key == "groups"
            else "Fairshare= on each user's associations (the share within its account)"
        )
        plan.rows.append(
            Row(
                f"fairshare.{key}",
                text(dict(shares)),
                f"sacctmgr: {how}" if shares else "(nothing: every share 1, Slurm's default)",
                "exact" if exact else "approximate",
                "; ".join(notes),
                exact and not any("lower case" in n for n in notes),
            )
        )
