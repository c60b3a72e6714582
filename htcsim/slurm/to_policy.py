"""The policy a Slurm site runs today, from its slurm.conf and its accounting.

The reverse of the export, setting by setting (see ``map_order``,
``map_limits``, ``map_nodes`` for what each means). A setting the site does
not give has Slurm's default, since that is what the site runs:
priority/basic, sched/backfill with bf_max_job_test=500 and no
bf_job_part_count_reserve (a reservation for every job tested: conservative)
and bf_interval=30, cons_tres's node selection (placement cons_tres),
PriorityMaxAge and PriorityDecayHalfLife 7 days, PriorityCalcPeriod 5
minutes, PriorityFavorSmall NO, fair tree, JobRequeue 1, power saving off.
The policy carries the Slurm compatibility profile ([slurm_compat]), so that
a replay of it schedules as this Slurm would.

What cannot become a policy value is kept as a sentence: ``notes`` (how the
policy differs from what Slurm does) and ``untranslated`` (every setting the
policy does not hold, with its file and line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from htcsim.policy import Policy, PolicyError, QoS, policy_to_toml
from htcsim.slurm import values as sv
from htcsim.slurm.conf_read import Setting, SlurmConf, read_slurm_conf
from htcsim.slurm.errors import SlurmError
from htcsim.slurm.map_compat import DEFAULT_BF_INTERVAL_S, SLURM_REACTION_S
from htcsim.slurm.names import Names
from htcsim.slurm.plan import LIMITS_QOS, MAX_BF_JOB_TEST
from htcsim.slurm.sacctmgr_read import Accounting, Entity, read_accounting
from htcsim.slurm.to_cluster import ClusterImport, cluster_from_conf

BF_MAX_JOB_TEST_DEFAULT = 500
RESUME_RATE_UNLIMITED = 1_000_000
"""The autoscale step for ResumeRate=0 (no limit)."""
NOT_POLICY = {
    "suspendprogram", "resumeprogram", "resumefailprogram", "suspendtimeout", "suspendrate",
    "grestypes", "accountingstoragetres", "accountingstorageenforce",
}  # fmt: skip
"""Settings read and used for nothing: they serve the mechanism, not the policy."""
_TRIVIAL = {"", "0", "-1", "00:00:00", "cluster", "1.000000", "unlimited", "none", "off"}
_DESCRIPTIVE = {
    "id", "description", "organization", "defaultaccount", "adminlevel", "coordinator",
    "defaultqos", "qos", "qoslevel", "qos+", "qos-", "cluster", "partition", "defaultwckey",
    "rawusage", "wckeys", "parent", "flags",
}  # fmt: skip


@dataclass
class Imported:
    policy: Policy
    cluster: ClusterImport
    notes: list[str] = field(default_factory=list)
    untranslated: list[str] = field(default_factory=list)


class _Conf:
    """slurm.conf settings, each read one marked used."""

    def __init__(self, conf: SlurmConf) -> None:
        self.conf = conf
        self.used: set[str] = set(NOT_POLICY)

    def get(self, key: str) -> Setting | None:
        self.used.add(key.lower())
        return self.conf.get(key)

    def value(self, key: str, default: str) -> str:
        setting = self.get(key)
        return setting.value if setting is not None else default

    def parsed(self, key: str, default: str, parse: Any) -> Any:
        setting = self.get(key)
        text = setting.value if setting is not None else default
        try:
            return parse(text)
        except ValueError as exc:
            where = setting.where if setting is not None else "default"
            raise SlurmError(f"{where}: {key}: {exc}") from exc


def policy_from_slurm(
    conf: SlurmConf, accounting: Accounting | None = None, names: Names | None = None
) -> Imported:
    names = names or Names()
    acc = accounting or Accounting()
    c = _Conf(conf)
    cluster = cluster_from_conf(conf, names)
    notes = list(cluster.notes)
    untranslated = list(cluster.untranslated)
    values: dict[str, Any] = {}
    _order(c, values, notes, untranslated)
    _backfill(c, values, notes, untranslated)
    _placement(c, cluster, values, notes)
    _autoscale(c, cluster, values, notes)
    values["on_node_failure"] = "requeue" if c.parsed("JobRequeue", "1", sv.parse_int) else "fail"
    enforce = c.value("AccountingStorageEnforce", "").lower()
    limits_on = any(w in enforce for w in ("limits", "safe"))
    _shares(acc, names, values, notes)
    limits_qos = _limits_qos(cluster, acc, notes)
    if limits_on:
        _qos(acc, names, limits_qos, values, notes, untranslated)
        _limits(acc, limits_qos, values, notes, untranslated)
    elif acc.qos or any(_limit_keys(e.params) for e in acc.accounts.values()):
        notes.append(
            "AccountingStorageEnforce does not include limits: Slurm enforces no QOS or "
            "association limit, so none is imported (QOS priorities are)"
        )
        _qos(acc, names, limits_qos, values, notes, untranslated, caps=False)
    for setting in conf.every_setting:
        if setting.key.lower() not in c.used:
            untranslated.append(f"{setting.where} {setting.key}={setting.value}")
    untranslated.extend(f"{entry} (not applied)" for entry in acc.not_applied)
    try:
        policy = Policy(**values)
    except PolicyError as exc:
        raise SlurmError(f"{conf.files[0]}: the imported policy is not valid: {exc}") from exc
    return Imported(policy, cluster, notes, untranslated)


# --------------------------------------------------------------------- slurm.conf parts


def _order(c: _Conf, values: dict[str, Any], notes: list[str], untranslated: list[str]) -> None:
    kind = c.value("PriorityType", "priority/basic").lower()
    if kind not in ("priority/basic", "priority/multifactor"):
        setting = c.get("PriorityType")
        assert setting is not None
        raise SlurmError(
            f"{setting.where}: PriorityType {setting.value}: htcsim knows priority/basic and "
            "priority/multifactor"
        )
    values["order"] = "multifactor" if kind == "priority/multifactor" else "fcfs"
    for key, name in (
        ("PriorityWeightAge", "priority_weight_age"),
        ("PriorityWeightJobSize", "priority_weight_size"),
        ("PriorityWeightFairshare", "priority_weight_fairshare"),
        ("PriorityWeightQOS", "priority_weight_qos"),
    ):
        values[name] = float(c.parsed(key, "0", sv.parse_int))
    if values["priority_weight_size"]:
        notes.append(
            "PriorityWeightJobSize: Slurm's size factor averages the job's share of the "
            "nodes and of the CPUs; htcsim's is its share of the cores"
        )
    for key, why in (
        ("PriorityWeightPartition", "htcsim has no partition priority factor"),
        ("PriorityWeightAssoc", "htcsim has no association priority factor"),
        ("PriorityWeightTRES", "htcsim has no TRES priority factors"),
    ):
        setting = c.get(key)
        if setting is not None and setting.value.strip() not in ("", "0"):
            untranslated.append(f"{setting.where} {setting.key}={setting.value} ({why})")
    values["priority_max_age_s"] = c.parsed("PriorityMaxAge", "7-0", _duration)
    favor = c.parsed("PriorityFavorSmall", "NO", sv.parse_yes_no)
    values["priority_favor"] = "small" if favor else "large"
    values["priority_interval_s"] = max(c.parsed("PriorityCalcPeriod", "5", _duration), 60)
    flags = c.get("PriorityFlags")
    words = [w.strip().upper() for w in (flags.value if flags else "").split(",") if w.strip()]
    classic = "NO_FAIR_TREE" in words or "DEPTH_OBLIVIOUS" in words
    values["fairshare_algorithm"] = "classic" if classic else "fair_tree"
    other = [w for w in words if w not in ("NO_FAIR_TREE", "FAIR_TREE")]
    if flags is not None and other:
        untranslated.append(f"{flags.where} PriorityFlags {','.join(other)}")
    values["fairshare_half_life_s"] = c.parsed("PriorityDecayHalfLife", "7-0", _duration)
    reset = c.get("PriorityUsageResetPeriod")
    if reset is not None and reset.value.strip().upper() != "NONE":
        untranslated.append(
            f"{reset.where} PriorityUsageResetPeriod={reset.value} (htcsim decays usage, it "
            "never resets it)"
        )


def _duration(text: str) -> int:
    seconds = sv.parse_duration(text)
    if seconds is None:
        raise ValueError(f"{text!r}: htcsim needs a finite duration")
    return 60 * sv.to_minutes(seconds)


def _backfill(c: _Conf, values: dict[str, Any], notes: list[str], untranslated: list[str]) -> None:
    scheduler = c.value("SchedulerType", "sched/backfill").lower()
    params = c.get("SchedulerParameters")
    options: dict[str, str] = {}
    if params is not None:
        for item in params.value.split(","):
            key, _, value = item.strip().partition("=")
            if key:
                options[key.lower()] = value
    try:
        depth = int(options.pop("bf_max_job_test", str(BF_MAX_JOB_TEST_DEFAULT)))
        reserve = int(options.pop("bf_job_part_count_reserve", "0"))
        interval = int(options.pop("bf_interval", str(DEFAULT_BF_INTERVAL_S)))
    except ValueError as exc:
        assert params is not None
        raise SlurmError(f"{params.where}: SchedulerParameters: {exc}") from exc
    if interval < 1:
        assert params is not None
        raise SlurmError(f"{params.where}: SchedulerParameters: bf_interval must be >= 1")
    values["backfill_depth"] = 0 if depth >= MAX_BF_JOB_TEST else depth
    _slurm_compat(interval, values, notes)
    if scheduler == "sched/builtin":
        values["backfill"] = "none"
    elif scheduler == "sched/backfill":
        values["backfill"] = "easy" if reserve == 1 else "conservative"
        if reserve > 1:
            notes.append(
                f"bf_job_part_count_reserve={reserve}: Slurm reserves for the first {reserve} "
                "jobs of each partition; imported as conservative (a reservation for every job)"
            )
    else:
        setting = c.get("SchedulerType")
        assert setting is not None
        raise SlurmError(
            f"{setting.where}: SchedulerType {setting.value}: htcsim knows sched/builtin and "
            "sched/backfill"
        )
    if params is not None:
        for key, value in options.items():
            shown = f"{key}={value}" if value else key
            untranslated.append(f"{params.where} SchedulerParameters {shown}")


def _slurm_compat(interval: int, values: dict[str, Any], notes: list[str]) -> None:
    """The [slurm_compat] profile: the replay times its passes as this Slurm would."""
    values["slurm_reaction_s"] = SLURM_REACTION_S
    values["slurm_backfill_interval_s"] = interval
    values["slurm_whole_minute_limits"] = True
    notes.append(
        f"[slurm_compat]: the replay starts jobs {SLURM_REACTION_S} s after the event that "
        f"allows them, backfills every {interval} s (bf_interval) and rounds time limits up "
        "to whole minutes, as Slurm does; the live agent ignores the section"
    )


def _placement(c: _Conf, cluster: ClusterImport, values: dict[str, Any], notes: list[str]) -> None:
    select = c.value("SelectTypeParameters", "").upper()
    lln = list(cluster.lln.values())
    if "CR_LLN" in select or (lln and all(lln)):
        values["placement"] = "spread"
    else:
        values["placement"] = "cons_tres"  # Slurm's default node selection
        if any(lln):
            notes.append("LLN=YES on some partitions only: imported as cons_tres")


def _autoscale(c: _Conf, cluster: ClusterImport, values: dict[str, Any], notes: list[str]) -> None:
    suspend = c.get("SuspendTime")
    text = suspend.value.strip().upper() if suspend is not None else "-1"
    if text in ("INFINITE", "NONE", "UNLIMITED") or text.startswith("-"):
        values["autoscale"] = False
        for key in ("ResumeTimeout", "ResumeRate", "SuspendExcNodes", "SuspendExcParts"):
            c.get(key)
        return
    values["autoscale"] = True
    values["autoscale_idle_s"] = c.parsed("SuspendTime", "-1", sv.parse_int)
    values["autoscale_boot_delay_s"] = c.parsed("ResumeTimeout", "60", sv.parse_int)
    rate = c.parsed("ResumeRate", "300", sv.parse_int)
    values["autoscale_step"] = rate if rate > 0 else RESUME_RATE_UNLIMITED
    values["autoscale_wait_s"] = 0
    values["autoscale_cooldown_s"] = 0
    values["autoscale_interval_s"] = 0
    notes.append(
        "power saving: htcsim boots at most autoscale.step nodes per node type and decision "
        "(Slurm's ResumeRate is per minute, for the whole cluster); no wait before scaling up, "
        "no cooldown (Slurm has neither)"
    )
    minimum: dict[str, int] = {}
    excluded = c.get("SuspendExcNodes")
    if excluded is not None and excluded.value.strip():
        _suspend_exc_nodes(excluded, cluster, minimum)
    parts = c.get("SuspendExcParts")
    if parts is not None:
        for part in (p.strip() for p in parts.value.split(",") if p.strip()):
            for host in cluster.hosts_of_partition.get(part, []):
                t = cluster.type_of_host[host]
                minimum[t] = minimum.get(t, 0) + 1
    if minimum:
        values["autoscale_node_min"] = minimum
        notes.append(
            "SuspendExcNodes/SuspendExcParts: the nodes Slurm keeps from powering down are "
            "htcsim's minimum per node type (htcsim starts with them up)"
        )


def _suspend_exc_nodes(setting: Setting, cluster: ClusterImport, minimum: dict[str, int]) -> None:
    for item in _top_level(setting.value):
        hosts_text, _, count_text = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            hosts = sv.expand_hostlist(hosts_text)
            count = int(count_text) if count_text else len(hosts)
        except ValueError as exc:
            raise SlurmError(f"{setting.where}: SuspendExcNodes {item}: {exc}") from exc
        by_type: dict[str, int] = {}
        for host in hosts:
            if host not in cluster.type_of_host:
                raise SlurmError(
                    f"{setting.where}: SuspendExcNodes names node {host}, which is in no "
                    "partition of the imported cluster"
                )
            t = cluster.type_of_host[host]
            by_type[t] = by_type.get(t, 0) + 1
        left = count
        for t, available in by_type.items():  # a count over several types: fill in order
            take = min(left, available)
            minimum[t] = minimum.get(t, 0) + take
            left -= take


def _top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


# ----------------------------------------------------------------------- accounting


def _number(entity: Entity, key: str, what: str) -> int | None:
    text = entity.params.get(key, "").strip()
    if text in ("", "-1"):
        return None
    try:
        return sv.parse_int(text, what)
    except ValueError as exc:
        raise SlurmError(f"{entity.where}: {entity.name}: {key}: {exc}") from exc


def _tres(entity: Entity, key: str) -> dict[str, int]:
    try:
        counts = sv.parse_tres(entity.params.get(key, ""))
    except ValueError as exc:
        raise SlurmError(f"{entity.where}: {entity.name}: {key}: {exc}") from exc
    return {k: v for k, v in counts.items() if v >= 0}


def _shares(acc: Accounting, names: Names, values: dict[str, Any], notes: list[str]) -> None:
    groups: dict[str, float] = {}
    for name, account in acc.accounts.items():
        if name == "root":
            continue
        share = account.params.get("fairshare", "").strip().lower()
        if share == "parent":
            notes.append(f"account {name}: Fairshare=parent is left at htcsim's default (1)")
            continue
        if account.parent not in ("root", ""):
            notes.append(
                f"account {name} is under {account.parent}: htcsim has one level of groups, so "
                "it is a group of its own"
            )
        number = _number(account, "fairshare", "a share")
        if number:
            groups[names.from_slurm("groups", name)] = float(number)
    users: dict[str, float] = {}
    for (name, _), user in acc.users.items():
        if name == "root":
            continue
        if user.params.get("fairshare", "").strip().lower() == "parent":
            continue
        number = _number(user, "fairshare", "a share")
        key = names.from_slurm("users", name)
        if not number:
            continue
        if key in users and users[key] != number:
            notes.append(
                f"user {name} has several accounts with different shares: the first "
                f"({users[key]:g}) is kept"
            )
            continue
        users.setdefault(key, float(number))
    values["group_shares"] = groups
    values["user_shares"] = users
    if names:
        for kind, table in (("users", users), ("groups", groups)):
            unknown = sorted(k for k in table if not k.lstrip("-").isdigit())
            if unknown:
                notes.append(
                    f"{kind} not in the name tables: {', '.join(unknown)} (their shares name "
                    "no user or group of the workload)"
                )


def _limits_qos(cluster: ClusterImport, acc: Accounting, notes: list[str]) -> str | None:
    named = set(cluster.partition_qos.values())
    if len(named) == 1 and len(cluster.partition_qos) == len(cluster.lln):
        return named.pop()
    if len(named) > 1:
        notes.append(
            "partitions have different partition QOS: their per-user limits are not "
            "imported (htcsim's limits are the same everywhere)"
        )
        return None
    return LIMITS_QOS if LIMITS_QOS in acc.qos else None


def _qos(
    acc: Accounting,
    names: Names,
    limits_qos: str | None,
    values: dict[str, Any],
    notes: list[str],
    untranslated: list[str],
    caps: bool = True,
) -> None:
    out: list[QoS] = []
    unlinked = []
    for name, entity in acc.qos.items():
        if name == limits_qos:
            continue
        cores_gpus = _tres(entity, "grptres") if caps else {}
        priority = _number(entity, "priority", "a priority") or 0
        queues = tuple(names.ids("qos", name))
        if not queues:
            unlinked.append(name)
        out.append(
            QoS(
                name=name,
                priority=float(priority),
                queues=queues,
                running_jobs=(_number(entity, "grpjobs", "a job count") or 0) if caps else 0,
                cores=cores_gpus.get(sv.TRES_CPU, 0),
                gpus=cores_gpus.get(sv.TRES_GPU, 0),
                queued_jobs=(_number(entity, "grpsubmitjobs", "a job count") or 0) if caps else 0,
            )
        )
        used = {"priority", "grpjobs", "grptres", "grpsubmitjobs"}
        _leftover(entity, f"QOS {name}", used, untranslated)
    values["qos"] = tuple(out)
    if unlinked:
        notes.append(
            f"QOS {', '.join(unlinked)}: no workload queue numbers (give the name tables of "
            "htcsim import sacct --names to link a workload's jobs to them)"
        )


def _limits(
    acc: Accounting,
    limits_qos: str | None,
    values: dict[str, Any],
    notes: list[str],
    untranslated: list[str],
) -> None:
    if limits_qos is not None and limits_qos in acc.qos:
        q = acc.qos[limits_qos]
        for who, suffix in (("user", "peruser"), ("group", "peraccount")):
            tres = _tres(q, f"maxtres{suffix}")
            values[f"max_running_jobs_per_{who}"] = _number(q, f"maxjobs{suffix}", "a count") or 0
            values[f"max_cores_per_{who}"] = tres.get(sv.TRES_CPU, 0)
            values[f"max_gpus_per_{who}"] = tres.get(sv.TRES_GPU, 0)
            values[f"max_queued_jobs_per_{who}"] = (
                _number(q, f"maxsubmitjobs{suffix}", "a count") or 0
            )
        used = {f"{k}{s}" for k in ("maxjobs", "maxtres", "maxsubmitjobs")
                for s in ("peruser", "peraccount")}  # fmt: skip
        _leftover(q, f"QOS {limits_qos} (partition QOS)", used, untranslated)
    else:
        root = Entity("root", "cluster", params=dict(acc.cluster))
        if "root" in acc.accounts:
            root.params.update(acc.accounts["root"].params)
        jobs = _number(root, "maxjobs", "a count")
        if jobs:
            values["max_running_jobs_per_user"] = jobs
        submit = _number(root, "maxsubmitjobs", "a count")
        if submit:
            values["max_queued_jobs_per_user"] = submit
        _leftover(root, "the cluster's root association", {"maxjobs", "maxsubmitjobs", "fairshare"},
                  untranslated)  # fmt: skip
    if any(values.get(f"max_queued_jobs_per_{w}") for w in ("user", "group")):
        notes.append(
            "MaxSubmitJobs: Slurm refuses a submission beyond the cap; htcsim accepts the job "
            "and considers only the first N pending ones"
        )
    _group_limits(acc, values, notes, untranslated)


def _group_limits(
    acc: Accounting, values: dict[str, Any], notes: list[str], untranslated: list[str]
) -> None:
    accounts = [a for n, a in acc.accounts.items() if n != "root"]
    for key, field_name, tres in (
        ("grpjobs", "max_running_jobs_per_group", ""),
        ("grptres", "max_cores_per_group", sv.TRES_CPU),
        ("grptres", "max_gpus_per_group", sv.TRES_GPU),
        ("grpsubmitjobs", "max_queued_jobs_per_group", ""),
    ):
        found = {
            a.name: (_tres(a, key).get(tres) if tres else _number(a, key, "a count"))
            for a in accounts
        }
        set_on = {n: v for n, v in found.items() if v}
        if not set_on or values.get(field_name):
            continue
        if len(set(set_on.values())) == 1 and len(set_on) == len(accounts):
            values[field_name] = next(iter(set_on.values()))
        else:
            notes.append(
                f"{key}{'' if not tres else ' ' + tres} differs between accounts: not imported "
                "(htcsim has one cap for every group)"
            )
    for a in accounts:
        _leftover(a, f"account {a.name}", {"fairshare", "grpjobs", "grptres", "grpsubmitjobs"},
                  untranslated)  # fmt: skip
    for (name, account), user in acc.users.items():
        _leftover(user, f"user {name} (account {account or '?'})", {"fairshare"}, untranslated)


def _limit_keys(params: dict[str, str]) -> list[str]:
    return [k for k in params if k.startswith(("max", "grp"))]


def _leftover(entity: Entity, label: str, used: set[str], untranslated: list[str]) -> None:
    for key, value in entity.params.items():
        if key in used or key in _DESCRIPTIVE or value.strip().lower() in _TRIVIAL:
            continue
        untranslated.append(f"{entity.where} {label} {key}={value}")


def import_slurm(
    conf_path: str | Path, accounting_paths: list[Path] | None = None, names: Names | None = None
) -> Imported:
    """Read slurm.conf (and its includes) and the accounting inputs into a policy."""
    conf = read_slurm_conf(conf_path)
    accounting = Accounting()
    for path in accounting_paths or []:
        read_accounting(path, accounting)
    return policy_from_slurm(conf, accounting, names)


def policy_text(imported: Imported, header: list[str]) -> str:
    """The policy TOML, headed by comments: where it came from, how it differs from what
    Slurm does, and every setting it does not hold."""
    lines = [f"# {h}" for h in header]
    if imported.notes:
        lines.extend(["#", "# How this policy differs from what Slurm does:"])
        lines.extend(f"#   - {n}" for n in imported.notes)
    if imported.untranslated:
        lines.extend(["#", "# Not translated (htcsim has no equivalent, or not policy):"])
        lines.extend(f"#   {u}" for u in imported.untranslated)
    return "\n".join(lines) + "\n\n" + policy_to_toml(imported.policy)
