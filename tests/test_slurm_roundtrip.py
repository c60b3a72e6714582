"""Policy -> Slurm -> policy: what the export writes, the import reads back.

For generated policies (and clusters), every key the export calls exact comes
back from the files it wrote with the same value, and so does every
approximate key it says the import recovers (``Row.round_trips``). The one
planned exception: the autoscaling keys of a policy that does not autoscale,
which have no effect and are not written. The realistic site of
``tests/data/slurm-site`` goes through the same loop: imported, exported,
imported again, it is the same policy and the same cluster.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htcsim.cluster import Cluster, cluster_from_mapping
from htcsim.policy import Policy, QoS
from htcsim.slurm.export import export_slurm
from htcsim.slurm.names import Names
from htcsim.slurm.plan import LIMITS_QOS, key_values
from htcsim.slurm.to_policy import Imported, import_slurm

SITE = Path(__file__).parent / "data" / "slurm-site"

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6).filter(
    lambda n: n != "root"  # Slurm's own account and user: the import leaves them out
)
counts = st.integers(0, 2000)
BOUNDS = ("autoscale.min_nodes", "autoscale.min", "autoscale.max_nodes", "autoscale.max")
"""Autoscaling bounds: read back per node type, so checked as bounds, not as keys."""


def _minutes(low: int = 1) -> st.SearchStrategy[int]:
    """Mostly whole minutes (Slurm's unit), sometimes not."""
    return st.one_of(st.integers(low, 60 * 24 * 30).map(lambda m: 60 * m), st.integers(low, 10**6))


def _weight() -> st.SearchStrategy[float]:
    return st.one_of(
        st.integers(0, 10**6).map(float), st.floats(0, 1e6, allow_nan=False), st.just(5e9)
    )


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    type_names = draw(
        st.lists(
            st.sampled_from(["cpu", "gpu", "a100", "big_mem", "cn2", "fat"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    types = [
        {
            "name": name,
            "count": draw(st.integers(1, 40)),
            "cores": draw(st.integers(1, 128)),
            "mem_mib": draw(st.sampled_from([0, 64000, 256000])),
            "gpus": draw(st.sampled_from([0, 0, 4])),
        }
        for name in type_names
    ]
    data: dict[str, object] = {"node_type": types}
    if len(type_names) > 1 and draw(st.booleans()):
        data["partition"] = [
            {"name": f"p{k}", "node_types": [name]} for k, name in enumerate(type_names)
        ]
    return cluster_from_mapping(data)


@st.composite
def policies(draw: st.DrawFn, cluster: Cluster | None) -> Policy:
    qos_names = draw(st.lists(names, max_size=3, unique=True))
    qos = tuple(
        QoS(
            name=name,
            priority=float(draw(st.integers(0, 10**5))),
            running_jobs=draw(counts),
            cores=draw(counts),
            gpus=draw(st.integers(0, 16)),
            queued_jobs=draw(counts),
        )
        for name in qos_names
    )
    values: dict[str, object] = {
        "order": draw(st.sampled_from(["fcfs", "sjf", "priority", "multifactor"])),
        "backfill": draw(st.sampled_from(["none", "easy", "conservative"])),
        "backfill_depth": draw(st.one_of(st.just(0), st.integers(1, 10**6 + 5))),
        "starvation_limit_s": draw(st.one_of(st.just(0), st.integers(1, 10**6))),
        "placement": draw(st.sampled_from(["first_fit", "best_fit", "spread", "cons_tres"])),
        "slurm_reaction_s": draw(st.sampled_from([0, 1, 2])),
        "slurm_backfill_interval_s": draw(st.sampled_from([0, 1, 30, 45])),
        "slurm_whole_minute_limits": draw(st.booleans()),
        "priority_weight_age": draw(_weight()),
        "priority_weight_size": draw(_weight()),
        "priority_weight_fairshare": draw(_weight()),
        "priority_weight_qos": draw(_weight()),
        "priority_max_age_s": draw(_minutes()),
        "priority_favor": draw(st.sampled_from(["small", "large"])),
        "priority_interval_s": draw(_minutes()),
        "nice": draw(st.dictionaries(names, st.integers(-100, 100).map(float), max_size=2)),
        "fairshare_algorithm": draw(st.sampled_from(["classic", "fair_tree"])),
        "fairshare_half_life_s": draw(st.one_of(st.just(0), _minutes())),
        "user_shares": draw(st.dictionaries(names, st.integers(1, 100).map(float), max_size=4)),
        "group_shares": draw(
            st.dictionaries(
                names, st.one_of(st.integers(1, 100).map(float), st.floats(0.1, 50)), max_size=3
            )
        ),
        "qos": qos,
        "on_node_failure": draw(st.sampled_from(["requeue", "fail"])),
        "max_retries": draw(st.sampled_from([0, 0, 3])),
        "autoscale": draw(st.booleans()),
        "autoscale_wait_s": draw(st.sampled_from([0, 600])),
        "autoscale_boot_delay_s": draw(st.integers(0, 3600)),
        "autoscale_idle_s": draw(st.integers(1, 7200)),
        "autoscale_cooldown_s": draw(st.sampled_from([0, 300])),
        "autoscale_step": draw(st.integers(1, 500)),
        "autoscale_interval_s": draw(st.sampled_from([0, 0, 60])),
    }
    for who in ("user", "group"):
        for what in ("running_jobs", "cores", "gpus", "queued_jobs"):
            values[f"max_{what}_per_{who}"] = draw(st.sampled_from([0, 0, draw(counts)]))
    if cluster is not None and draw(st.booleans()):
        low = {t.name: draw(st.integers(0, t.count)) for t in cluster.node_types}
        values["autoscale_node_min"] = low
        if draw(st.booleans()):  # a pool smaller or larger than the cluster file's count
            values["autoscale_node_max"] = {
                name: draw(st.integers(max(n, 1), n + 20)) for name, n in low.items()
            }
    elif draw(st.booleans()):
        values["autoscale_min_nodes"] = draw(st.integers(0, 2))
        values["autoscale_max_nodes"] = draw(st.sampled_from([0, 2, 30]))
    return Policy(**values)  # type: ignore[arg-type]


def _export_import(policy: Policy, cluster: Cluster | None, out: Path) -> tuple[Imported, object]:
    exported = export_slurm(policy, out, cluster=cluster)
    imported = import_slurm(out / "slurm.conf", [out / "sacctmgr.sh"])
    return imported, exported


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_exact_key_comes_back_from_the_files(data: st.DataObject) -> None:
    cluster = data.draw(st.one_of(st.none(), clusters()))
    policy = data.draw(policies(cluster))
    with tempfile.TemporaryDirectory() as tmp:
        imported, exported = _export_import(policy, cluster, Path(tmp))
    before, after = key_values(policy), key_values(imported.policy)
    rows = exported.plan.rows  # type: ignore[attr-defined]
    assert {r.key for r in rows} == set(before), "one row per policy key"
    for row in rows:
        if row.round_trips:
            assert after.get(row.key) == before[row.key], (row, after.get(row.key))
        elif row.status == "exact":  # the planned exceptions, nothing else
            inactive = not policy.autoscale and row.key.startswith("autoscale.")
            assert inactive or row.key in BOUNDS, row
    if policy.autoscale and cluster is not None:  # the bounds hold per node type
        back = imported.cluster.cluster
        assert back is not None
        for t, b in zip(cluster.node_types, back.node_types, strict=True):
            assert b.name == t.name
            assert imported.policy.autoscale_bounds(b.name, b.count) == policy.autoscale_bounds(
                t.name, t.count
            )


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_cluster_comes_back_as_it_was(data: st.DataObject) -> None:
    """Node types (names, sizes, order) and partitions survive the NodeName and
    PartitionName lines, the pool of an autoscaled type being its max."""
    cluster = data.draw(clusters())
    policy = data.draw(policies(cluster))
    with tempfile.TemporaryDirectory() as tmp:
        imported, _ = _export_import(policy, cluster, Path(tmp))
    back = imported.cluster.cluster
    assert back is not None
    expected = [
        (t.name, policy.autoscale_bounds(t.name, t.count)[1] if policy.autoscale else t.count,
         t.cores, t.mem_mib, t.gpus)
        for t in cluster.node_types
    ]  # fmt: skip
    assert [(t.name, t.count, t.cores, t.mem_mib, t.gpus) for t in back.node_types] == expected
    assert [(p.name, p.node_types) for p in back.partitions] == [
        (p.name, p.node_types) for p in cluster.partitions
    ]


def test_the_name_tables_carry_users_groups_and_queues_both_ways(tmp_path: Path) -> None:
    """A policy tuned on an sacct import names users by number; Slurm gets their names,
    and the import gives the numbers back, QoS queue numbers included."""
    tables = Names(
        {
            "users": {"1": "alice", "2": "bob"},
            "groups": {"1": "physics"},
            "qos": {"1": "high", "2": "normal"},
        }
    )
    policy = Policy(
        user_shares={"1": 3.0, "2": 1.0},
        group_shares={"1": 5.0},
        qos=(QoS("high", 10.0, queues=(1,)), QoS("normal", 0.0, queues=(2,))),
    )
    exported = export_slurm(policy, tmp_path, names=tables)
    script = (tmp_path / "sacctmgr.sh").read_text()
    assert "where name=alice set Fairshare=3" in script
    assert "add account physics Fairshare=5" in script
    back = import_slurm(tmp_path / "slurm.conf", [tmp_path / "sacctmgr.sh"], tables).policy
    assert back.user_shares == policy.user_shares
    assert back.group_shares == policy.group_shares
    assert [(q.name, q.queues) for q in back.qos] == [("high", (1,)), ("normal", (2,))]
    assert all(r.round_trips for r in exported.plan.rows if r.key.endswith(".queues"))


def test_the_site_is_a_fixed_point_of_import_then_export(tmp_path: Path) -> None:
    """The realistic site, imported, exported with its cluster and imported again, is
    the same policy and cluster: what the import produces is what the export can say."""
    accounting = [SITE / "aurora.cfg", SITE / "qos.txt"]
    first = import_slurm(SITE / "slurm.conf", accounting)
    assert first.cluster.cluster is not None
    exported = export_slurm(first.policy, tmp_path, cluster=first.cluster.cluster)
    second = import_slurm(tmp_path / "slurm.conf", [tmp_path / "sacctmgr.sh"])
    before, after = key_values(first.policy), key_values(second.policy)
    differ = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
    assert differ == {}
    assert second.cluster.cluster == first.cluster.cluster
    assert LIMITS_QOS not in {q.name for q in second.policy.qos}
    assert exported.warning is None  # the site's own policy is expressible in Slurm
