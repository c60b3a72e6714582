"""What a run was given: every input that changes its result, as plain JSON values.

Written into ``summary.json`` by the results writer, read back by the HTML
report (a run's failures, checkpoints and autoscaler in words; the inputs
that differ between runs).

Two runs of one workload under one policy label can differ in the node
failures they replayed, the checkpoint interval, the autoscaler, the cluster
or the jobs the loader kept; ``summary.json`` records all of them so that a
reader (and ``htcsim report``) can tell what differs. Files are recorded by
path and SHA-256 of their bytes; what was replayed (the job table, the
policy's values, the failure rows) by a SHA-256 of its content, so that two
runs with equal digests replayed the same thing whatever the paths.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from htcsim.metrics import format_duration

if TYPE_CHECKING:
    from htcsim.schedule import SimResult

_CHUNK = 1 << 20
UNKNOWN = "–"
"""Shown for what a summary did not record (written before runs recorded their inputs)."""


def file_digest(path: Path | str) -> dict[str, str]:
    """``{"path": absolute path, "sha256": digest of the file's bytes}``."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return {"path": str(path.resolve()), "sha256": digest.hexdigest()}


def array_digest(values: np.ndarray) -> str:
    """SHA-256 of an array's dtype and bytes (C order)."""
    values = np.ascontiguousarray(values)
    digest = hashlib.sha256(str(values.dtype.descr).encode())
    digest.update(values.tobytes())
    return digest.hexdigest()


def json_digest(value: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def result_inputs(result: SimResult) -> dict[str, Any]:
    """The inputs a result itself knows: the jobs replayed, the policy's values,
    the cluster (node types, partitions, reservations), the node failures and
    the checkpoint intervals (see :func:`checkpoint_value`)."""
    failures = result.failures
    return {
        "workload_sha256": array_digest(result.workload.jobs),
        "policy_sha256": json_digest(result.policy.to_dict()),
        "cluster_sha256": None if result.cluster is None else json_digest(asdict(result.cluster)),
        "failures": None
        if failures is None or len(failures) == 0
        else {
            "events": len(failures),
            "nodes": len(np.unique(failures["node"])),
            "sha256": array_digest(failures),
        },
        "checkpoint_interval_s": checkpoint_value(result.checkpoint_s),
    }


def checkpoint_value(interval_s: np.ndarray | None) -> int | dict[str, Any]:
    """0 without checkpoints; the interval when every job has the same one;
    else the distinct intervals' count and a digest of the per-job array."""
    if interval_s is None or len(interval_s) == 0 or not np.any(interval_s):
        return 0
    distinct = np.unique(interval_s)
    if len(distinct) == 1:
        return int(distinct[0])
    return {"per_job": True, "distinct": len(distinct), "sha256": array_digest(interval_s)}


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (lists stay values)."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            out.update(flatten(item, f"{name}."))
        else:
            out[name] = item
    return out


# --------------------------------------------------------------------------- reading back


def _inputs(summary: dict[str, Any]) -> dict[str, Any]:
    inputs = summary.get("inputs")
    return inputs if isinstance(inputs, dict) else {}


def describe_failures(summary: dict[str, Any]) -> str:
    """The node failures a run replayed: none, a trace file, or a seeded model."""
    inputs = _inputs(summary)
    if "failures" not in inputs:
        return UNKNOWN  # (written before runs recorded their inputs)
    failures = inputs.get("failures")
    if not isinstance(failures, dict):
        return "none"
    events = f"{failures.get('events', '?')} failures"
    source = inputs.get("failure_source")
    if isinstance(source, dict) and source.get("model") == "mtbf":
        return (
            f"{events}: MTBF {source.get('mtbf_h')} h, MTTR {source.get('mttr_h')} h, "
            f"seed {source.get('seed')}"
        )
    if isinstance(source, dict) and isinstance(source.get("trace"), dict):
        return f"{events} from {Path(str(source['trace'].get('path', '?'))).name}"
    return events


def describe_checkpoints(summary: dict[str, Any]) -> str:
    """The checkpoint interval a run replayed: none, one for every job, or per job."""
    inputs = _inputs(summary)
    if "checkpoint_interval_s" not in inputs:
        return UNKNOWN
    value = inputs["checkpoint_interval_s"]
    if isinstance(value, dict):
        return f"per job ({value.get('distinct', '?')} intervals)"
    return "none" if not value else f"every {format_duration(float(value))}"


def describe_autoscale(summary: dict[str, Any]) -> str:
    """The autoscaler's settings of a run's policy: off, or its pool and timings."""
    policy = summary.get("policy")
    if not isinstance(policy, dict) or "autoscale" not in policy:
        return UNKNOWN
    if not policy["autoscale"]:
        return "off"
    return (
        f"{policy.get('autoscale_min_nodes', '?')}..{policy.get('autoscale_max_nodes', '?')} "
        f"nodes, boot {policy.get('autoscale_boot_delay_s', '?')} s, "
        f"idle {policy.get('autoscale_idle_s', '?')} s"
    )


PROVENANCE_SECTIONS = ("inputs", "policy", "cluster", "machine", "workload", "htcsim_version")
"""The parts of a summary that say what a run was given (compared by the report)."""


def differing_inputs(summaries: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Every recorded input whose value is not the same in all runs, by dotted
    key (``inputs.failure_source.seed``, ``policy.backfill``), one value per run
    (None where a run did not record it)."""
    flat = [flatten({k: s[k] for k in PROVENANCE_SECTIONS if k in s}) for s in summaries]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    per_key = {key: [f.get(key) for f in flat] for key in keys}
    return {key: values for key, values in per_key.items() if len(set(map(_canonical, values))) > 1}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
