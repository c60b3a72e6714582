"""The cluster a workload runs on: node types with their resources, read from TOML.

A cluster file describes heterogeneous nodes; the kernel sees one capacity
row per node (cores, mem_mib, gpus, scratch_mib). Without a file, a replay
uses the identical nodes of the workload's ``Machine`` (an SWF header).

    [[node_type]]
    name = "cpu"
    count = 100
    cores = 32
    mem_mib = 128000

    [[node_type]]
    name = "gpu"
    count = 8
    cores = 32
    mem_mib = 256000
    gpus = 4
    price_per_hour = 2.5     # money per node and hour it is provisioned (default 0)

With autoscaling (the policy's ``[autoscale]``), a type's node count is its
default max: the pool the autoscaler boots nodes from.

Partitions split the node types into disjoint sets; a job runs only on the
nodes of its partition, chosen by its workload partition number (SWF field
16) among ``ids``; a job of no listed number goes to the first partition.
Each partition is scheduled as a machine of its own::

    [[partition]]
    name = "batch"
    node_types = ["cpu"]
    ids = [1]

    [[partition]]
    name = "gpu"
    node_types = ["gpu"]
    ids = [2]

An advance reservation sets nodes aside for a time window, for the jobs of one
user, group (workload ids, SWF fields 12 and 13) or QoS (a name of the
policy's [[qos]] tables); other jobs may use those nodes only if they end, by
their requested time, before the window opens::

    [[reservation]]
    name = "campaign"
    start_s = 86400          # seconds from the workload's origin
    end_s = 172800
    node_type = "gpu"        # optional: the first ``count`` nodes of this type
    count = 4                # optional: default every node (of the type)
    qos = "critical"         # or user = 17, or group = 3
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from htcsim.model import Machine

N_RESOURCES = 4  # cores, mem_mib, gpus, scratch_mib: the kernel's resource vector
_NODE_TYPE_KEYS = ("name", "count", "cores", "mem_mib", "gpus", "scratch_mib", "price_per_hour")
_PARTITION_KEYS = ("name", "node_types", "ids")
_RESERVATION_KEYS = ("name", "start_s", "end_s", "node_type", "count", "user", "group", "qos")


class ClusterError(ValueError):
    """A cluster file is invalid; the message names the file, the node type and the key."""


@dataclass(frozen=True)
class NodeType:
    """``count`` identical nodes, costing ``price_per_hour`` each while provisioned."""

    name: str
    count: int
    cores: int
    mem_mib: int = 0
    gpus: int = 0
    scratch_mib: int = 0
    price_per_hour: float = 0.0


@dataclass(frozen=True)
class Partition:
    """Node types scheduled together; jobs of the listed workload partition numbers."""

    name: str
    node_types: tuple[str, ...]
    ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Reservation:
    """Nodes set aside over [start_s, end_s) for one user, group or QoS."""

    name: str
    start_s: int
    end_s: int
    owner: str  # "user", "group" or "qos"
    owner_name: str  # workload id of the user or group, or the QoS name
    node_type: str | None = None
    count: int | None = None


@dataclass(frozen=True)
class Cluster:
    """Node types in order; node k of the kernel is the k-th node of this list."""

    node_types: tuple[NodeType, ...]
    reservations: tuple[Reservation, ...] = ()
    partitions: tuple[Partition, ...] = ()

    def node_partition(self) -> np.ndarray:
        """Partition index of every node (all 0 without partitions)."""
        if not self.partitions:
            return np.zeros(self.n_nodes, dtype=np.int32)
        of_type = {name: k for k, p in enumerate(self.partitions) for name in p.node_types}
        per_type = np.array([of_type[t.name] for t in self.node_types], dtype=np.int32)
        return per_type[self.node_type_of()]

    def job_partition(self, partition_ids: np.ndarray) -> np.ndarray:
        """Partition index of every job from its workload partition number (unlisted: 0)."""
        out = np.zeros(len(partition_ids), dtype=np.int32)
        for k, partition in enumerate(self.partitions):
            if partition.ids:
                out[np.isin(partition_ids, partition.ids)] = k
        return out

    def reservation_nodes(self, reservation: Reservation) -> np.ndarray:
        """Node indices of a reservation: the first ``count`` of its type (or of all)."""
        types = self.node_type_of()
        if reservation.node_type is None:
            nodes = np.arange(len(types))
        else:
            index = [t.name for t in self.node_types].index(reservation.node_type)
            nodes = np.flatnonzero(types == index)
        return nodes if reservation.count is None else nodes[: reservation.count]

    @property
    def n_nodes(self) -> int:
        return sum(t.count for t in self.node_types)

    @property
    def total_cores(self) -> int:
        return sum(t.count * t.cores for t in self.node_types)

    def capacity(self) -> np.ndarray:
        """One row per node: (cores, mem_mib, gpus, scratch_mib), shape (n_nodes, 4)."""
        rows = [
            np.tile([t.cores, t.mem_mib, t.gpus, t.scratch_mib], (t.count, 1))
            for t in self.node_types
        ]
        return np.ascontiguousarray(np.vstack(rows), dtype=np.int64)

    def with_counts(self, counts: dict[str, int]) -> Cluster:
        """The same cluster with some node types resized (an autoscaling pool);
        reservations and partitions keep naming the types."""
        types = tuple(
            replace(t, count=counts[t.name]) if t.name in counts else t for t in self.node_types
        )
        return replace(self, node_types=types)

    def prices(self) -> np.ndarray:
        """Price per node and hour of each node type."""
        return np.array([t.price_per_hour for t in self.node_types], dtype=np.float64)

    def node_type_of(self) -> np.ndarray:
        """Index into ``node_types`` for every node."""
        return np.repeat(np.arange(len(self.node_types)), [t.count for t in self.node_types])

    @classmethod
    def pool_of(cls, machine: Machine) -> Cluster:
        """One node holding every core of ``machine`` (cores only): the pool of
        processors a replay of one-core tasks on one-core nodes amounts to."""
        return cls((NodeType(name="pool", count=1, cores=machine.total_cores),))

    @classmethod
    def from_machine(cls, machine: Machine) -> Cluster:
        return cls(
            (
                NodeType(
                    name="node",
                    count=machine.n_nodes,
                    cores=machine.cores_per_node,
                    mem_mib=machine.mem_mib_per_node,
                    gpus=machine.gpus_per_node,
                ),
            )
        )


def cluster_from_mapping(data: dict[str, Any], source: str = "cluster") -> Cluster:
    """A Cluster from parsed TOML, with errors naming the node type and key."""
    unknown = set(data) - {"node_type", "reservation", "partition"}
    if unknown:
        raise ClusterError(
            f"{source}: unknown key(s) {', '.join(sorted(unknown))} "
            "(known: node_type, partition, reservation)"
        )
    entries = data.get("node_type")
    if not isinstance(entries, list) or not entries:
        raise ClusterError(f"{source}: needs at least one [[node_type]] table")
    types = []
    names: set[str] = set()
    for k, entry in enumerate(entries):
        where = (
            f"{source}: node_type {entry.get('name', k + 1)!r}"
            if isinstance(entry, dict)
            else source
        )
        if not isinstance(entry, dict):
            raise ClusterError(f"{where}: each node_type must be a table")
        extra = set(entry) - set(_NODE_TYPE_KEYS)
        if extra:
            raise ClusterError(
                f"{where}: unknown key(s) {', '.join(sorted(extra))} "
                f"(known: {', '.join(_NODE_TYPE_KEYS)})"
            )
        for key in ("name", "count", "cores"):
            if key not in entry:
                raise ClusterError(f"{where}: {key} is required")
        if not isinstance(entry["name"], str) or not entry["name"]:
            raise ClusterError(f"{where}: name must be a non-empty string")
        if entry["name"] in names:
            raise ClusterError(f"{where}: the name is used twice")
        names.add(entry["name"])
        price = entry.get("price_per_hour", 0.0)
        if not isinstance(price, int | float) or isinstance(price, bool) or not price >= 0:
            raise ClusterError(f"{where}: price_per_hour must be a number >= 0, got {price!r}")
        for key in _NODE_TYPE_KEYS[1:-1]:
            value = entry.get(key, 0)
            minimum = 1 if key in ("count", "cores") else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ClusterError(f"{where}: {key} must be an integer >= {minimum}, got {value!r}")
        types.append(NodeType(**{**entry, "price_per_hour": float(price)}))
    reservations = tuple(
        _reservation(entry, k, types, source) for k, entry in enumerate(data.get("reservation", []))
    )
    partitions = _partitions(data.get("partition", []), types, source)
    return Cluster(tuple(types), reservations, partitions)


def _partitions(entries: object, types: list[NodeType], source: str) -> tuple[Partition, ...]:
    """[[partition]] tables: every node type in exactly one, numbers in at most one."""
    if not isinstance(entries, list):
        raise ClusterError(f"{source}: partition must be a list of [[partition]] tables")
    names = [t.name for t in types]
    owner: dict[str, str] = {}
    owner_of_id: dict[int, str] = {}
    out = []
    for k, entry in enumerate(entries):
        where = _where(entry, k, "partition", _PARTITION_KEYS, source)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ClusterError(f"{where}: name must be a non-empty string")
        members = entry.get("node_types")
        if not isinstance(members, list) or not members:
            raise ClusterError(f"{where}: node_types must list at least one node type")
        for member in members:
            if member not in names:
                raise ClusterError(
                    f"{where}: node type {member!r} is not defined ({', '.join(names)})"
                )
            if member in owner:
                raise ClusterError(
                    f"{where}: node type {member!r} is already in partition {owner[member]!r}"
                )
            owner[member] = name
        ids = entry.get("ids", [])
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise ClusterError(f"{where}: ids must be a list of integers (SWF partition numbers)")
        for i in ids:
            if i in owner_of_id:
                raise ClusterError(f"{where}: id {i} is already in partition {owner_of_id[i]!r}")
            owner_of_id[i] = name
        out.append(Partition(name=name, node_types=tuple(members), ids=tuple(ids)))
    if out:
        left = [n for n in names if n not in owner]
        if left:
            raise ClusterError(
                f"{source}: node type(s) {', '.join(left)} belong to no partition "
                "(with partitions, every node type is in one)"
            )
    return tuple(out)


def _where(entry: object, k: int, kind: str, keys: tuple[str, ...], source: str) -> str:
    """Check that a [[kind]] entry is a table of known keys; how errors name it."""
    if not isinstance(entry, dict):
        raise ClusterError(f"{source}: each {kind} must be a table")
    where = f"{source}: {kind} {entry.get('name', k + 1)!r}"
    extra = set(entry) - set(keys)
    if extra:
        raise ClusterError(
            f"{where}: unknown key(s) {', '.join(sorted(extra))} (known: {', '.join(keys)})"
        )
    return where


def _reservation(entry: object, k: int, types: list[NodeType], source: str) -> Reservation:
    """One [[reservation]] table, checked against the node types."""
    where = _where(entry, k, "reservation", _RESERVATION_KEYS, source)
    assert isinstance(entry, dict)
    for key in ("start_s", "end_s"):
        value = entry.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ClusterError(f"{where}: {key} must be an integer (seconds), got {value!r}")
    if entry["end_s"] <= entry["start_s"]:
        raise ClusterError(f"{where}: end_s must be after start_s")
    owners = [key for key in ("user", "group", "qos") if key in entry]
    if len(owners) != 1:
        raise ClusterError(f"{where}: needs exactly one of user, group or qos")
    owner = owners[0]
    node_type = entry.get("node_type")
    pool = sum(t.count for t in types)
    if node_type is not None:
        named = {t.name: t for t in types}
        if node_type not in named:
            raise ClusterError(
                f"{where}: node_type {node_type!r} is not a node type ({', '.join(named)})"
            )
        pool = named[node_type].count
    count = entry.get("count")
    if count is not None and (
        not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= pool
    ):
        raise ClusterError(f"{where}: count must be an integer in 1..{pool}, got {count!r}")
    return Reservation(
        name=str(entry.get("name", f"reservation{k + 1}")),
        start_s=entry["start_s"],
        end_s=entry["end_s"],
        owner=owner,
        owner_name=str(entry[owner]),
        node_type=node_type,
        count=count,
    )


def load_cluster(path: str | Path) -> Cluster:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClusterError(f"{path}: cannot read the cluster file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ClusterError(f"{path}: not valid TOML: {exc}") from exc
    return cluster_from_mapping(data, str(path))
