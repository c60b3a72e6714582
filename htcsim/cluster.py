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
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from htcsim.model import Machine

N_RESOURCES = 4  # cores, mem_mib, gpus, scratch_mib: the kernel's resource vector
_NODE_TYPE_KEYS = ("name", "count", "cores", "mem_mib", "gpus", "scratch_mib")


class ClusterError(ValueError):
    """A cluster file is invalid; the message names the file, the node type and the key."""


@dataclass(frozen=True)
class NodeType:
    """``count`` identical nodes."""

    name: str
    count: int
    cores: int
    mem_mib: int = 0
    gpus: int = 0
    scratch_mib: int = 0


@dataclass(frozen=True)
class Cluster:
    """Node types in order; node k of the kernel is the k-th node of this list."""

    node_types: tuple[NodeType, ...]

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

    def node_type_of(self) -> np.ndarray:
        """Index into ``node_types`` for every node."""
        return np.repeat(np.arange(len(self.node_types)), [t.count for t in self.node_types])

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
    unknown = set(data) - {"node_type"}
    if unknown:
        raise ClusterError(
            f"{source}: unknown key(s) {', '.join(sorted(unknown))} (known: node_type)"
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
        for key in _NODE_TYPE_KEYS[1:]:
            value = entry.get(key, 0)
            minimum = 1 if key in ("count", "cores") else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ClusterError(f"{where}: {key} must be an integer >= {minimum}, got {value!r}")
        types.append(NodeType(**entry))
    return Cluster(tuple(types))


def load_cluster(path: str | Path) -> Cluster:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClusterError(f"{path}: cannot read the cluster file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ClusterError(f"{path}: not valid TOML: {exc}") from exc
    return cluster_from_mapping(data, str(path))
