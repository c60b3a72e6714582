"""A cluster file from slurm.conf's NodeName and PartitionName lines.

A node type is a run of nodes of one NodeName line that land in the same
partition; types are ordered by Weight (Slurm fills lower weights first, as
htcsim fills earlier types first), then by file order. CPUs come from
``CPUs`` or Boards x Sockets x CoresPerSocket x ThreadsPerCore; memory from
RealMemory (Slurm's default of 1 MB means "not declared": 0 here); scratch
from TmpDisk; GPUs from every ``gpu`` GRES of the line.

Partitions: htcsim's are disjoint, Slurm's may overlap. A node goes to the
first partition (the Default=YES one first, then file order) that lists it;
overlaps are reported; a partition left with no node is dropped, and so is a
node no partition lists (Slurm runs no job there). One partition of every
node is no partition at all for htcsim. Partition ids (a workload's numbers)
come from the name tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import tomli_w

from htcsim.cluster import Cluster, ClusterError, cluster_from_mapping
from htcsim.slurm import values as sv
from htcsim.slurm.conf_read import Record, SlurmConf
from htcsim.slurm.errors import SlurmError
from htcsim.slurm.names import Names

NODE_KEYS = (
    "nodename", "cpus", "boards", "sockets", "corespersocket", "threadspercore",
    "realmemory", "tmpdisk", "gres", "weight", "state",
)  # fmt: skip
"""NodeName keys the cluster file uses (others describe hardware or addresses)."""
PARTITION_KEYS = ("partitionname", "nodes", "default", "qos", "lln", "state")


@dataclass
class ClusterImport:
    cluster: Cluster | None = None
    why_none: str = "no NodeName lines"  # when there is no cluster
    toml: str = ""
    type_of_host: dict[str, str] = field(default_factory=dict)
    hosts_of_partition: dict[str, list[str]] = field(default_factory=dict)
    partition_qos: dict[str, str] = field(default_factory=dict)  # partition -> its QOS
    lln: dict[str, bool] = field(default_factory=dict)  # partition -> LLN=YES
    notes: list[str] = field(default_factory=list)
    untranslated: list[str] = field(default_factory=list)


@dataclass
class _Node:
    host: str
    record: int
    cores: int
    mem_mib: int
    gpus: int
    scratch_mib: int
    weight: int
    prefix: str


def cluster_from_conf(conf: SlurmConf, names: Names) -> ClusterImport:
    out = ClusterImport()
    nodes = _nodes(conf, out)
    if not nodes:
        return out
    part_of, order = _partitions(conf, nodes, out)
    kept = [n for n in nodes if n.host in part_of]
    if len(kept) < len(nodes):
        out.notes.append(
            f"{len(nodes) - len(kept)} nodes are in no partition (Slurm runs no job there): "
            "left out of the cluster file"
        )
    if not kept:
        out.why_none = "no node is in a partition"
        out.notes.append("no node is in a partition: no cluster")
        return out
    types: dict[tuple[int, str], dict[str, Any]] = {}
    for n in kept:
        key = (n.record, part_of[n.host])
        if key not in types:
            types[key] = {
                "name": n.prefix, "count": 0, "cores": n.cores, "mem_mib": n.mem_mib,
                "gpus": n.gpus, "scratch_mib": n.scratch_mib, "_weight": n.weight,
                "_hosts": [],
            }  # fmt: skip
        types[key]["count"] += 1
        types[key]["_hosts"].append(n.host)
    _unique_names(types)
    ordered = sorted(types.items(), key=lambda kv: (kv[1]["_weight"], kv[0][0]))
    for (_, part), t in ordered:
        for host in t["_hosts"]:
            out.type_of_host[host] = t["name"]
        out.hosts_of_partition.setdefault(part, []).extend(t["_hosts"])
    data: dict[str, Any] = {
        "node_type": [
            {k: v for k, v in t.items() if not k.startswith("_") and (v or k in ("count", "cores"))}
            for _, t in ordered
        ]
    }
    used = [p for p in order if p in out.hosts_of_partition]
    if len(used) > 1:
        data["partition"] = [
            {
                "name": p,
                "node_types": list(dict.fromkeys(t["name"] for (_, q), t in ordered if q == p)),
                "ids": names.ids("partitions", p),
            }
            for p in used
        ]
    for p in order:
        if p not in out.hosts_of_partition:
            out.notes.append(f"partition {p}: every node of it is in an earlier partition; dropped")
    try:
        out.cluster = cluster_from_mapping(data, "the imported cluster")
    except ClusterError as exc:  # a type the reader could not make valid
        raise SlurmError(str(exc)) from exc
    out.toml = cluster_toml(data)
    return out


def cluster_toml(data: dict[str, Any]) -> str:
    """The cluster file's text: one [[node_type]] and one [[partition]] table each."""
    parts = []
    for kind in ("node_type", "partition"):
        for table in data.get(kind, []):
            parts.append(f"[[{kind}]]\n" + tomli_w.dumps(table))
    return "\n".join(parts)


