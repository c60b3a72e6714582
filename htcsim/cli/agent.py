"""``htcsim agent ...`` and ``htcsim replay-log``: the agent's own command line
(registered by ``htcsim.cli.registry``; the client side is ``htcsim.agent.client.commands``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from htcsim.agent.client.status import status_command
from htcsim.agent.defaults import DEFAULT_STATE_DIR, user_client_file
from htcsim.cli import _paths
from htcsim.cli._console import console, escape, fail

agent_app = typer.Typer(
    help="Run the live agent (REST API, scheduler, executor).", no_args_is_help=True
)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
agent_app.add_typer(token_app, name="token")
agent_app.command("status")(status_command)


@agent_app.command("serve")
def serve_command(
    config_file: Annotated[
        Path | None, typer.Option("--config", help="Agent settings (TOML), see the README.")
    ] = None,
    policy_file: Annotated[
        Path | None, typer.Option("--policy", help="Policy file (TOML), as for simulate.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8642).")] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Store, tokens, run files (default ./htcsim-agent).")
    ] = None,
    nodes: Annotated[int | None, typer.Option(help="Slice the machine into N nodes.")] = None,
    cores_per_node: Annotated[
        int | None, typer.Option(help="Cores each node declares (default: CPUs / nodes).")
    ] = None,
    mem_mib_per_node: Annotated[
        int | None, typer.Option(help="Memory each node declares, MiB.")
    ] = None,
    kill_grace_s: Annotated[
        float | None, typer.Option(help="Seconds between SIGTERM and SIGKILL.")
    ] = None,
    allow_root: Annotated[
        bool,
        typer.Option(
            "--allow-root",
            help="Accept jobs as root: an owner mapped to root, or the agent itself as root "
            "in single-user mode.",
        ),
    ] = False,
    run_jobs_as: Annotated[
        str | None,
        typer.Option(
            "--run-jobs-as",
            help="owner (each job as its owner's Unix account; the agent runs as root) or "
            "agent (every job as the agent's account: single-user mode). Default: owner "
            "as root, else agent.",
        ),
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="local (this machine) or dask (each worker a node).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="The Dask scheduler (tls://HOST:8786), backend dask.")
    ] = None,
    heartbeat_timeout_s: Annotated[
        float | None, typer.Option(help="A Dask worker silent this long is lost (15 s).")
    ] = None,
    lease_s: Annotated[
        float | None,
        typer.Option(
            help="A Dask worker's jobs are killed this long after the agent's last lease "
            "renewal reached it (10 s); a lost worker's jobs are requeued only then."
        ),
    ] = None,
    shadow_policy_file: Annotated[
        Path | None,
        typer.Option(
            "--shadow-policy",
            help="A candidate policy (TOML) run on the live events without acting: "
            "GET /shadow and `htcsim shadow` compare its decisions.",
        ),
    ] = None,
) -> None:
    """Serve the REST API and schedule jobs on this machine with the policy."""
    from htcsim.agent.api.auth import TokenFileError
    from htcsim.agent.config import (
        AgentConfig,
        AgentConfigError,
        check_identity,
        load_agent_config,
    )
    from htcsim.agent.server import AgentStartError, serve
    from htcsim.agent.store.schema import StoreError
    from htcsim.policy import Policy, PolicyError, load_policy

    try:
        config = load_agent_config(config_file) if config_file else AgentConfig()
        config = config.with_overrides(
            host=host,
            port=port,
            state_dir=state_dir,
            nodes=nodes,
            cores_per_node=cores_per_node,
            mem_mib_per_node=mem_mib_per_node,
            kill_grace_s=kill_grace_s,
            allow_root=allow_root or None,
            run_jobs_as=run_jobs_as,
            policy=policy_file,
            backend=backend,
            scheduler=scheduler,
            heartbeat_timeout_s=heartbeat_timeout_s,
            lease_s=lease_s,
            shadow_policy=shadow_policy_file,
        )
        policy = load_policy(config.policy) if config.policy else Policy()
        shadow = load_policy(config.shadow_policy) if config.shadow_policy else None
        identity = check_identity(config)
    except (AgentConfigError, PolicyError) as exc:
        raise fail(str(exc)) from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    console.print(
        f"htcsim agent on [bold]{escape(config.url)}[/] (state in {escape(config.state_dir)}, "
        f"policy {escape(policy.label)}"
        + (f", shadow policy {escape(shadow.label)}" if shadow is not None else "")
        + "); Ctrl-C stops it"
        + (
            f" and the {config.cluster.manager} workers with their jobs (requeued at restart)"
            if config.cluster is not None
            else ", jobs keep running"
        )
        + f"; {escape(identity)}"
    )
    try:
        serve(config, policy, user_client_file=user_client_file())
    except (AgentStartError, StoreError, TokenFileError) as exc:
        raise fail(str(exc)) from exc


@agent_app.command("certs")
def certs_command(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the files to (created).")],
    days: Annotated[int, typer.Option(help="How long the certificates are valid.")] = 365,
) -> None:
    """Make a CA and the certificates of the Dask scheduler, its workers and the
    agent (TLS for the Dask backend); keys are written 0600."""
    from htcsim.agent.certs import CertsError, make_certs

    try:
        files = make_certs(out_dir, days)
    except CertsError as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"CA {escape(files.ca)} (its key {escape(files.ca_key)}: keep it offline)",
        highlight=False,
        soft_wrap=True,
    )
    for role, (cert, key) in files.certs.items():
        console.print(f"{role}: {escape(cert)} {escape(key)}", highlight=False, soft_wrap=True)
    agent_cert, agent_key = files.certs["agent"]
    console.print(
        "agent settings:\n"
        f'  tls_ca_file = "{escape(files.ca.resolve())}"\n'
        f'  tls_cert = "{escape(agent_cert.resolve())}"\n'
        f'  tls_key = "{escape(agent_key.resolve())}"',
        highlight=False,
        soft_wrap=True,
    )


StateDirOption = Annotated[Path, typer.Option(help="The agent's state directory.")]
TokensOption = Annotated[
    Path | None, typer.Option(help="Token file (default: STATE_DIR/tokens.toml).")
]


@token_app.command("add")
def token_add(
    user: Annotated[str, typer.Argument(help="The user the token acts as.")],
    admin: Annotated[bool, typer.Option("--admin", help="Node and policy operations too.")] = False,
    group: Annotated[str, typer.Option(help="The user's group (fairshare account).")] = "",
    account: Annotated[
        str, typer.Option(help="The Unix account the user's jobs run as (default: USER).")
    ] = "",
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    tokens: TokensOption = None,
) -> None:
    """Create a token for USER, printed once (only its hash is kept); the running
    agent picks it up."""
    from htcsim.agent.api.auth import TokenFileError, add_token

    path = tokens or state_dir / "tokens.toml"
    try:
        token = add_token(path, user, "admin" if admin else "user", group, account=account)
    except (TokenFileError, OSError) as exc:
        raise fail(str(exc)) from exc
    console.print(token, highlight=False)


@token_app.command("list")
def token_list(state_dir: StateDirOption = DEFAULT_STATE_DIR, tokens: TokensOption = None) -> None:
    """The tokens: id, user, role, group, account, created (never the token)."""
    import time

    from htcsim.agent.api.auth import TokenFileError, read_entries

    path = tokens or state_dir / "tokens.toml"
    try:
        entries = read_entries(path)
    except (TokenFileError, OSError) as exc:
        raise fail(str(exc)) from exc
    rows = [("ID", "USER", "ROLE", "GROUP", "ACCOUNT", "CREATED")]
    for e in entries:
        created = e.get("created", 0)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) if created else "-"
        account = e.get("account") or e["user"]
        rows.append((e["id"], e["user"], e["role"], e.get("group") or "-", account, when))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    for r in rows:
        line = "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        console.print(line, highlight=False, markup=False)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id (token list).")],
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    tokens: TokensOption = None,
) -> None:
    """Remove a token; the running agent refuses it from the next request on."""
    from htcsim.agent.api.auth import TokenFileError, revoke_token

    path = tokens or state_dir / "tokens.toml"
    try:
        entry = revoke_token(path, token_id)
    except (TokenFileError, OSError) as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"revoked token {escape(entry['id'])} of {escape(entry['user'])}", highlight=False
    )


def replay_log_command(
    db: Annotated[Path, typer.Option(help="The agent's store.")] = DEFAULT_STATE_DIR / "agent.db",
) -> None:
    """Replay an agent's decision log through the kernel and check that every
    pass starts the same jobs on the same nodes."""
    from htcsim.agent.engine.replay_log import replay_decision_log
    from htcsim.agent.store.jobs import AgentStore
    from htcsim.agent.store.schema import StoreError

    _paths.input_file(db, "--db")
    try:
        store = AgentStore(db, readonly=True)
        result = replay_decision_log(store.decisions())
    except (StoreError, ValueError) as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"{result.passes:,} passes, {result.starts:,} starts, {result.restarts} agent start(s) "
        f"replayed; {len(result.differences)} difference(s)"
    )
    for line in result.differences[:20]:
        console.print(f"  [red]{escape(line)}[/]")
    if result.differences:
        raise typer.Exit(code=1)
