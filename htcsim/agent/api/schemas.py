"""What the REST API accepts and answers (pydantic models, also the OpenAPI schema).

Why the checks live here: every malformed request must get a 422 naming the
field before anything reaches the scheduling loop; the loop then checks only
what needs the cluster (a request no node can hold, an unknown QoS, a
dependency on an unknown job).
"""

from __future__ import annotations

import re
import signal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MAX_ARRAY = 100_000
"""Largest job array one request may create (Slurm's MaxArraySize is 1001 by default)."""
MAX_ARRAY_INDEX = (1 << 31) - 1
"""Largest array index (Slurm's indices are 32-bit too); larger ones could not be stored."""
MAX_ID = (1 << 63) - 1
"""Largest job id SQLite can store: a bigger number in a path, query or body is refused
with a 422 here instead of overflowing in the store (a 500, or worse, in the scheduling loop)."""
MAX_CORES = 1_000_000
MAX_MEM_MIB = 1 << 40
MAX_GPUS = 1024
MAX_WALLTIME_S = 365 * 86400
JOB_ID = Annotated[int, Field(ge=1, le=MAX_ID)]
NAME = Annotated[str, Field(max_length=200, pattern=r"^[A-Za-z0-9_.+@:,=/ -]*$")]
_ARRAY_PART = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


def parse_array(text: str) -> list[int]:
    """Slurm's ``--array`` syntax: "1-1000", "0-99:2", "1,3,5-7"; ValueError naming the part."""
    out: list[int] = []
    for part in text.split(","):
        match = _ARRAY_PART.match(part.strip())
        if not match:
            raise ValueError(f"array: {part!r} is not N, N-M or N-M:STEP")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        step = int(match[3]) if match[3] is not None else 1
        if last < first or step < 1:
            raise ValueError(f"array: {part!r} is empty (end before start, or step < 1)")
        if last > MAX_ARRAY_INDEX:
            raise ValueError(f"array: {part!r} has an index above {MAX_ARRAY_INDEX}")
        if (last - first) // step + 1 + len(out) > MAX_ARRAY:
            raise ValueError(f"array: more than {MAX_ARRAY} jobs")
        out.extend(range(first, last + 1, step))
    if len(set(out)) != len(out):
        raise ValueError("array: an index is listed twice")
    return out


EXAMPLE_JOB: dict[str, Any] = {
    "command": ["sh", "-c", "echo job {id} index {index}"],
    "cwd": "/tmp",
    "walltime_s": 60,
}
"""The example the OpenAPI schema shows (and schemathesis sends: a request that is accepted)."""


class JobRequest(BaseModel):
    """One job (or one job array) to submit."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_JOB]})

    command: list[Annotated[str, Field(max_length=65536)]] = Field(
        min_length=1, max_length=4096, description="argv; {id}, {index}, {array_id} expanded"
    )
    cwd: str = Field(description="absolute working directory on the node", max_length=4096)
    cores: int = Field(1, ge=1, le=MAX_CORES)
    mem_mib: int = Field(0, ge=0, le=MAX_MEM_MIB, description="memory per job, MiB (0: none asked)")
    gpus: int = Field(0, ge=0, le=MAX_GPUS)
    walltime_s: int = Field(3600, ge=1, le=MAX_WALLTIME_S)
    name: NAME = ""
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)], str] = (
        Field(default_factory=dict)
    )
    qos: NAME = ""
    hold: bool = False
    array: str | None = Field(None, description='Slurm syntax: "1-1000", "0-99:2", "1,3,5"')
    after_ok: list[JOB_ID] = Field(default_factory=list, max_length=1000)
    after_any: list[JOB_ID] = Field(default_factory=list, max_length=1000)
    after_not_ok: list[JOB_ID] = Field(default_factory=list, max_length=1000)
    stdout: str = Field("", max_length=4096, description="default: <cwd>/htcsim-{id}.out")
    stderr: str = Field("", max_length=4096, description="default: <cwd>/htcsim-{id}.err")
    signal: str = Field("", description='e.g. "USR1": sent signal_before_s before the walltime')
    signal_before_s: int = Field(60, ge=0, le=MAX_WALLTIME_S)

    @field_validator("cwd")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return _no_nul(value)

    @field_validator("stdout", "stderr")
    @classmethod
    def _path(cls, value: str) -> str:
        return _no_nul(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        # a NUL cannot reach execve: refused here rather than failing the job at launch
        for name, text in value.items():
            if "\0" in text:
                raise ValueError(f"the value of {name} contains a NUL byte")
        return value

    @field_validator("command")
    @classmethod
    def _program(cls, value: list[str]) -> list[str]:
        if not value[0]:
            raise ValueError("the program (first argument) is empty")
        if any("\0" in a for a in value):
            raise ValueError("an argument contains a NUL byte")
        return value

    @field_validator("array")
    @classmethod
    def _array(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_array(value)
            except ValueError as exc:  # the handler prefixes the field already
                raise ValueError(str(exc).removeprefix("array: ")) from None
        return value

    @field_validator("signal")
    @classmethod
    def _signal(cls, value: str) -> str:
        if not value:
            return value
        name = value.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name not in signal.Signals.__members__ or name in ("SIGKILL", "SIGSTOP"):
            raise ValueError(f"{value!r} is not a signal a job can catch")
        return name

    @field_validator("after_ok", "after_any", "after_not_ok")
    @classmethod
    def _dependencies(cls, value: list[int], info: ValidationInfo) -> list[int]:
        # one kind per parent (the store keys an edge by (child, parent)); fields are
        # validated in order, so each list is checked against the ones before it
        if len(set(value)) != len(value):
            raise ValueError("names a job twice")
        for other in ("after_ok", "after_any", "after_not_ok"):
            if other == info.field_name:
                break
            twice = sorted(set(value) & set(info.data.get(other, ())))
            if twice:
                raise ValueError(f"job {twice[0]} is also in {other} (one kind per parent)")
        return value


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("contains a NUL byte")
    return value


class BatchRequest(BaseModel):
    """Many jobs in one request, accepted all or none (the fast way to submit)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"jobs": [EXAMPLE_JOB, {**EXAMPLE_JOB, "cores": 2}]}]},
    )

    jobs: list[JobRequest] = Field(min_length=1, max_length=10_000)