def _nodes(conf: SlurmConf, out: ClusterImport) -> list[_Node]:
    nodes: list[_Node] = []
    defaults: dict[str, str] = {}
    seen: set[str] = set()
    for k, record in enumerate(conf.of_kind("nodename")):
        if record.name.lower() == "default":
            defaults.update({key: v for key, v in record.params.items() if key != "nodename"})
            _note_unused(record, record.params, NODE_KEYS, out)
            continue
        params = {**defaults, **record.params}
        _note_unused(record, params, NODE_KEYS, out)
        try:
            hosts = sv.expand_hostlist(record.name)
            cores = _cpus(params)
            mem = sv.parse_int(params.get("realmemory", "0"), "a memory size in MB")
            scratch = sv.parse_int(params.get("tmpdisk", "0"), "a disk size in MB")
            gpus = _gpus(params.get("gres", ""))
            weight = sv.parse_int(params.get("weight", "1"), "a weight")
        except ValueError as exc:
            raise SlurmError(f"{record.where}: NodeName {record.name}: {exc}") from exc
        head = record.name.split(",")[0]
        prefix = head.split("[")[0] if "[" in head else head.rstrip("0123456789")
        for host in hosts:
            if host in seen:
                raise SlurmError(f"{record.where}: node {host} is defined twice")
            seen.add(host)
            nodes.append(
                _Node(host, k, cores, 0 if mem <= 1 else mem, gpus, scratch, weight,
                      prefix.rstrip("-_.") or "node")
            )  # fmt: skip
    return nodes


def _cpus(params: dict[str, str]) -> int:
    if "cpus" in params:
        return sv.parse_int(params["cpus"], "a CPU count")
    product = 1
    for key in ("boards", "sockets", "corespersocket", "threadspercore"):
        product *= sv.parse_int(params.get(key, "1"), f"a {key} count")
    return product


def _gpus(gres: str) -> int:
    """GPUs of a Gres= value: ``gpu:4``, ``gpu:a100:2,gpu:v100:2``, ``gpu:4(S:0-1)``."""
    total = 0
    for item in re.split(r",(?![^(]*\))", gres):
        parts = item.split("(")[0].split(":")
        if parts[0].strip().lower() != "gpu":
            continue
        count = parts[-1] if len(parts) > 1 else "1"
        total += sv.parse_int(count, "a GPU count")
    return total


def _partitions(
    conf: SlurmConf, nodes: list[_Node], out: ClusterImport
) -> tuple[dict[str, str], list[str]]:
    hosts_all = [n.host for n in nodes]
    defaults: dict[str, str] = {}
    records: list[tuple[Record, dict[str, str]]] = []
    for record in conf.of_kind("partitionname"):
        if record.name.lower() == "default":
            defaults.update({k: v for k, v in record.params.items() if k != "partitionname"})
            _note_unused(record, record.params, PARTITION_KEYS, out)
            continue
        params = {**defaults, **record.params}
        _note_unused(record, params, PARTITION_KEYS, out)
        records.append((record, params))
    records.sort(key=lambda rp: rp[1].get("default", "no").lower() not in ("yes", "y", "1"))
    part_of: dict[str, str] = {}
    overlaps: dict[str, int] = {}
    for record, params in records:
        members = params.get("nodes", "")
        try:
            listed = hosts_all if members.upper() == "ALL" else sv.expand_hostlist(members)
        except ValueError as exc:
            raise SlurmError(f"{record.where}: PartitionName {record.name}: {exc}") from exc
        known = set(hosts_all)
        for host in listed:
            if host not in known:
                raise SlurmError(
                    f"{record.where}: PartitionName {record.name} lists node {host}, which no "
                    "NodeName line defines"
                )
            if host in part_of:
                overlaps[record.name] = overlaps.get(record.name, 0) + 1
            else:
                part_of[host] = record.name
        if params.get("qos"):
            out.partition_qos[record.name] = params["qos"]
        out.lln[record.name] = params.get("lln", "no").lower() in ("yes", "y", "1")
    for name, count in overlaps.items():
        out.notes.append(
            f"partition {name} shares {count} nodes with an earlier partition; htcsim's "
            "partitions are disjoint: each node stays in the first that lists it"
        )
    return part_of, [r.name for r, _ in records]


def _unique_names(types: dict[tuple[int, str], dict[str, Any]]) -> None:
    taken: dict[str, int] = {}
    for t in types.values():
        taken[t["name"]] = taken.get(t["name"], 0) + 1
    for (_, part), t in types.items():
        if taken[t["name"]] > 1:
            t["name"] = f"{t['name']}-{part}"
    seen: dict[str, int] = {}
    for t in types.values():
        seen[t["name"]] = seen.get(t["name"], 0) + 1
        if seen[t["name"]] > 1:
            t["name"] = f"{t['name']}-{seen[t['name']]}"


def _note_unused(
    record: Record, params: dict[str, str], used: tuple[str, ...], out: ClusterImport
) -> None:
    for key, value in params.items():
        trivial = value.strip().upper() in ("INFINITE", "UNLIMITED", "")
        if key not in used and key in record.params and not trivial:
            label = "NodeName" if record.kind == "nodename" else "PartitionName"
            out.untranslated.append(f"{record.where} {label}={record.name} {key}={value}")
