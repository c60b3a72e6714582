"""An offline HTML report comparing result directories side by side.

Why one self-contained file: a comparison gets mailed, attached to a ticket or
opened on a laptop with no network and no htcsim, so the figures are PNGs
embedded as base64 ``data:`` URIs, the style sheet is inline, and nothing is
fetched. Why read result directories rather than re-run: the report shows
exactly what each run recorded (``htcsim.report.results.write_results``), so it can
compare runs made on other machines, at other versions, long ago.

The page, top to bottom:

* the runs: label (the name given to ``simulate --name``, else the
  directory's name), workload, policy, node failures, checkpoint interval,
  autoscaler, machine, version;
* the inputs that differ between the runs (every input ``summary.json``
  records: files and their digests, policy values, failure model and seed...),
  so that two runs both labelled ``fcfs+easy`` show what set them apart;
* every numeric summary figure, one row per key and one column per run, with
  the best value highlighted where lower (waits, slowdown, cost) or higher
  (utilization, throughput) is obviously better;
* figures with the runs overlaid: wait-time ECDF, utilization and queue length
  over time; when the runs recorded them, nodes by state (one panel per run)
  and cumulative cost and node-hours;
* the per-node-type table (``nodes.csv``) of each run that has one.

Optional inputs are detected, never required: a time series without node
columns simply gets no node figure, a summary without ``cost`` shows a dash.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import polars as pl

import htcsim
from htcsim.metrics import format_duration, row_duration_unit
from htcsim.report.comparison_plots import RunSeries, comparison_figures, png_data_uri
from htcsim.report.provenance import (
    describe_autoscale,
    describe_checkpoints,
    describe_failures,
    differing_inputs,
)

REQUIRED_FILES = ("summary.json", "jobs.parquet", "timeseries.parquet")
"""What makes a directory a result directory, for the report's purposes."""

SERIES_COLUMNS = ("time_s", "utilization", "queued_jobs")
"""Time-series columns every run must have (every htcsim version writes them)."""

PROVENANCE_KEYS = frozenset({"unix_start_time"})
"""Numeric top-level summary keys that describe the input, not the run's outcome."""

# Which metrics have an obvious better direction, by a word of the key (``mean_wait_s``
# has "wait") or by the whole key; the others (counts, replay speed, boots) are
# shown, not judged.
LOWER_IS_BETTER_TOKENS = frozenset({"wait", "bsld", "slowdown", "response", "cost", "makespan"})
LOWER_IS_BETTER_KEYS = frozenset(
    {"lost_core_h", "node_hours", "n_requeued", "n_killed_at_walltime", "n_cancelled"}
)
HIGHER_IS_BETTER_TOKENS = frozenset({"utilization", "throughput"})
HIGHER_IS_BETTER_KEYS = frozenset({"saved_core_h"})

MISSING = "–"


class ReportError(ValueError):
    """A path given to the report is not a readable result directory (the message names it)."""


@dataclass(frozen=True)
class Run(RunSeries):
    """One result directory, read back: what the report needs of it and nothing more.

    The inherited fields (label, sorted waits, jobs never started, the time
    series as written) feed the figures; these feed the tables.
    """

    directory: Path
    summary: dict[str, Any]
    node_types: pl.DataFrame | None  # nodes.csv, when the run wrote one


# --------------------------------------------------------------------------- reading


def load_run(directory: Path, label: str) -> Run:
    """Read one result directory, or raise :class:`ReportError` naming what is wrong."""
    _check_result_directory(directory)
    summary = _read_summary(directory / "summary.json")
    jobs = _read_parquet(directory / "jobs.parquet", ("wait_s",))
    series = _read_parquet(directory / "timeseries.parquet", None, required=SERIES_COLUMNS)
    waits = jobs["wait_s"]
    nodes_csv = directory / "nodes.csv"
    node_types = None
    if nodes_csv.is_file():
        try:
            node_types = pl.read_csv(nodes_csv)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise ReportError(f"{nodes_csv}: not a readable CSV file ({exc})") from exc
    return Run(
        label=label,
        directory=directory,
        summary=summary,
        waits_s=np.sort(waits.drop_nulls().to_numpy().astype(np.float64)),
        n_not_started=waits.null_count(),
        series=series.sort("time_s"),
        node_types=node_types,
    )


