"""The live agent's settings and its local node inventory.

Why a file and defaults: ``htcsim agent serve`` must start with nothing
configured (127.0.0.1:8642, state in ./htcsim-agent/, the whole machine as
one node), and an operator must be able to pin every choice in one TOML file
(``--config agent.toml``) that is checked key by key, like the policy file.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import psutil

from htcsim.agent.defaults import DEFAULT_PORT as DEFAULT_PORT  # re-exported
from htcsim.agent.defaults import DEFAULT_STATE_DIR as DEFAULT_STATE_DIR

MEMORY_LIMITS = ("auto", "cgroup", "rlimit", "off")
RUN_JOBS_AS = ("owner", "agent")
CONTAINMENTS = ("auto", "cgroup", "subreaper")


TLS_KEYS = ("tls_ca_file", "tls_cert", "tls_key")
PATH_KEYS = ("state_dir", "db", "tokens", "policy", "shadow_policy", *TLS_KEYS)


class AgentConfigError(ValueError):
    """A bad agent setting; the message names the file and the key."""


@dataclass(frozen=True)
class NodeSpec:
    """One node of the local executor: a slice of this machine.

    ``cpus`` are the machine's CPU ids its cores map to (core k of the node
    runs on ``cpus[k % len(cpus)]``), so a test can declare more slots than
    the machine has CPUs and still pin every job.
    """

    name: str
    cores: int
    mem_mib: int
    gpus: int
    cpus: tuple[int, ...]
    address: str = ""  # the Dask worker's address (Dask backend)
    gpu_ids: tuple[int, ...] = ()
    """The device indices of its GPUs (what CUDA_VISIBLE_DEVICES names); empty
    with ``gpus`` > 0: 0..gpus-1 (a Dask worker, a pool's slot)."""

    @property
    def devices(self) -> tuple[int, ...]:
        """The node's GPU device indices, ``gpus`` of them."""
        return self.gpu_ids or tuple(range(self.gpus))


@dataclass(frozen=True)
class ClusterConfig:
    """A Dask cluster manager the agent creates and scales: one node type.

    ``manager`` is the import path of its class (``distributed.LocalCluster``,
    ``dask_jobqueue.SLURMCluster``, ``dask_kubernetes.operator.KubeCluster``),
    ``options`` its keyword arguments. ``nodes`` is the pool: the most workers
    the agent ever asks for (the policy's ``[autoscale]`` bounds lie within
    it; without autoscaling all of them are asked for at start). A worker is
    one node of ``cores``/``mem_mib``/``gpus`` (it must declare at least as
    much with its Dask resources). A worker asked for that has not joined
    within ``boot_timeout_s`` (its batch job held or queued, its pod
    unschedulable) is cancelled and asked for again: long enough for a batch
    job's usual queue wait, since a resubmitted job queues anew.
    """

    manager: str
    node_type: str = "worker"
    nodes: int = 1
    cores: int = 1
    mem_mib: int = 0
    gpus: int = 0
    price_per_hour: float = 0.0
    boot_timeout_s: float = 3600.0
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def check(self, source: str) -> None:
        def bad(key: str, why: str) -> None:
            raise AgentConfigError(f"{source}: cluster.{key} {why}")

        module, _, name = self.manager.rpartition(".")
        if not module or not name:
            bad(
                "manager",
                f"must be an import path like distributed.LocalCluster, got {self.manager!r}",
            )
        if not self.node_type or not self.node_type.replace("-", "").replace("_", "").isalnum():
            bad("node_type", f"must be a name of letters, digits, - and _, got {self.node_type!r}")
        if self.nodes < 1:
            bad("nodes", "must be >= 1")
        if self.cores < 1:
            bad("cores", "must be >= 1")
        for key in ("mem_mib", "gpus", "price_per_hour"):
            if getattr(self, key) < 0:
                bad(key, "must be >= 0")
        if not self.boot_timeout_s > 0:
            bad("boot_timeout_s", f"must be > 0 (seconds), got {self.boot_timeout_s!r}")


@dataclass(frozen=True)
class AgentConfig:
    """Every setting of ``htcsim agent serve``; see the README's agent section."""

    state_dir: Path = DEFAULT_STATE_DIR
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: Path | None = None  # default: state_dir/agent.db
    tokens: Path | None = None  # default: state_dir/tokens.toml
    policy: Path | None = None  # default: the built-in Policy()
    allow_root: bool = False  # root jobs (owner mode) or an agent as root (agent mode)
    run_jobs_as: str = ""  # owner | agent; empty: owner when the agent runs as root, else agent
    kill_grace_s: float = 10.0  # SIGTERM -> SIGKILL (walltime, cancel), as Slurm's KillWait
    sample_interval_s: float = 10.0  # node and job resource sampling
    memory_limit: str = "auto"  # auto | cgroup | rlimit | off
    containment: str = "auto"  # auto | cgroup | subreaper: how a job's processes die with it
    nodes: int = 1  # the machine sliced into this many nodes (testing)
    cores_per_node: int = 0  # 0: the machine's CPUs divided among the nodes
    mem_mib_per_node: int = 0  # 0: the machine's memory divided among the nodes
    gpus_per_node: int = 0
    gpu_devices: list[Any] = field(default_factory=list, hash=False)
    """The machine's GPU device ids, divided among the nodes, or one list per node."""
    gpu_device_files: dict[str, str] | list[str] = field(default_factory=dict, hash=False)
    """The device file of each GPU id (``{"0" = "/dev/nvidia0"}``, or a list aligned
    with ``gpu_devices``): a job is denied the others' (devices cgroup). Empty:
    ``/dev/nvidia<id>`` for each id whose file exists."""
    backend: str = "local"  # local | dask
    scheduler: str = ""  # the Dask scheduler's address (backend dask; tls://HOST:8786)
    tls_ca_file: Path | None = None  # the CA that signed the scheduler's and workers' certs
    tls_cert: Path | None = None  # the agent's certificate (Dask client), signed by that CA
    tls_key: Path | None = None  # its private key
    dask_insecure: bool = False  # accept a Dask scheduler without TLS (anyone may run code)
    heartbeat_timeout_s: float = 15.0  # a worker not heard from for this long is lost
    lease_s: float = 10.0  # a Dask worker's jobs die this long after the agent's last renewal
    shadow_policy: Path | None = None  # a candidate policy run on the live events, not acted on
    shadow_interval_s: float = 2.0  # how often the shadow twin catches up with the log
    max_body_bytes: int = 4 << 20  # a larger request body is answered 413, unread
    idempotency_ttl_s: float = 86400.0  # how long an Idempotency-Key is remembered
    max_submit_jobs_per_user: int = 0  # pending+held+running a user may have (0: no cap)
    cluster: ClusterConfig | None = None  # a Dask cluster manager to create and scale

    @property
    def db_path(self) -> Path:
        return self.db if self.db is not None else self.state_dir / "agent.db"

    @property
    def tokens_path(self) -> Path:
        return self.tokens if self.tokens is not None else self.state_dir / "tokens.toml"

    @property
    def run_dir(self) -> Path:
        """Per-job exit files of the executor (what a restart reads back)."""
        return self.state_dir / "run"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def with_overrides(self, **values: Any) -> AgentConfig:
        """The same settings with the given ones replaced (None: keep)."""
        given = {k: v for k, v in values.items() if v is not None}
        out = replace(self, **given)
        out.check()
        return out

    def check(self, source: str = "agent settings") -> None:
        def bad(key: str, why: str) -> None:
            raise AgentConfigError(f"{source}: {key} {why}")

        if not 0 < self.port < 65536:
            bad("port", f"must be 1..65535, got {self.port}")
        if self.kill_grace_s < 0:
            bad("kill_grace_s", "must be >= 0")
        if self.sample_interval_s <= 0:
            bad("sample_interval_s", "must be > 0")
        if self.memory_limit not in MEMORY_LIMITS:
            bad("memory_limit", f"must be one of {', '.join(MEMORY_LIMITS)}")
        if self.containment not in CONTAINMENTS:
            bad("containment", f"must be one of {', '.join(CONTAINMENTS)}")
        if self.nodes < 1:
            bad("nodes", "must be >= 1")
        if self.backend not in ("local", "dask"):
            bad("backend", "must be local or dask")
        if self.cluster is not None:
            self.cluster.check(source)
            if self.backend != "dask":
                bad("backend", "must be dask with a [cluster] manager")
            if self.scheduler:
                bad("scheduler", "must be empty with a [cluster] manager (it starts its own)")
        elif self.backend == "dask" and not self.scheduler:
            bad("scheduler", "is required with backend dask (tls://HOST:8786), or a [cluster]")
        _check_tls(self, bad)
        if self.heartbeat_timeout_s <= 0:
            bad("heartbeat_timeout_s", "must be > 0")
        if not 0.5 <= self.lease_s <= 3600:
            bad("lease_s", f"must be 0.5..3600 seconds, got {self.lease_s}")
        if self.shadow_interval_s <= 0:
            bad("shadow_interval_s", "must be > 0")
        if not 1024 <= self.max_body_bytes <= 1 << 30:
            bad("max_body_bytes", f"must be 1024..{1 << 30}, got {self.max_body_bytes}")
        if self.idempotency_ttl_s <= 0:
            bad("idempotency_ttl_s", "must be > 0")
        if self.max_submit_jobs_per_user < 0:
            bad("max_submit_jobs_per_user", "must be >= 0 (0: no cap)")
        for key in ("cores_per_node", "mem_mib_per_node", "gpus_per_node"):
            if getattr(self, key) < 0:
                bad(key, "must be >= 0")
        if self.run_jobs_as not in ("", *RUN_JOBS_AS):
            bad("run_jobs_as", f"must be owner or agent, got {self.run_jobs_as!r}")
        if self.run_jobs_as == "owner" and self.backend == "dask":
            bad("run_jobs_as", "owner needs the local backend (a Dask worker runs jobs as itself)")
        _check_gpu_devices(self, bad)
        _check_gpu_device_files(self, bad)

    def jobs_run_as(self, euid: int | None = None) -> str:
        """Whose account jobs run as: ``owner`` (each job its owner's), ``agent``
        (the agent's own, single-user mode) or ``worker`` (a Dask worker's own);
        unset, ``owner`` when the agent runs as root (``euid`` 0), else ``agent``."""
        if self.backend == "dask":
            return "worker"
        if self.run_jobs_as:
            return self.run_jobs_as
        euid = os.geteuid() if euid is None else euid
        return "owner" if euid == 0 else "agent"


def check_identity(config: AgentConfig, euid: int | None = None) -> str:
    """Whether an agent running as ``euid`` (default: this process's) may start
    with these settings: the sentence of the start line that says whose account
    jobs run as, or an ``AgentConfigError`` saying why not (one line)."""
    euid = os.geteuid() if euid is None else euid
    mode = config.jobs_run_as(euid)
    account = _account_name(euid)
    if mode == "owner":
        if euid != 0:
            raise AgentConfigError(
                f"run_jobs_as = owner needs the agent to run as root (it runs as {account}): "
                "run it as root, or set run_jobs_as = agent (single-user mode)"
            )
        root = "allowed" if config.allow_root else "refused"
        return f"each job runs as its owner's Unix account (jobs as root {root})"
    if euid == 0 and not config.allow_root:
        raise AgentConfigError(
            "refusing to run as root: jobs run as the agent's user. Run the agent as an "
            "unprivileged user, or set allow_root = true (--allow-root) to accept it"
        )
    if mode == "worker":
        return "Dask backend: every job runs as the account of the Dask worker that runs it"
    return (
        f"single-user mode: every job runs as {account}; "
        "each token gives its holder this account's authority"
    )


def _check_tls(config: AgentConfig, bad: Any) -> None:
    """The Dask backend speaks TLS unless told otherwise: a scheduler anyone
    can reach runs anyone's code on every worker, unseen by the agent. All
    three files or none; with them the scheduler's address is ``tls://``;
    without them the backend needs ``dask_insecure = true``."""
    given = [key for key in TLS_KEYS if getattr(config, key) is not None]
    if given and len(given) != len(TLS_KEYS):
        missing = ", ".join(k for k in TLS_KEYS if k not in given)
        bad(missing.split(", ")[0], f"is needed with {', '.join(given)} (missing: {missing})")
    if config.backend != "dask":
        return
    if given and config.dask_insecure:
        bad("dask_insecure", "must be false with tls_ca_file, tls_cert and tls_key")
    if given and config.scheduler and not config.scheduler.startswith("tls://"):
        bad("scheduler", f"must be a tls:// address with TLS set, got {config.scheduler!r}")
    if not given and not config.dask_insecure:
        bad(
            "tls_ca_file, tls_cert and tls_key",
            "are required with backend dask (`htcsim agent certs DIR` "
            "makes them), or dask_insecure = true to accept a scheduler without TLS",
        )


def _account_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _check_gpu_devices(config: AgentConfig, bad: Any) -> None:
    """``gpu_devices``: the machine's GPU ids (divided among the nodes), or one list per node."""
    devices = config.gpu_devices
    if not isinstance(devices, list):
        bad("gpu_devices", "must be a list of device indices (or one list per node)")
    if not devices:
        return
    per_node = all(isinstance(d, list) for d in devices)
    flat = [i for d in devices for i in d] if per_node else devices
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in flat):
        bad("gpu_devices", f"must hold device indices >= 0, got {devices!r}")
    if len(set(flat)) != len(flat):
        bad("gpu_devices", f"names a device twice: {devices!r}")
    if per_node:
        if len(devices) != config.nodes:
            bad("gpu_devices", f"has {len(devices)} lists, one per node wanted ({config.nodes})")
        if config.gpus_per_node and any(len(d) != config.gpus_per_node for d in devices):
            bad("gpu_devices", f"must list gpus_per_node ({config.gpus_per_node}) per node")
    else:
        want = (config.gpus_per_node or len(flat) // config.nodes) * config.nodes
        if want == 0 or len(flat) != want:
            bad(
                "gpu_devices",
                f"has {len(flat)} devices: not {config.nodes} node(s) of gpus_per_node "
                f"({config.gpus_per_node or 'unset'}) each",
            )


def _declared_gpu_ids(config: AgentConfig) -> list[int] | None:
    """The GPU ids the settings name (``gpu_devices``, else ``gpus_per_node``
    of each node), or None when they are left to discovery."""
    if config.gpu_devices:
        per_node = all(isinstance(d, list) for d in config.gpu_devices)
        return [i for d in config.gpu_devices for i in d] if per_node else config.gpu_devices
    if config.gpus_per_node:
        return list(range(config.gpus_per_node * config.nodes))
    return None


def _check_gpu_device_files(config: AgentConfig, bad: Any) -> None:
    """``gpu_device_files``: a table GPU id -> absolute path, or a list of paths
    aligned with ``gpu_devices``."""
    files = config.gpu_device_files
    key = "gpu_device_files"
    if isinstance(files, dict):
        ids = []
        for gpu in files:
            text = str(gpu)
            if isinstance(gpu, bool) or not text.isdigit():
                bad(key, f"keys must be GPU ids (0, 1, ...), got {gpu!r}")
            ids.append(int(text))
        if len(set(ids)) != len(ids):
            bad(key, f"names a GPU id twice: {sorted(ids)}")
        paths = list(files.values())
        known = _declared_gpu_ids(config)
        unknown = sorted(set(ids) - set(known)) if known is not None else []
        if unknown:
            bad(key, f"names GPU ids {unknown} that are not among the GPUs {sorted(known or [])}")
    elif isinstance(files, list):
        paths = files
        if files:
            flat = _declared_gpu_ids(config) if config.gpu_devices else None
            if flat is None:
                bad(key, "as a list needs gpu_devices (it is aligned with it); or use a table")
            elif len(files) != len(flat):
                bad(key, f"has {len(files)} files for the {len(flat)} devices of gpu_devices")
    else:
        bad(key, 'must be a table of GPU id -> device file ({ "0" = "/dev/nvidia0" }) or a list')
    for path in paths:
        if not isinstance(path, str) or not os.path.isabs(path):
            bad(key, f"must name absolute paths, got {path!r}")
    if len(set(paths)) != len(paths):
        bad(key, f"names a file twice: {paths!r}")


def gpu_device_files(config: AgentConfig, ids: Any) -> dict[int, str]:
    """The device file of each of this machine's GPU ``ids``: as declared in
    ``gpu_device_files``, else ``/dev/nvidia<id>`` for each id whose file exists
    (in the usual case the minor number of ``/dev/nvidiaN`` is the GPU's index N:
    where it is not, as with some MIG or container set-ups, declare the files)."""
    files = config.gpu_device_files
    if isinstance(files, dict) and files:
        return {int(str(k)): str(v) for k, v in files.items()}
    if isinstance(files, list) and files:
        flat = _declared_gpu_ids(config) or []
        return {int(i): str(p) for i, p in zip(flat, files, strict=True)}
    return {i: f"/dev/nvidia{i}" for i in ids if os.path.exists(f"/dev/nvidia{i}")}


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read an agent TOML file (all keys at the top level or under ``[agent]``)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise AgentConfigError(f"{path}: no such agent config file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError(f"{path}: not valid TOML ({exc})") from exc
    cluster = data.get("cluster")
    data = data.get("agent", data)
    cluster = data.get("cluster", cluster)
    known = {f.name: f for f in fields(AgentConfig)}
    values: dict[str, Any] = {}
    if cluster is not None:
        values["cluster"] = _cluster_config(cluster, path)
        values.setdefault("backend", "dask")
    for key, value in data.items():
        if key == "cluster":
            continue
        if key not in known:
            raise AgentConfigError(
                f"{path}: unknown key {key!r} (known: {', '.join(sorted(known))})"
            )
        default = getattr(AgentConfig(), key)
        if key in PATH_KEYS:
            if not isinstance(value, str):
                raise AgentConfigError(f"{path}: {key} must be a path string")
            value = Path(value)
        elif key == "gpu_devices":
            if not isinstance(value, list):
                raise AgentConfigError(f"{path}: gpu_devices must be a list of device indices")
        elif key == "gpu_device_files":
            if not isinstance(value, dict | list):
                raise AgentConfigError(
                    f"{path}: gpu_device_files must be a table of GPU id -> device file "
                    "or a list aligned with gpu_devices"
                )
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise AgentConfigError(f"{path}: {key} must be true or false")
        elif isinstance(default, int | float) and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise AgentConfigError(f"{path}: {key} must be a number, got {value!r}")
        elif isinstance(default, int) and not isinstance(value, int):
            raise AgentConfigError(f"{path}: {key} must be an integer, got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise AgentConfigError(f"{path}: {key} must be a string")
        values[key] = value
    config = AgentConfig(**values)
    config.check(str(path))
    return config


def _cluster_config(data: Any, path: Path) -> ClusterConfig:
    """The ``[cluster]`` table, key by key."""
    if not isinstance(data, dict):
        raise AgentConfigError(f"{path}: cluster must be a table ([cluster])")
    known = {f.name for f in fields(ClusterConfig)}
    for key in data:
        if key not in known:
            raise AgentConfigError(
                f"{path}: unknown key cluster.{key} (known: {', '.join(sorted(known))})"
            )
    if "manager" not in data:
        raise AgentConfigError(
            f"{path}: cluster.manager is required (e.g. distributed.LocalCluster)"
        )
    for key, value in data.items():
        kinds: dict[str, type | tuple[type, ...]] = {
            "manager": str,
            "node_type": str,
            "options": dict,
            "price_per_hour": (int, float),
            "boot_timeout_s": (int, float),
        }
        want = kinds.get(key, int)
        if isinstance(value, bool) or not isinstance(value, want):
            kind = getattr(want, "__name__", "number")
            raise AgentConfigError(f"{path}: cluster.{key} must be a {kind}, got {value!r}")
    return ClusterConfig(**data)


def machine_cpus() -> list[int]:
    """The CPU ids this process may run on."""
    return sorted(os.sched_getaffinity(0))


def machine_memory_mib() -> int:
    """Physical memory of the machine, MiB."""
    return int(psutil.virtual_memory().total // (1 << 20))


def nvml_gpus() -> list[int]:
    """The indices of this machine's NVIDIA GPUs through NVML (``pynvml``, from
    the optional ``nvidia-ml-py``); empty when it is not installed or finds none."""
    try:
        import pynvml  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, no device: pynvml.NVMLError and kin
        return []
    try:
        return list(range(int(pynvml.nvmlDeviceGetCount())))
    except Exception:
        return []
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def node_gpu_ids(config: AgentConfig, discover: Any = nvml_gpus) -> list[tuple[int, ...]]:
    """Each node's GPU device indices: ``gpu_devices`` as declared (one list per
    node, or the machine's divided among the nodes), else ``gpus_per_node`` of
    them (node k: k*g .. k*g+g-1), else the GPUs NVML finds divided among the nodes."""
    n = config.nodes
    declared = config.gpu_devices
    if declared and all(isinstance(d, list) for d in declared):
        return [tuple(int(i) for i in d) for d in declared]
    if not declared and config.gpus_per_node:
        g = config.gpus_per_node
        return [tuple(range(k * g, (k + 1) * g)) for k in range(n)]
    flat = [int(i) for i in declared] if declared else list(discover())
    g = len(flat) // n
    return [tuple(flat[k * g : (k + 1) * g]) for k in range(n)]


def local_nodes(config: AgentConfig) -> list[NodeSpec]:
    """The machine as ``config.nodes`` nodes: CPUs, memory and GPUs divided
    evenly unless the config declares per-node figures (GPUs: their device ids,
    see ``node_gpu_ids``)."""
    cpus = machine_cpus()
    n = config.nodes
    cores = config.cores_per_node or max(len(cpus) // n, 1)
    mem = config.mem_mib_per_node or machine_memory_mib() // n
    gpu_ids = node_gpu_ids(config)
    out = []
    for k in range(n):
        node_cpus = tuple(cpus[(k * cores + c) % len(cpus)] for c in range(min(cores, len(cpus))))
        ids = gpu_ids[k]
        out.append(NodeSpec(f"node{k}", cores, mem, len(ids), node_cpus, gpu_ids=ids))
    return out
