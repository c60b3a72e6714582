"""Autoscaling cost against wait on a real log: the table and figure of this folder.

    HTCSIM_TRACE_DIR=../shared/traces python experiments/autoscaling-cost/run.py

Replays the log of ``config.toml`` on its machine as a fixed fleet, then as
an autoscaled pool (0..max nodes) for every idle threshold x scale-up wait,
and writes ``results.csv``, ``results.md`` and ``cost_vs_wait.png`` here.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl
from rich.progress import Progress

from htcsim.metrics import summarize
from htcsim.policy import Policy
from htcsim.sim import simulate
from htcsim.workload.swf import read_swf

HERE = Path(__file__).resolve().parent


def main() -> int:
    config = tomllib.loads((HERE / "config.toml").read_text())
    trace_dir = Path(os.environ.get("HTCSIM_TRACE_DIR", ""))
    log = trace_dir / f"{config['log']}.swf.gz"
    if not log.exists():
        print(f"set HTCSIM_TRACE_DIR to the folder holding {log.name}", file=sys.stderr)
        return 2
    workload = read_swf(log)
    fixed = Policy(backfill=config["backfill"])
    scaled = replace(
        fixed,
        autoscale=True,
        autoscale_min_nodes=config["min_nodes"],
        autoscale_max_nodes=config["max_nodes"],
        autoscale_boot_delay_s=config["boot_delay_s"],
        autoscale_cooldown_s=config["cooldown_s"],
        autoscale_step=config["step"],
    )
    runs = [("fixed", None, None, fixed)]
    runs += [
        (
            f"idle {idle} s, wait {wait} s",
            idle,
            wait,
            replace(scaled, autoscale_idle_s=idle, autoscale_wait_s=wait),
        )
        for idle in config["idle_s"]
        for wait in config["scale_up_wait_s"]
    ]
    rows = []
    with Progress() as progress:
        task = progress.add_task("replays", total=len(runs))
        for label, idle, wait, policy in runs:
            summary = summarize(simulate(workload, policy, series_every_s=None))
            rows.append(
                {
                    "pool": label,
                    "idle_s": idle,
                    "scale_up_wait_s": wait,
                    "node_hours": summary["node_hours"],
                    "mean_nodes": summary["mean_nodes_provisioned"],
                    "p95_wait_h": summary["p95_wait_s"] / 3600,
                    "mean_wait_h": summary["mean_wait_s"] / 3600,
                    "mean_bsld": summary["mean_bsld"],
                    "provisioned_utilization": summary["provisioned_utilization"],
                    "boots": summary["node_boots"],
                }
            )
            progress.advance(task)
    table = pl.DataFrame(rows)
    table.write_csv(HERE / "results.csv")
    (HERE / "results.md").write_text(markdown(table, workload.name))
    plot(table, HERE / "cost_vs_wait.png", workload.name)
    print(markdown(table, workload.name))
    return 0


def markdown(table: pl.DataFrame, name: str) -> str:
    lines = [
        f"{name}, {len(table) - 1} autoscaling settings and the fixed fleet",
        "",
        "| pool | node-hours | mean nodes | p95 wait (h) | mean wait (h) | mean bsld "
        "| provisioned util. | boots |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table.iter_rows(named=True):
        lines.append(
            f"| {r['pool']} | {r['node_hours']:,.0f} | {r['mean_nodes']:.1f} "
            f"| {r['p95_wait_h']:.2f} | {r['mean_wait_h']:.2f} | {r['mean_bsld']:.1f} "
            f"| {r['provisioned_utilization']:.1%} | {r['boots']:,} |"
        )
    return "\n".join(lines) + "\n"


def plot(table: pl.DataFrame, path: Path, name: str) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    scaled = table.filter(pl.col("idle_s").is_not_null())
    for wait in scaled["scale_up_wait_s"].unique().sort():
        part = scaled.filter(pl.col("scale_up_wait_s") == wait).sort("idle_s")
        ax.plot(part["node_hours"], part["p95_wait_h"], "o-", label=f"scale-up wait {wait} s")
        for r in part.iter_rows(named=True):
            ax.annotate(
                f"idle {r['idle_s']}",
                (r["node_hours"], r["p95_wait_h"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    fixed = table.filter(pl.col("idle_s").is_null())
    ax.scatter(fixed["node_hours"], fixed["p95_wait_h"], marker="s", color="k", label="fixed fleet")
    ax.set_xlabel("node-hours provisioned")
    ax.set_ylabel("p95 wait (h)")
    ax.set_title(f"{name}: autoscaling cost against wait")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