def _check_result_directory(directory: Path) -> None:
    if not directory.is_dir():
        raise ReportError(
            f"{directory}: not a directory (give result directories written by "
            "'htcsim simulate --out DIR')"
        )
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if not missing:
        return
    message = f"{directory}: not a result directory, missing {', '.join(missing)}"
    # 'simulate --backfill a,b --out DIR' writes DIR/a, DIR/b: point at them.
    nested = sorted(str(p.parent) for p in directory.glob("*/summary.json"))
    if nested:
        message += f" (it holds result directories: {' '.join(nested)})"
    raise ReportError(message)


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from exc
    except OSError as exc:
        raise ReportError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
        raise ReportError(f"{path}: no 'metrics' object (not written by htcsim.report.results?)")
    return summary


def _read_parquet(
    path: Path, columns: Sequence[str] | None, *, required: Sequence[str] = ()
) -> pl.DataFrame:
    """Read ``columns`` (all when None), checking the ``required`` ones exist first."""
    try:
        schema = pl.read_parquet_schema(path)
        missing = [c for c in (*(columns or ()), *required) if c not in schema]
        if missing:
            raise ReportError(f"{path}: no column {', '.join(missing)}")
        return pl.read_parquet(path, columns=list(columns) if columns is not None else None)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ReportError(f"{path}: not a readable Parquet file ({exc})") from exc


def run_labels(directories: Sequence[Path]) -> list[str]:
    """Directory names, lengthened with parent folders until unique.

    ``runs/a/easy`` and ``runs/b/easy`` become ``a/easy`` and ``b/easy``; the
    same directory given twice keeps its short name, with a ``(2)`` suffix on the
    second, so every column has a distinct name.
    """
    full = [d.resolve().parts or (str(d),) for d in directories]
    labels: list[str] = []
    for i, parts in enumerate(full):
        depth = 1
        while depth < len(parts) and any(
            other != parts and other[-depth:] == parts[-depth:] for other in full
        ):
            depth += 1
        labels.append("/".join(parts[-depth:]).lstrip("/") or str(directories[i]))
    return _unique(labels)


# --------------------------------------------------------------------------- metrics


def metric_values(summary: dict[str, Any]) -> dict[str, float | int | None]:
    """Every numeric figure of a summary, by key: ``metrics``, numeric top-level
    keys (figures later versions may add there) and ``start_estimates.*``.

    ``None`` (an undefined figure: JSON has no NaN) is kept so the row shows a dash.
    """
    values: dict[str, float | int | None] = {
        k: v for k, v in summary["metrics"].items() if v is None or _is_number(v)
    }
    values.update({k: v for k, v in summary.items() if k not in PROVENANCE_KEYS and _is_number(v)})
    estimates = summary.get("start_estimates")
    if isinstance(estimates, dict):
        values.update(
            {f"start_estimates.{k}": v for k, v in estimates.items() if v is None or _is_number(v)}
        )
    return values


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: float | int | None) -> TypeGuard[float | int]:
    return value is not None and math.isfinite(value)


def format_metric(key: str, value: float | int | None, unit: str | None = None) -> str:
    """A figure with its unit: durations (``*_s``) as 3.2 h (in ``unit`` when given:
    the row's, see :func:`row_unit`), utilizations as %."""
    if not _finite(value):
        return MISSING
    if key.endswith("_s"):
        return format_duration(float(value), unit)
    if "utilization" in key:
        return f"{value:.1%}"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3g}"


def row_unit(key: str, values: Sequence[float | int | None]) -> str | None:
    """The one unit a row of durations is shown in: that of its largest figure."""
    return row_duration_unit(values) if key.endswith("_s") else None


def better_direction(key: str) -> int:
    """-1 when lower is obviously better, +1 when higher is, 0 when it depends."""
    if key.startswith("start_estimates."):
        return 0
    tokens = set(key.split("_"))
    if key in LOWER_IS_BETTER_KEYS or tokens & LOWER_IS_BETTER_TOKENS:
        return -1
    if key in HIGHER_IS_BETTER_KEYS or tokens & HIGHER_IS_BETTER_TOKENS:
        return 1
    return 0