class WorkflowRequest(BaseModel):
    """A workflow file's content (the parsed TOML) and the directory it came from."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "workflow": {
                        "name": "example",
                        "defaults": {"walltime": "1m"},
                        "job": [
                            {"name": "fetch", "command": "echo fetch"},
                            {"name": "train", "command": "echo train", "after_ok": ["fetch"]},
                        ],
                    },
                    "base_dir": "/tmp",
                }
            ]
        },
    )

    workflow: dict[str, Any]
    base_dir: str = Field(description="relative cwds resolve against it", max_length=4096)

    @field_validator("base_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


class PolicyRequest(BaseModel):
    """A policy file's text (as ``htcsim policy init`` writes it) and why it changes."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"toml": '[queue]\norder = "sjf"\n', "note": "short jobs first"}]
        },
    )

    toml: str = Field(max_length=1_000_000, description="the policy file's text")
    note: str = Field("", max_length=1000)


class BulkRequest(BaseModel):
    """Which jobs a bulk cancel, hold or release acts on: the ``ids`` named, or
    (without ids) every job the filter selects; every criterion given must hold.

    ``array_id``: all tasks of that array; ``user``: a user selects only their own
    jobs (another user's name selects none), an admin anyone's (without it, every
    user's); ``state``: without it, the states the action applies to (cancel:
    pending, held, running; hold: pending; release: held); ``name``: a glob
    ("train*"). At least one of them must be given.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"ids": [17, 18]}, {"array_id": 12}, {"state": ["held"], "name": "x*"}]
        },
    )

    ids: list[JOB_ID] = Field(default_factory=list, max_length=100_000)
    array_id: JOB_ID | None = None
    user: str | None = Field(None, min_length=1, max_length=200)
    state: list[str] = Field(default_factory=list, max_length=8)
    name: str | None = Field(None, max_length=200)

    @field_validator("user", "name")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None:
            _no_nul(value)
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ValueError("holds text that is not valid Unicode") from None
        return value


class BulkError(BaseModel):
    id: int
    status: int
    detail: str


class BulkResult(BaseModel):
    """The jobs acted on, and why each named job that was not refused."""

    ids: list[int]
    errors: list[BulkError] = Field(default_factory=list)


class JobIds(BaseModel):
    ids: list[int]
    array_id: int | None = None


class Problem(BaseModel):
    """Every error: one sentence, and the field at fault when there is one."""

    detail: str
    field: str | None = None


class WaitStats(BaseModel):
    """Waits from submit to start, seconds (None: no job compared yet)."""

    mean: float | None
    median: float | None
    p95: float | None


class ShadowSummary(BaseModel):
    """Shadow mode at a glance: how the candidate policy compares with the active one.

    Times are the kernel's (Unix seconds). A job is compared once both
    policies have started it (the shadow's decision at or before its
    horizon); it differs when the start time or node is not the same."""

    policy: str = Field(description="the candidate policy's label")
    policy_toml: str = Field(description="the candidate policy file, as the shadow runs it")
    active_policy: str = Field(description="the active policy's label, from the decision log")
    jobs_compared: int
    differences: int
    live_wait_s: WaitStats = Field(description="waits of the compared jobs, live")
    shadow_wait_s: WaitStats = Field(description="their simulated waits under the candidate")
    shadow_only: int = Field(description="jobs the shadow started that live has not yet")
    live_only: int = Field(description="jobs live started that the shadow has not by its horizon")
    horizon: int | None = Field(description="the shadow's decisions up to this time are final")
    lag_s: float | None = Field(description="now minus the horizon")
    log_rows: int = Field(description="decision-log rows read since the agent started")
    rewinds: int = Field(description="times the shadow was rebuilt (a row came late)")
    error: str | None = Field(description="why the shadow stopped, if it did")


class ShadowDifference(BaseModel):
    """One job both policies started, at different times or on different nodes."""

    job_id: int
    submit_time: int
    live_start: int
    live_node: str
    shadow_start: int
    shadow_node: str
    live_wait_s: int
    shadow_wait_s: int


class ShadowReport(BaseModel):
    summary: ShadowSummary
    differences: list[ShadowDifference] = Field(description="the first ones, by job id")
