"""What a run was given: every input that changes its result, as plain JSON values.

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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from htcsim.schedule import SimResult

_CHUNK = 1 << 20


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
    the node failures and the checkpoint intervals (see :func:`checkpoint_value`)."""
    failures = result.failures
    return {
        "workload_sha256": array_digest(result.workload.jobs),
        "policy_sha256": json_digest(result.policy.to_dict()),
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