def best_runs(key: str, values: Sequence[float | int | None]) -> set[int]:
    """Positions of the best value of a row, judged as displayed.

    Empty when the metric has no obvious direction, fewer than two runs define
    it, or every run shows the same text (5.0 h beside 5.0 h is a tie to a reader).
    """
    direction = better_direction(key)
    finite = {i: v for i, v in enumerate(values) if _finite(v)}
    if direction == 0 or len(finite) < 2:
        return set()
    unit = row_unit(key, values)
    target = format_metric(key, (min if direction < 0 else max)(finite.values()), unit)
    best = {i for i, v in finite.items() if format_metric(key, v, unit) == target}
    return best if len(best) < len(finite) else set()


# --------------------------------------------------------------------------- HTML

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { background: #d9f2d9; font-weight: bold; }
span.dir { color: #777; font-size: 0.85em; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9em; }
p.note { color: #8a5a00; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _runs_section(runs: Sequence[Run]) -> str:
    rows = []
    for run in runs:
        s = run.summary
        cells = (
            run.directory,
            s.get("workload", MISSING),
            s.get("policy_label", MISSING),
            describe_failures(s),
            describe_checkpoints(s),
            describe_autoscale(s),
            _machine(s),
            s.get("htcsim_version", MISSING),
        )
        rows.append(
            f"<tr><th>{_e(run.label)}</th>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>"
        )
    workloads = {str(r.summary.get("workload")) for r in runs}
    note = (
        '<p class="note">The runs replayed different workloads: their figures are not '
        "like for like.</p>"
        if len(workloads) > 1
        else ""
    )
    head = "<tr><th>run</th><th>directory</th><th>workload</th><th>policy</th>"
    head += "<th>node failures</th><th>checkpoints</th><th>autoscaler</th>"
    head += "<th>machine</th><th>htcsim</th></tr>"
    return f"<h2>Runs</h2>\n<table>{head}\n{''.join(rows)}</table>\n{note}"


def _differences_section(runs: Sequence[Run]) -> str:
    if len(runs) < 2:
        return ""
    differ = differing_inputs([r.summary for r in runs])
    if not differ:
        return "<h2>Inputs that differ</h2>\n<p>None: every run was given the same inputs.</p>"
    head = "<tr><th>input</th>" + "".join(f"<th>{_e(r.label)}</th>" for r in runs) + "</tr>"
    rows = "\n".join(
        f"<tr><th><code>{_e(key)}</code></th>" + "".join(_input_cell(v) for v in values) + "</tr>"
        for key, values in differ.items()
    )
    return f"<h2>Inputs that differ</h2>\n<table>{head}\n{rows}</table>"


def _input_cell(value: Any) -> str:
    if value is None:
        return f"<td>{MISSING}</td>"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > 40:  # digests and long paths: the start, the whole as a tooltip
        return f'<td title="{_e(text)}">{_e(text[:16])}…{_e(text[-16:])}</td>'
    return f"<td>{_e(text)}</td>"


def _machine(summary: dict[str, Any]) -> str:
    cluster = summary.get("cluster")
    if isinstance(cluster, list) and cluster:
        return ", ".join(
            f"{t.get('count', '?')} {t.get('name', '?')} x {t.get('cores', '?')} cores"
            for t in cluster
            if isinstance(t, dict)
        )
    machine = summary.get("machine")
    if not isinstance(machine, dict):
        return MISSING
    return (
        f"{machine.get('total_cores', '?')} cores "
        f"({machine.get('n_nodes', '?')} nodes x {machine.get('cores_per_node', '?')})"
    )


def _metrics_section(runs: Sequence[Run]) -> str:
    per_run = [metric_values(r.summary) for r in runs]
    keys = list(dict.fromkeys(k for values in per_run for k in values))
    arrows = {
        -1: ' <span class="dir" title="lower is better">&darr;</span>',
        1: ' <span class="dir" title="higher is better">&uarr;</span>',
        0: "",
    }
    head = "<tr><th>metric</th>" + "".join(f"<th>{_e(r.label)}</th>" for r in runs) + "</tr>"
    rows = []
    for key in keys:
        values = [values.get(key) for values in per_run]
        best = best_runs(key, values)
        unit = row_unit(key, values)
        cells = "".join(
            f'<td class="num{" best" if i in best else ""}"{_exact(v)}>'
            f"{_e(format_metric(key, v, unit))}</td>"
            for i, v in enumerate(values)
        )
        rows.append(
            f"<tr><th><code>{_e(key)}</code>{arrows[better_direction(key)]}</th>{cells}</tr>"
        )
    return f'<h2>Metrics</h2>\n<table class="metrics">{head}\n' + "\n".join(rows) + "</table>"


def _exact(value: float | int | None) -> str:
    """The unrounded figure as a tooltip, for a reader who needs more digits."""
    return f' title="{_e(value)}"' if _finite(value) else ""


def _figures_section(runs: Sequence[Run]) -> str:
    parts = []
    for caption, fig in comparison_figures(runs):
        parts.append(
            f'<figure><img src="{png_data_uri(fig)}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    return "<h2>Figures</h2>\n" + "\n".join(parts)


def _node_types_section(runs: Sequence[Run]) -> str:
    parts = [
        f"<h3>{_e(r.label)}</h3>\n{_frame_table(r.node_types)}"
        for r in runs
        if r.node_types is not None
    ]
    return "<h2>Node types</h2>\n" + "\n".join(parts) if parts else ""


def _frame_table(frame: pl.DataFrame) -> str:
    head = "<tr>" + "".join(f"<th>{_e(c)}</th>" for c in frame.columns) + "</tr>"
    rows = (
        "<tr>"
        + "".join(_frame_cell(c, v) for c, v in zip(frame.columns, row, strict=True))
        + "</tr>"
        for row in frame.iter_rows()
    )
    return f"<table>{head}\n" + "\n".join(rows) + "</table>"


def _frame_cell(column: str, value: object) -> str:
    if _is_number(value):
        return f'<td class="num">{_e(format_metric(column, value))}</td>'  # type: ignore[arg-type]
    return f"<td>{_e(MISSING if value is None else value)}</td>"


def render_html(runs: Sequence[Run], title: str) -> str:
    """The whole page as one string: inline style, embedded figures, no external resource."""
    sections: Iterable[str] = (
        f"<h1>{_e(title)}</h1>",
        _runs_section(runs),
        _differences_section(runs),
        _metrics_section(runs),
        _figures_section(runs),
        _node_types_section(runs),
        f"<footer><small>htcsim {_e(htcsim.__version__)} report</small></footer>",
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(s for s in sections if s)
        + "\n</body>\n</html>\n"
    )


def write_report(result_dirs: list[Path], out_path: Path, title: str | None = None) -> Path:
    """Compare result directories in one self-contained HTML file; returns its path.

    Runs are labelled by the name each was given (``simulate --name``), else
    by directory name (lengthened when two names clash), and shown in the
    order given. Raises :class:`ReportError` naming the directory and the
    missing or unreadable file when a path is not a result directory;
    nothing is written then.
    """
    if not result_dirs:
        raise ReportError("no result directory given")
    if Path(out_path).is_dir():  # checked first: rendering takes seconds, then fails
        raise ReportError(f"{out_path}: is a directory; give the report's file name (-o)")
    dirs = [Path(d) for d in result_dirs]
    runs = [load_run(d, label) for d, label in zip(dirs, run_labels(dirs), strict=True)]
    named = [r.summary.get("name") for r in runs]
    if any(named):
        labels = _unique([str(n) if n else r.label for n, r in zip(named, runs, strict=True)])
        runs = [replace(r, label=label) for r, label in zip(runs, labels, strict=True)]
    page = render_html(runs, title or "htcsim report: " + " vs ".join(r.label for r in runs))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _unique(labels: list[str]) -> list[str]:
    """Labels with a ``(2)``, ``(3)``... suffix on repeats, so every column is named apart."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


# --------------------------------------------------------------------------- command
