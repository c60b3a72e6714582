"""``htcsim import``: bring a site's own history in (Slurm's sacct) as an SWF log, and the
policy it runs today (its slurm.conf and accounting) as a policy file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from htcsim import __version__
from htcsim.cli import _paths
from htcsim.cli._console import console, escape, fail, warn

import_app = typer.Typer(
    help="A Slurm site's history (sacct) as a workload, its slurm.conf as a policy.",
    no_args_is_help=True,
)


SACCT_FLAGS = {
    "nodes": "--nodes",
    "cores_per_node": "--cores-per-node",
    "gpus_per_node": "--gpus-per-node",
    "mem_per_node": "--mem-per-node",
}
"""The reader's parameters and the options that set them, for its error messages."""


@import_app.command("sacct")
def import_sacct(
    file: Annotated[Path, typer.Argument(help="Output of sacct --parsable2 (plain or .gz).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="SWF file to write (default: FILE's stem + .swf)."),
    ] = None,
    nodes: Annotated[
        int | None, typer.Option(help="Nodes in the cluster (default: inferred from the history).")
    ] = None,
    cores_per_node: Annotated[
        int | None, typer.Option(help="Cores per node (default: the most one job held on a node).")
    ] = None,
    gpus_per_node: Annotated[
        int | None, typer.Option(help="GPUs per node (default: the most one job held on a node).")
    ] = None,
    mem_per_node: Annotated[
        str | None,
        typer.Option(
            help="Memory per node (256G, 192000M): what a job asking ReqMem 0 (a whole "
            "node) gets, and a limit no job's task may pass.",
            show_default="the most one job asked for on one node",
        ),
    ] = None,
    timezone: Annotated[
        str, typer.Option(help="Time zone sacct printed its times in (IANA name).")
    ] = "UTC",
    names: Annotated[
        Path | None,
        typer.Option(
            help="Also write the id -> name tables (users, groups, partitions, QOS, job ids) "
            "as JSON."
        ),
    ] = None,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty",
            help="Write the SWF even when no job is left (a warning, exit 0) instead of stopping.",
        ),
    ] = False,
) -> None:
    """Slurm accounting history (sacct --parsable2) as an SWF workload to replay."""
    from htcsim.units import parse_mem_mib
    from htcsim.workload.sacct import SacctError, read_sacct, write_name_tables
    from htcsim.workload.sacct_jobs import workload_name as sacct_name
    from htcsim.workload.swf_writer import write_workload_swf

    _paths.input_file(file, "")
    target = out if out is not None else file.with_name(f"{sacct_name(file)}.swf")
    if target.resolve() == file.resolve():
        raise fail(f"{target} is the input file; name another with --out")
    _paths.output_file(target, "--out")
    if names is not None:
        _paths.output_file(names, "--names")
    try:
        mem_mib = parse_mem_mib(mem_per_node) if mem_per_node is not None else None
    except ValueError as exc:
        raise fail(f"--mem-per-node: {exc}") from exc
    try:
        imported = read_sacct(
            file,
            nodes=nodes,
            cores_per_node=cores_per_node,
            gpus_per_node=gpus_per_node,
            timezone=timezone,
            mem_per_node=mem_mib,
        )
    except SacctError as exc:  # a bad file: its message names the file and line
        raise fail(str(exc)) from exc
    except ValueError as exc:  # a bad option
        raise fail(str(exc), SACCT_FLAGS) from exc
    workload = imported.workload
    if not len(workload):
        dropped = ", ".join(f"{k} {v:,}" for k, v in sorted(workload.dropped.items()))
        why = f"{file}: no job to write" + (f" (dropped: {dropped})" if dropped else "")
        if not allow_empty:
            raise fail(f"{why}; --allow-empty writes the SWF anyway")
        warn(f"{why}; writing it anyway, as --allow-empty asks")
    try:
        write_workload_swf(
            target, workload, comment=f"imported from {file.name} (htcsim {__version__})"
        )
        if names is not None:
            write_name_tables(names, imported)
    except OSError as exc:
        raise fail(f"cannot write {exc.filename or target}: {exc.strerror or exc}") from exc
    machine = workload.machine
    memory = f", {machine.mem_mib_per_node:,} MiB" if machine.mem_mib_per_node else ""
    console.print(
        f"[green]wrote[/] {len(workload):,} jobs to {escape(target)}: {machine.n_nodes} nodes x "
        f"{machine.cores_per_node} cores, {machine.gpus_per_node} GPUs{memory} per node"
    )
    for label, counts in (("dropped", workload.dropped), ("changed", workload.changed)):
        for reason, count in sorted(counts.items()):
            console.print(f"  {label} {count:,}: {escape(reason)}")


