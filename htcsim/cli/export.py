"""``htcsim export``: a tuned policy in another scheduler's own configuration (Slurm)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from htcsim.cli import _paths
from htcsim.cli._console import console, escape, fail, warn

export_app = typer.Typer(
    help="A policy as Slurm's configuration: slurm.conf, a sacctmgr script, MAPPING.md.",
    no_args_is_help=True,
)


@export_app.command("slurm")
def export_slurm_command(
    policy: Annotated[Path, typer.Argument(help="Policy file (TOML).")],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Directory to write the files in (created if missing)."),
    ],
    cluster: Annotated[
        Path | None,
        typer.Option(help="Cluster file (TOML): also write NodeName and PartitionName lines."),
    ] = None,
    names: Annotated[
        Path | None,
        typer.Option(
            help="Name tables of htcsim import sacct --names: write the Slurm names of the "
            "workload's user, group and QOS numbers."
        ),
    ] = None,
) -> None:
    """A slurm.conf fragment, a sacctmgr script and MAPPING.md, which says for every
    policy key what it became in Slurm and whether that is exact, approximate or impossible.

    Include slurm.conf at the end of your slurm.conf; run sacctmgr.sh as a Slurm
    administrator (it can be run again after the policy changes)."""
    from htcsim.cluster import ClusterError, load_cluster
    from htcsim.policy import PolicyError, load_policy
    from htcsim.slurm.errors import SlurmError
    from htcsim.slurm.export import export_slurm
    from htcsim.slurm.names import load_names

    _paths.input_file(policy, "")
    for path, flag in ((cluster, "--cluster"), (names, "--names")):
        if path is not None:
            _paths.input_file(path, flag)
    _paths.output_dir(out, "--out")
    try:
        loaded = load_policy(policy)
        machine = load_cluster(cluster) if cluster is not None else None
        tables = load_names(names) if names is not None else None
        exported = export_slurm(
            loaded,
            out,
            cluster=machine,
            names=tables,
            policy_name=policy.name,
            cluster_name=cluster.name if cluster is not None else None,
        )
    except (PolicyError, ClusterError, SlurmError) as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"--out {out}: cannot write in it ({exc.strerror or exc})") from exc
    rows = exported.plan.rows
    counts = {s: sum(r.status == s for r in rows) for s in ("exact", "approximate", "impossible")}
    files = ", ".join(escape(p.name) for p in exported.files)
    console.print(
        f"[green]wrote[/] {files} in {escape(out)}: {len(rows)} policy keys, "
        f"{counts['exact']} exact, {counts['approximate']} approximate, "
        f"{counts['impossible']} impossible"
    )
    if exported.warning:
        warn(exported.warning)
