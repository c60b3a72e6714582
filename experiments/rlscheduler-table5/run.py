"""RLScheduler's Table V heuristic rows, reproduced: the table and figure of this folder.

    HTCSIM_TRACE_DIR=../shared/traces python experiments/rlscheduler-table5/run.py

Replays the windows of every log of ``config.toml`` under the five heuristics,
with and without backfilling, in the kernel's RLScheduler compatibility
profile (PROTOCOL.md), and writes ``results.csv`` (every cell, ours next to
the published one), ``results.md`` and ``bsld.png`` here.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from htcsim.sim.rlscheduler import read_rlscheduler_swf, table_value

HERE = Path(__file__).resolve().parent


def main() -> int:
    config = tomllib.loads((HERE / "config.toml").read_text())
    trace_dir = Path(os.environ.get("HTCSIM_TRACE_DIR", ""))
    rows = []
    for log in config["log"]:
        path = trace_dir / log["file"]
        if not path.exists():
            print(f"set HTCSIM_TRACE_DIR to the folder holding {log['file']}", file=sys.stderr)
            return 2
        jobs, nodes, per_node = read_rlscheduler_swf(path, config["job_limit"] + 2000)
        for backfill in (False, True):
            published = config["published"][f"{log['name']}.{'yes' if backfill else 'no'}"]
            for heuristic, paper in zip(config["heuristics"], published, strict=True):
                value = table_value(jobs, heuristic, nodes, per_node, backfill, config["seed"])
                rows.append(
                    {
                        "log": log["name"],
                        "backfilling": backfill,
                        "heuristic": heuristic.upper(),
                        "htcsim": round(value, 2),
                        "published": paper,
                    }
                )
    table = pl.DataFrame(rows)
    table.write_csv(HERE / "results.csv")
    (HERE / "results.md").write_text(markdown(table))
    plot(table, HERE / "bsld.png")
    print(markdown(table))
    return 0


def markdown(table: pl.DataFrame) -> str:
    heuristics = list(dict.fromkeys(table["heuristic"]))
    same = int((table["htcsim"] == table["published"]).sum())
    lines = [
        f"Mean bounded slowdown, htcsim / published ({same} of {len(table)} cells equal)",
        "",
        "| log | backfilling | " + " | ".join(heuristics) + " |",
        "|---|---|" + "---:|" * len(heuristics),
    ]
    for (log, backfill), part in table.group_by(["log", "backfilling"], maintain_order=True):
        cells = [f"{r['htcsim']:,.2f} / {r['published']:,.2f}" for r in part.iter_rows(named=True)]
        lines.append(f"| {log} | {'yes' if backfill else 'no'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(table: pl.DataFrame, path: Path) -> None:
    heuristics = list(dict.fromkeys(table["heuristic"]))
    groups = list(dict.fromkeys(zip(table["log"], table["backfilling"], strict=True)))
    fig, ax = plt.subplots(figsize=(9.0, 4.5))
    width = 0.8 / len(heuristics)
    x = np.arange(len(groups))
    for k, name in enumerate(heuristics):
        part = table.filter(pl.col("heuristic") == name)
        ax.bar(x + k * width, part["htcsim"], width, label=name)
        ax.scatter(x + k * width, part["published"], marker="_", color="k", s=60, zorder=3)
    ax.set_xticks(
        x + width * (len(heuristics) - 1) / 2,
        [f"{log}\n{'backfilling' if bf else 'no backfilling'}" for log, bf in groups],
        fontsize=8,
    )
    ax.set_yscale("log")
    ax.set_ylabel("mean bounded slowdown (log); black ticks: published")
    ax.set_title("RLScheduler Table V heuristic rows, reproduced")
    ax.legend(fontsize=8, ncols=5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