@import_app.command("slurm-conf")
def import_slurm_conf(
    file: Annotated[Path, typer.Argument(help="The site's slurm.conf (its includes are read).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Policy file (TOML) to write.")],
    sacctmgr_dump: Annotated[
        list[Path] | None,
        typer.Option(
            "--sacctmgr-dump",
            help="Accounting: the output of sacctmgr dump (shares, limits), of sacctmgr "
            "--parsable2 show qos (QOS), or a script of sacctmgr commands (as htcsim export "
            "slurm writes); repeat for several.",
        ),
    ] = None,
    cluster_out: Annotated[
        Path | None,
        typer.Option("--cluster-out", help="Also write nodes and partitions as a cluster file."),
    ] = None,
    names: Annotated[
        Path | None,
        typer.Option(
            help="Name tables of htcsim import sacct --names: name users, groups and QOS "
            "by the workload's numbers."
        ),
    ] = None,
) -> None:
    """The policy a Slurm site runs today (slurm.conf and its accounting), to tune from.

    Settings the site does not give take Slurm's defaults. Every setting the policy
    cannot hold is listed at the top of the policy file."""
    from htcsim.slurm.errors import SlurmError
    from htcsim.slurm.names import load_names
    from htcsim.slurm.to_policy import import_slurm, policy_text

    _paths.input_file(file, "")
    for path in sacctmgr_dump or []:
        _paths.input_file(path, "--sacctmgr-dump")
    if names is not None:
        _paths.input_file(names, "--names")
    _paths.output_file(out, "--out")
    if cluster_out is not None:
        _paths.output_file(cluster_out, "--cluster-out")
    try:
        tables = load_names(names) if names is not None else None
        imported = import_slurm(file, list(sacctmgr_dump or []), tables)
    except SlurmError as exc:
        raise fail(str(exc)) from exc
    if cluster_out is not None and imported.cluster.cluster is None:
        why = imported.cluster.why_none
        raise fail(f"{file}: {why}, so no cluster file to write (--cluster-out)")
    sources = [str(file), *(str(p) for p in sacctmgr_dump or [])]
    header = [f"policy imported by htcsim {__version__} from {', '.join(sources)}"]
    try:
        out.write_text(policy_text(imported, header), encoding="utf-8")
        if cluster_out is not None:
            cluster_header = f"# cluster imported by htcsim {__version__} from {file}\n\n"
            cluster_out.write_text(cluster_header + imported.cluster.toml, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from exc
    policy = imported.policy
    console.print(
        f"[green]wrote[/] {escape(out)} ({escape(policy.label)}, {len(policy.qos)} QOS, "
        f"{len(policy.user_shares)} user and {len(policy.group_shares)} account shares)"
    )
    cluster = imported.cluster.cluster
    if cluster_out is not None and cluster is not None:
        console.print(
            f"[green]wrote[/] {escape(cluster_out)} ({len(cluster.node_types)} node types, "
            f"{cluster.n_nodes:,} nodes, {len(cluster.partitions) or 1} partitions)"
        )
    for note in imported.notes:
        console.print(f"  note: {escape(note)}", soft_wrap=True)
    if imported.untranslated:
        shown = [u.split(" ", 1)[1] if " " in u else u for u in imported.untranslated]
        keys = [s.split("=", 1)[0] for s in shown]
        head = ", ".join(dict.fromkeys(keys[:8]))
        more = ", ..." if len(set(keys)) > 8 else ""
        console.print(
            f"  not translated: {len(shown)} settings ({escape(head)}{more}); "
            f"listed at the top of {escape(out)}",
            soft_wrap=True,
        )
