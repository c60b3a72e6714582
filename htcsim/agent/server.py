"""Putting one agent together: settings, lock, tokens, engine, API, HTTP server.

Why a lock file: two agents on one state directory would both think they
own the same jobs and processes; the second one is refused with the first
one's pid. Why the first start writes a token: a new user types ``htcsim
agent serve`` then ``htcsim submit`` and it works, with the admin token kept
in ``<state dir>/client.toml`` (mode 0600) where the client finds it, and,
when the user has no client settings yet, in the user's
``$XDG_CONFIG_HOME/htcsim/client.toml`` so that it works from any directory.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w
import uvicorn

from htcsim.agent.api.app import Tokens, create_app
from htcsim.agent.api.auth import add_token, load_tokens
from htcsim.agent.config import (
    AgentConfig,
    AgentConfigError,
    ClusterConfig,
    check_identity,
    local_nodes,
)
from htcsim.agent.engine.loop import Engine
from htcsim.agent.executors.dask.cluster_pool import ClusterPool, create_manager
from htcsim.agent.executors.dask.executor import DaskExecutor
from htcsim.agent.executors.dask.inventory_watcher import InventoryWatcher, wait_for_workers
from htcsim.agent.executors.dask.scheduler_link import SchedulerLink
from htcsim.agent.executors.dask.security import client_security, cluster_security
from htcsim.agent.shadow.runner import ShadowRunner
from htcsim.policy import Policy, PolicyError, load_policy

if TYPE_CHECKING:
    from distributed.security import Security

log = logging.getLogger("htcsim.agent")
CLIENT_FILE = "client.toml"
REJOIN_MIN_S = 10.0
"""After a lost Dask scheduler is reached again, how long at least its workers
have to register before a node whose worker did not come back is dropped
(``heartbeat_timeout_s`` if longer): restarted workers retry every second or so."""


class AgentStartError(RuntimeError):
    """The agent cannot start; the message says why and what to change."""


class Agent:
    """One running agent: engine thread plus the ASGI app (served by ``serve``)."""

    def __init__(
        self,
        config: AgentConfig,
        policy: Policy | None = None,
        *,
        user_client_file: Path | None = None,
    ) -> None:
        """``user_client_file``: where a first start also leaves the admin's client
        settings when that file does not exist yet (``htcsim agent serve`` passes the
        user's config file; None writes only ``<state dir>/client.toml``)."""
        try:  # whose account jobs run as: refused here with one line
            self.identity = check_identity(config)
        except AgentConfigError as exc:
            raise AgentStartError(str(exc)) from exc
        self.config = config
        shadow_policy = _shadow_policy(config)  # a bad candidate stops the start here
        _private_state(config)
        self._lock = _lock(config.state_dir)
        self.admin_token, self.client_files = _first_token(config, user_client_file)
        _check_modes(config)
        self.policy = policy or Policy()
        self._watcher: InventoryWatcher | None = None
        self._link: SchedulerLink | None = None  # to a scheduler the agent did not start
        self._pool: ClusterPool | None = None
        if config.cluster is not None:
            self._start_pool(config, config.cluster)
        elif config.backend == "dask":
            from distributed import Client

            security = _security(client_security, config)
            try:
                client = Client(
                    config.scheduler, timeout="20s", set_as_default=False, security=security
                )
            except (OSError, ValueError) as exc:
                hint = (
                    " (TLS: the scheduler's certificate must be signed by tls_ca_file, and "
                    "tls_cert by the CA the scheduler trusts)"
                    if security is not None
                    else ""
                )
                raise AgentStartError(
                    f"cannot reach the Dask scheduler {config.scheduler}: {exc}{hint}"
                ) from exc
            nodes = wait_for_workers(client, config.heartbeat_timeout_s, 60.0)
            self.engine = Engine(
                config,
                self.policy,
                nodes,
                executor=lambda on_exit: DaskExecutor(
                    client, on_exit, config.kill_grace_s, config.lease_s, site_of(config)
                ),
            )
            self._client: Client | None = client
            metrics = self.engine.metrics
            self._link = SchedulerLink(
                config.scheduler,
                security,
                client,
                config.heartbeat_timeout_s,
                on_reconnect=self.engine.executor.use_client,  # type: ignore[attr-defined]
                on_change=lambda up: metrics.dask_scheduler_changed(config.scheduler, up),
            )
            metrics.dask_scheduler_changed(config.scheduler, True)
            self.engine.executor.link = self._link  # type: ignore[attr-defined]
        else:
            self.engine = Engine(config, self.policy, local_nodes(config))
            self._client = None
        self.shadow = (
            ShadowRunner(
                config.db_path,
                shadow_policy,
                interval_s=config.shadow_interval_s,
                metrics=self.engine.metrics,
            )
            if shadow_policy is not None
            else None
        )
        self.app = create_app(self.engine, Tokens(config.tokens_path), shadow=self.shadow)

    def _start_pool(self, config: AgentConfig, cluster: ClusterConfig) -> None:
        """Create the cluster manager and the engine on its pool of slots."""
        from distributed import Client

        if self.policy.autoscale:
            try:
                _, high = self.policy.autoscale_bounds(cluster.node_type, cluster.nodes)
            except PolicyError as exc:
                raise AgentStartError(str(exc)) from exc
            if high > cluster.nodes:
                raise AgentStartError(
                    f"autoscale: node type {cluster.node_type!r} has max {high} nodes, more "
                    f"than the pool's {cluster.nodes} ([cluster] nodes)"
                )
        security = _security(cluster_security, config)
        try:
            manager = create_manager(cluster, security)
        except AgentConfigError as exc:
            raise AgentStartError(str(exc)) from exc
        except Exception as exc:
            raise AgentStartError(
                f"cluster manager {cluster.manager} did not start: {exc}"
            ) from exc
        client = Client(
            manager.scheduler_address, timeout="20s", set_as_default=False, security=security
        )
        self._pool = ClusterPool(cluster, manager, client, rejoin_s=config.heartbeat_timeout_s)
        self.engine = Engine(
            config,
            self.policy,
            self._pool.slots,
            executor=lambda on_exit: DaskExecutor(
                client, on_exit, config.kill_grace_s, config.lease_s, site_of(config)
            ),
            pool=self._pool,
        )
        replaced = self.engine.metrics.pool_replaced
        self._pool.on_replace = lambda reason: replaced.labels(reason).inc()
        self._client = client

    def start(self) -> None:
        self.engine.start()
        log.info("jobs: %s", self.identity)
        log.info("memory limits: %s", self.engine.executor.memory_limit_note)
        containment = getattr(self.engine.executor, "containment_note", "")
        if containment:
            log.info("job containment: %s", containment)
        log.info("GPU device isolation: %s", self.engine.gpu_isolation_note())
        for path in self.client_files:
            log.info("first start: admin token for %s written to %s", getpass.getuser(), path)
        if self.shadow is not None:
            self.shadow.start()  # after the engine's start: the log begins with it
            label = self.shadow.candidate.label
            log.info("shadow policy %s: its decisions are compared, not acted on", label)
        if self._client is not None:
            self._watcher = InventoryWatcher(
                self._client,
                [] if self._pool is not None else self.engine.node_specs,
                self.engine.set_nodes,
                self.config.heartbeat_timeout_s,
                empty_ok=self._pool is not None,
                fence=getattr(self.engine.executor, "declare_lost", None),
                salvage=getattr(self.engine.executor, "salvage_exits", None),
                link=self._link,
                rejoin_s=max(REJOIN_MIN_S, self.config.heartbeat_timeout_s),
            )

    def stop(self, *, kill_jobs: bool = False) -> None:
        """Stop the agent; its jobs keep running unless ``kill_jobs``."""
        if self.shadow is not None:
            self.shadow.stop()
        if self._watcher is not None:
            self._watcher.stop()
        if self._link is not None:  # no reconnection while the agent stops
            self._link.close()
        # the workers of a cluster manager stop with the agent: so do their jobs
        # (requeued at the next start), never left running unseen
        self.engine.stop(kill_jobs=kill_jobs or self._pool is not None)
        if self._pool is not None:
            self._pool.close()
        os.close(self._lock)


def _security(make: Callable[[AgentConfig], Security | None], config: AgentConfig) -> Any:
    """The Dask TLS credentials of the settings (None: ``dask_insecure``, said
    in the log); an unreadable file stops the start with one line."""
    try:
        security = make(config)
    except AgentConfigError as exc:
        raise AgentStartError(str(exc)) from exc
    if security is None:
        log.warning(
            "dask_insecure: the Dask scheduler speaks without TLS; anyone who reaches it "
            "can run code on the workers"
        )
    return security


def site_of(config: AgentConfig) -> str:
    """This agent's store, as the Dask workers' exit journals name it (the
    start of every run token): the state directory and its database file, so
    that a store made again at the same path is another site, and an exit an
    earlier store's run left on a node is never taken for one of this one's."""
    db = config.db_path
    inode = db.stat().st_ino if db.exists() else 0
    key = f"{config.state_dir.resolve()}:{inode}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _shadow_policy(config: AgentConfig) -> Policy | None:
    """The candidate policy of shadow mode; its errors name the file and the key."""
    if config.shadow_policy is None:
        return None
    try:
        return load_policy(config.shadow_policy)
    except PolicyError as exc:
        raise AgentStartError(f"shadow policy: {exc}") from exc


def _private_state(config: AgentConfig) -> None:
    """Create the state directory (0700) and an empty store file (0600) if missing;
    then refuse to start if the directory, the store or the token file is open to
    group or others (SQLite gives its -wal and -shm the store file's mode)."""
    state_dir = config.state_dir
    first = not config.db_path.exists()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if first and os.stat(state_dir).st_mode & 0o077:
        # nothing of the agent's in it yet (a fresh volume, a directory just made for it)
        try:
            os.chmod(state_dir, 0o700)
        except OSError as exc:
            raise AgentStartError(
                f"{state_dir}: cannot make it mode 0700: {exc.strerror}"
            ) from None
    _check_modes(config)
    config.db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(config.db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _check_modes(config: AgentConfig) -> None:
    db = config.db_path
    paths = [
        config.state_dir,
        db,
        db.with_name(db.name + "-wal"),
        db.with_name(db.name + "-shm"),
        config.tokens_path,
    ]
    for path in paths:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue
        mode = info.st_mode
        if path == config.tokens_path and _hashes_for_own_group(info):
            continue
        if mode & 0o077:
            want = "700" if stat.S_ISDIR(mode) else "600"
            raise AgentStartError(
                f"{path} has mode {stat.S_IMODE(mode):04o}: group/other may read the agent's "
                f"state (jobs, tokens); run: chmod {want} {path}"
            )


def _hashes_for_own_group(info: os.stat_result) -> bool:
    """A token file that only the agent's own group may read, and nobody else may write.

    It holds hashes only, so reading it gives no token; this is how a mounted
    Kubernetes Secret arrives (``defaultMode: 0440``, group ``fsGroup`` = the
    agent's). Writable by group or other, or readable by other, it is refused.
    """
    mode = stat.S_IMODE(info.st_mode)
    return not mode & 0o027 and info.st_gid == os.getegid()


def _lock(state_dir: Path) -> int:
    path = state_dir / "agent.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise AgentStartError(
            f"another agent (pid {other or '?'}) uses {state_dir}; stop it or use --state-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _first_token(
    config: AgentConfig, user_file: Path | None = None
) -> tuple[str | None, list[Path]]:
    """Without a token file, make one with an admin token for the current user
    and write the client settings next to it, and to ``user_file`` when there is
    none there yet (never overwritten: it may name another agent); returns that
    token and the client files written."""
    if config.tokens_path.exists():
        load_tokens(config.tokens_path)  # a broken file stops the start, naming the entry
        return None, []
    token = add_token(config.tokens_path, getpass.getuser(), "admin")
    text = tomli_w.dumps({"url": config.url, "token": token})
    client = config.state_dir / CLIENT_FILE
    fd = os.open(client, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    written = [client]
    if user_file is not None and _write_user_client_file(user_file, text):
        written.append(user_file)
    return token, written


def _write_user_client_file(path: Path, text: str) -> bool:
    """Create ``path`` (mode 0600; a folder it creates, 0700) unless it exists;
    whether it was written. A failure is logged, not fatal: the state dir's
    client.toml has the same settings."""
    try:
        for folder in reversed([path.parent, *path.parent.parents]):
            if not folder.exists():
                folder.mkdir(mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        log.warning("could not write the client settings to %s: %s", path, exc)
        return False
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return True


def serve(
    config: AgentConfig,
    policy: Policy | None = None,
    ready: threading.Event | None = None,
    *,
    user_client_file: Path | None = None,
) -> None:
    """Run the agent until SIGINT/SIGTERM; jobs keep running after it stops
    (``user_client_file``: as for ``Agent``)."""
    agent = Agent(config, policy, user_client_file=user_client_file)
    agent.start()
    server = uvicorn.Server(
        uvicorn.Config(  # "auto": httptools parses requests and uvloop runs the loop
            agent.app,
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    if ready is not None:
        threading.Thread(target=_signal_ready, args=(server, ready), daemon=True).start()
    try:
        server.run()
    finally:
        agent.stop()


def _signal_ready(server: uvicorn.Server, ready: threading.Event) -> None:
    while not server.started:
        threading.Event().wait(0.01)
    ready.set()
