"""Priority weights tuned on SDSC-SP2, judged on its later part and on CTC-SP2.

    HTCSIM_TRACE_DIR=../shared/traces python experiments/tuned-weights/run.py

Runs the study of ``config.toml`` over ``space.toml`` (the same as
``htcsim tune ... --also ...``), writes the study's files under ``study/``
(best_policy.toml, trials.parquet, comparison.csv), ``results.md`` and
``bsld.png`` here.
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

from htcsim.policy import Policy
from htcsim.tune import Study, StudyStore, load_space, parse_objective, write_study
from htcsim.workload.swf import read_swf

HERE = Path(__file__).resolve().parent


def main() -> int:
    config = tomllib.loads((HERE / "config.toml").read_text())
    trace_dir = Path(os.environ.get("HTCSIM_TRACE_DIR", ""))
    logs = [config["train_log"], *config["other_logs"]]
    paths = [trace_dir / f"{stem}.swf.gz" for stem in logs]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        print(f"set HTCSIM_TRACE_DIR to the folder holding {', '.join(missing)}", file=sys.stderr)
        return 2
    workload, *others = (read_swf(p, max_jobs=config["max_jobs"]) for p in paths)
    space = load_space(HERE / "space.toml", Policy())
    out = HERE / "study"
    out.mkdir(exist_ok=True)
    store = StudyStore(out / "study.sqlite", {"config": config})
    study = Study(
        workload,
        space,
        parse_objective(config["objective"]),
        train_fraction=config["train_fraction"],
        seed=config["seed"],
        store=store,
        workers=config["workers"],
        others={o.name: o for o in others},
    )
    try:
        result = study.run(config["trials"])
    finally:
        study.close()
        store.close()
    write_study(result, out)
    table = pl.read_csv(out / "comparison.csv")
    columns = ["train_mean_bsld", "test_mean_bsld", *(f"{o.name}_mean_bsld" for o in others)]
    (HERE / "results.md").write_text(markdown(table, columns, result.best_values))
    plot(table, columns, HERE / "bsld.png")
    print((HERE / "results.md").read_text())
    return 0


def markdown(table: pl.DataFrame, columns: list[str], best: dict[str, object]) -> str:
    lines = [
        "Mean bounded slowdown (tau 10 s); the tuned policy: "
        + ", ".join(f"{k} = {v!r}" for k, v in best.items()),
        "",
        "| policy | " + " | ".join(c.removesuffix("_mean_bsld") for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in table.iter_rows(named=True):
        lines.append(f"| {row['policy']} | " + " | ".join(f"{row[c]:,.2f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def plot(table: pl.DataFrame, columns: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8.0, 4.5))
    width = 0.8 / len(table)
    x = np.arange(len(columns))
    for k, row in enumerate(table.iter_rows(named=True)):
        ax.bar(x + k * width, [row[c] for c in columns], width, label=row["policy"])
    ax.set_xticks(x + width * (len(table) - 1) / 2, [c.removesuffix("_mean_bsld") for c in columns])
    ax.set_yscale("log")
    ax.set_ylabel("mean bounded slowdown (log)")
    ax.set_title("Tuned on the training part of SDSC-SP2; judged on its test part and CTC-SP2")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
