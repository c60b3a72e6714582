"""Backfill modes x real logs: the table and figure of experiments/backfill-modes.

    HTCSIM_TRACE_DIR=../shared/traces python experiments/backfill-modes/run.py

Writes ``results.csv`` (one row per log and mode), ``results.md`` (the same
as a Markdown table, as quoted in the README) and ``bsld.png`` here.
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
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


def find_logs(trace_dir: Path, stems: list[str]) -> list[Path]:
    logs = sorted(trace_dir.glob("*.swf.gz")) + sorted(trace_dir.glob("*.swf"))
    if stems:
        logs = [p for p in logs if p.name.split(".swf")[0] in stems]
    return logs


def main() -> int:
    config = tomllib.loads((HERE / "config.toml").read_text())
    trace_dir = Path(os.environ.get("HTCSIM_TRACE_DIR", ""))
    if not trace_dir.is_dir():
        print("set HTCSIM_TRACE_DIR to the folder of the SWF logs", file=sys.stderr)
        return 2
    logs = find_logs(trace_dir, config["logs"])
    rows = []
    with Progress() as progress:
        task = progress.add_task("replays", total=len(logs) * len(config["backfill"]))
        for log in logs:
            workload = read_swf(log)
            for mode in config["backfill"]:
                began = time.perf_counter()
                result = simulate(workload, Policy(order=config["order"], backfill=mode))
                summary = summarize(result)
                rows.append(
                    {
                        "log": workload.name,
                        "jobs": len(workload),
                        "procs": workload.machine.total_cores,
                        "backfill": mode,
                        "mean_wait_h": summary["mean_wait_s"] / 3600,
                        "p95_wait_h": summary["p95_wait_s"] / 3600,
                        "mean_bsld": summary["mean_bsld"],
                        "utilization": summary["utilization"],
                        "replay_s": time.perf_counter() - began,
                        "jobs_per_s": len(workload) / result.replay_seconds,
                    }
                )
                progress.advance(task)
    table = pl.DataFrame(rows)
    table.write_csv(HERE / "results.csv")
    (HERE / "results.md").write_text(markdown(table))
    plot(table, HERE / "bsld.png")
    print(markdown(table))
    return 0


def markdown(table: pl.DataFrame) -> str:
    lines = [
        "| log | jobs | procs | backfill | mean wait (h) | p95 wait (h) | mean bsld | util. |"
        " replay (s) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in table.iter_rows(named=True):
        lines.append(
            f"| {r['log']} | {r['jobs']:,} | {r['procs']} | {r['backfill']} | "
            f"{r['mean_wait_h']:.2f} | {r['p95_wait_h']:.2f} | {r['mean_bsld']:.1f} | "
            f"{r['utilization']:.3f} | {r['replay_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(table: pl.DataFrame, path: Path) -> None:
    logs = table["log"].unique(maintain_order=True).to_list()
    modes = table["backfill"].unique(maintain_order=True).to_list()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(modes)
    for k, mode in enumerate(modes):
        sub = table.filter(pl.col("backfill") == mode)
        values = [sub.filter(pl.col("log") == log)["mean_bsld"][0] for log in logs]
        ax.bar([i + k * width for i in range(len(logs))], values, width, label=mode)
    ax.set_yscale("log")
    ax.set_xticks([i + width * (len(modes) - 1) / 2 for i in range(len(logs))])
    ax.set_xticklabels(logs, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("mean bounded slowdown (τ = 10 s, log scale)")
    ax.set_title("Backfill modes on the development logs (FCFS order)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
