"""The commands ``htcsim --help`` lists, with their first paragraph of help, as static text.

Why static: listing every command through typer means importing every command
module and converting every parameter of every command, which is most of what
``htcsim --help`` would take. The index holds what that listing shows (name,
panel, the first paragraph of the command's help) in the order typer shows it;
``htcsim.cli.registry`` turns it into placeholder commands for the top-level
help only. ``tests/test_layout.py`` renders the help both ways and fails when
they differ, printing the index as the commands say it now, to paste here.
"""

from __future__ import annotations

from htcsim.agent.client._output import PANEL

INDEX: tuple[tuple[str, str | None, str], ...] = (
    (
        "simulate",
        None,
        "Replay a workload under a policy and print a summary (one column per backfill mode).",
    ),
    (
        "plan",
        None,
        "The smallest fleet (nodes of the log's machine) whose replay meets a p95 wait target.",
    ),
    (
        "tune",
        None,
        "Search the policy space on the first part of a trace; compare on the rest.",
    ),
    (
        "replay-log",
        None,
        "Replay an agent's decision log through the kernel and check that every\n"
        "pass starts the same jobs on the same nodes.",
    ),
    (
        "report",
        None,
        "Compare simulation runs in one offline HTML file; or, with --since, report a\n"
        "live agent's usage per user and group, waits and utilization from its store.",
    ),
    (
        "traces",
        None,
        "List the SWF logs found, or fetch one from the archive.",
    ),
    (
        "agent",
        None,
        "Run the live agent (REST API, scheduler, executor).",
    ),
    (
        "submit",
        PANEL,
        "Submit a job (or a job array): htcsim submit --cores 2 --mem 4G -- python train.py",
    ),
    (
        "queue",
        PANEL,
        "Jobs waiting and running (as squeue): state, reason, priority, node, elapsed.",
    ),
    (
        "show",
        PANEL,
        "Everything about one job (as scontrol show job): why it waits, when it may start,\n"
        "where it ran, how it ended, its logs and dependencies.",
    ),
    (
        "history",
        PANEL,
        "Every state change of a job: when, to which state, and why.",
    ),
    (
        "cancel",
        PANEL,
        "Cancel jobs (one request for all): pending ones end now, running ones get SIGTERM\n"
        "then SIGKILL. By ids, an array, or a filter: `cancel --user alice --state pending`.",
    ),
    (
        "hold",
        PANEL,
        "Keep pending jobs from starting until released (ids, an array or a filter).",
    ),
    (
        "release",
        PANEL,
        "Let held jobs be scheduled again (ids, an array or a filter).",
    ),
    (
        "logs",
        PANEL,
        "The output of a job, read through the agent (works from another machine).",
    ),
    (
        "shadow",
        PANEL,
        "Shadow mode: where the candidate policy (agent serve --shadow-policy) would have\n"
        "started jobs otherwise than the active one, and its simulated waits.",
    ),
    (
        "nodes",
        PANEL,
        "Node states and free resources; drain or resume a node (admin).",
    ),
    (
        "workflow",
        PANEL,
        "Submit a pipeline file and follow it.",
    ),
    (
        "import",
        None,
        "A Slurm site's history (sacct) as a workload, its slurm.conf as a policy.",
    ),
    (
        "export",
        None,
        "A policy as Slurm's configuration: slurm.conf, a sacctmgr script, MAPPING.md.",
    ),
    (
        "policy",
        None,
        "Write or check a policy file (TOML).",
    ),
    (
        "generate",
        None,
        "Write a synthetic workload as SWF.",
    ),
)
"""(name, help panel or None for "Commands", first paragraph of its help), in help order."""
