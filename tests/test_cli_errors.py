"""Ordinary mistakes on the command line, through the real ``htcsim`` process.

Each mistake must end in one line on stderr (``error: ...``, exit code 2) that
names the option and the path or value, before any work is done; never a
traceback. Names in square brackets must survive rich's markup, in messages
and in help; an empty workload is an error unless asked for; a cluster file is
the machine a log is read for; summary rows use one unit each.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_sacct import HEADER, sacct_file

CMD_S = 180
"""Bound on one command (a replay of a few hundred jobs takes a second or two;
a loaded machine may take many times that)."""


def htcsim(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m htcsim ARGS`` in ``cwd``, as a user would, with a wide terminal
    (so no table cell or help line is cut where a test reads it)."""
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "htcsim", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CMD_S,
        check=False,
    )


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line of a failed command (exit code 2, no traceback)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-4000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def swf(path: Path, max_procs: int, sizes: list[int]) -> Path:
    """An SWF log: a MaxProcs header, then one 100-second job per size, 10 s apart."""
    lines = [f"; MaxProcs: {max_procs}"]
    for k, size in enumerate(sizes, start=1):
        lines.append(f"{k} {10 * k} -1 100 {size} -1 -1 {size} 200 -1 1 1 1 -1 -1 -1 -1 -1")
    path.write_text("\n".join(lines) + "\n")
    return path


def cluster(path: Path, count: int, cores: int) -> Path:
    path.write_text(f'[[node_type]]\nname = "big"\ncount = {count}\ncores = {cores}\n')
    return path


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """Three small jobs on an 8-processor machine: every replay of it takes no time."""
    return swf(tmp_path / "small.swf", 8, [1, 2, 4])


# ------------------------------------------------------------------ files and folders


def test_an_existing_file_as_simulate_out_is_refused_before_the_replay(
    tmp_path: Path, log: Path
) -> None:
    existing = tmp_path / "results.txt"
    existing.write_text("keep me\n")
    proc = htcsim("simulate", log, "--out", existing, cwd=tmp_path)
    line = one_error(proc)
    assert "--out" in line and str(existing) in line and "is a file" in line
    assert proc.stdout == "", "nothing was loaded or replayed first"
    assert existing.read_text() == "keep me\n"


def test_a_missing_parent_directory_is_named_for_generate_and_policy_init(
    tmp_path: Path,
) -> None:
    target = Path("missing") / "dir" / "x.swf"
    line = one_error(htcsim("generate", "lublin", "--jobs", "10", "-o", target, cwd=tmp_path))
    assert f"--output {target}" in line and "directory missing/dir does not exist" in line
    policy = Path("missing") / "dir" / "p.toml"
    line = one_error(htcsim("policy", "init", "-o", policy, cwd=tmp_path))
    assert f"--output {policy}" in line and "does not exist" in line
    assert not (tmp_path / "missing").exists()


def test_a_directory_where_a_file_goes_and_a_file_where_a_directory_goes(
    tmp_path: Path, log: Path
) -> None:
    line = one_error(htcsim("generate", "htc", "--jobs", "10", "-o", tmp_path, cwd=tmp_path))
    assert f"--output {tmp_path}: is a directory" in line
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    under = blocker / "x.toml"
    line = one_error(htcsim("policy", "init", "-o", under, cwd=tmp_path))
    assert f"--output {under}" in line and "is not a directory" in line
    line = one_error(htcsim("simulate", log, "--out", blocker / "sub", cwd=tmp_path))
    assert "--out" in line and "is a file, not a directory" in line


def test_outputs_of_tune_plan_and_import_are_checked_before_any_work(
    tmp_path: Path, log: Path
) -> None:
    existing = tmp_path / "taken"
    existing.write_text("")
    space = tmp_path / "space.toml"
    space.write_text('[backfill]\nchoices = ["easy", "conservative"]\n')
    proc = htcsim(
        "tune", log, "--space", space, "--objective", "mean_bsld", "-o", existing, cwd=tmp_path
    )
    assert "--out" in one_error(proc) and proc.stdout == ""
    proc = htcsim("plan", log, "--target-wait-p95", "1h", "-o", existing, cwd=tmp_path)
    assert "--out" in one_error(proc) and proc.stdout == ""
    source = sacct_file(tmp_path, [])
    names = Path("no") / "such" / "names.json"
    proc = htcsim("import", "sacct", source, "--names", names, cwd=tmp_path)
    assert f"--names {names}" in one_error(proc)
    assert not (tmp_path / "cluster.swf").exists(), "nothing written before the check"


def test_input_files_are_named_with_their_option(tmp_path: Path, log: Path) -> None:
    line = one_error(htcsim("simulate", log, "--failures", tmp_path, cwd=tmp_path))
    assert line == f"error: --failures {tmp_path}: is a directory; give a file"
    line = one_error(htcsim("simulate", log, "--policy", "nope.toml", cwd=tmp_path))
    assert line == "error: --policy nope.toml: no such file"
    line = one_error(htcsim("import", "sacct", "nope.sacct", cwd=tmp_path))
    assert line == "error: nope.sacct: no such file"


# ------------------------------------------------------------------ square brackets


def test_section_names_in_brackets_survive_in_messages(tmp_path: Path, log: Path) -> None:
    policy = tmp_path / "typo.toml"
    policy.write_text('[ordr]\norder = "sjf"\n')
    line = one_error(htcsim("policy", "show", policy, cwd=tmp_path))
    assert "unknown section [ordr]" in line
    assert "[queue], [backfill]" in line and "[[qos]]" in line
    space = tmp_path / "space.toml"
    space.write_text('[backfil]\nchoices = ["easy"]\n')
    proc = htcsim("tune", log, "--space", space, "--objective", "mean_bsld", cwd=tmp_path)
    assert "[backfil]: not a Policy field" in one_error(proc)


def test_a_path_with_brackets_is_printed_as_given(tmp_path: Path, log: Path) -> None:
    out = Path("runs[easy]") / "x"
    proc = htcsim("simulate", log, "--out", out, "--no-plots", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"to {out}/" in proc.stdout
    assert (tmp_path / out / "summary.json").exists()
    written = Path("runs[easy]") / "x.swf"
    proc = htcsim("generate", "htc", "--jobs", "10", "-o", written, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote 10 jobs to {written}" in proc.stdout


def test_simulate_help_shows_the_policy_defaults(tmp_path: Path) -> None:
    proc = htcsim("simulate", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.replace("│", " ").split())
    for default in ("easy", "fcfs", "first_fit"):
        assert f"[default: {default}, or the --policy file's]" in text, default


def test_every_help_text_keeps_its_square_brackets() -> None:
    """Rich reads ``[word]`` as a tag: any help text of the command tree that
    would lose a bracket (a default, an example) must escape it."""
    import click
    import typer
    from rich.text import Text

    from htcsim.cli.app import app

    def walk(command: click.Command, path: str):  # type: ignore[no-untyped-def]
        yield path, command
        for name, sub in (getattr(command, "commands", None) or {}).items():
            yield from walk(sub, f"{path} {name}")

    checked = 0
    for path, command in walk(typer.main.get_command(app), "htcsim"):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        for text in texts:
            checked += 1
            assert Text.from_markup(text).plain.count("[") == text.count("["), (path, text)
    assert checked > 100


# ------------------------------------------------------------------ empty workloads


def test_an_empty_log_is_an_error_unless_allowed(tmp_path: Path) -> None:
    empty = swf(tmp_path / "empty.swf", 8, [])
    line = one_error(htcsim("simulate", empty, cwd=tmp_path))
    assert f"{empty}: no job to replay" in line and "--allow-empty" in line
    proc = htcsim("simulate", empty, "--allow-empty", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"warning: {empty}: no job to replay")
    line = one_error(htcsim("simulate", "--max-jobs", "0", cwd=tmp_path))
    assert "no job to replay" in line


def test_a_log_whose_jobs_are_all_dropped_says_why(tmp_path: Path) -> None:
    too_big = swf(tmp_path / "big.swf", 4, [8, 16])
    line = one_error(htcsim("simulate", too_big, cwd=tmp_path))
    assert "loading dropped all 2: larger_than_machine 2" in line


def test_generate_zero_jobs_is_an_error_unless_allowed(tmp_path: Path) -> None:
    out = tmp_path / "none.swf"
    line = one_error(htcsim("generate", "lublin", "--jobs", "0", "-o", out, cwd=tmp_path))
    assert "--jobs 0" in line and "--allow-empty" in line
    assert not out.exists()
    proc = htcsim("generate", "htc", "--jobs", "0", "-o", out, "--allow-empty", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("warning: --jobs 0") and out.exists()


def test_an_import_that_keeps_no_job_is_an_error_unless_allowed(tmp_path: Path) -> None:
    pending = (
        "7|ann|g|a|batch|normal|2024-03-01T08:00:00|2024-03-01T08:00:00|Unknown|Unknown|"
        "00:00:00|01:00:00|1|1|1|1G|cpu=1,mem=1G,node=1||PENDING|0:0"
    )
    source = sacct_file(tmp_path, [pending], HEADER)
    line = one_error(htcsim("import", "sacct", source, "-o", "out.swf", cwd=tmp_path))
    assert "no job to write (dropped: unfinished:PENDING 1)" in line and "--allow-empty" in line
    assert not (tmp_path / "out.swf").exists()
    proc = htcsim("import", "sacct", source, "-o", "out.swf", "--allow-empty", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.swf").exists()


# ------------------------------------------------------------------ option names


@pytest.mark.parametrize(
    ("args", "named", "not_named"),
    [
        (["generate", "lublin", "--jobs", "-1", "-o", "x.swf"], "--jobs", "n_jobs"),
        (["generate", "lublin", "--load", "0", "-o", "x.swf"], "--load must be", "error: load"),
        (["generate", "htc", "--users", "0", "-o", "x.swf"], "--users", "n_users"),
        (["generate", "htc", "--cores", "0", "-o", "x.swf"], "--cores", "cores_per_node"),
        (["simulate", "--max-jobs", "-1"], "--max-jobs", "max_jobs"),
        (["simulate", "--max-procs", "0"], "--max-procs", "machine size"),
        (["simulate", "--backfill-depth", "-1"], "--backfill-depth", "backfill_depth"),
        (["plan", "--target-wait-p95", "1h", "--workers", "0"], "--workers", "error: workers"),
        (["tune", "--space", "s.toml", "--objective", "x"], "--space s.toml", "space file"),
    ],
)
def test_errors_name_the_option_not_the_parameter(
    tmp_path: Path, args: list[str], named: str, not_named: str
) -> None:
    line = one_error(htcsim(*args, cwd=tmp_path))
    assert named in line and not_named not in line, line


def test_a_log_without_machine_size_points_to_the_option(tmp_path: Path) -> None:
    headless = tmp_path / "headless.swf"
    headless.write_text("1 0 -1 10 -1 -1 -1 -1 20 -1 1 1 1 -1 -1 -1 -1 -1\n")
    line = one_error(htcsim("simulate", headless, cwd=tmp_path))
    assert "pass --max-procs" in line and "max_procs" not in line


def test_import_options_are_named(tmp_path: Path) -> None:
    source = sacct_file(tmp_path, [])
    line = one_error(htcsim("import", "sacct", source, "--cores-per-node", "0", cwd=tmp_path))
    assert line == "error: --cores-per-node must be positive, got 0"
    line = one_error(htcsim("import", "sacct", source, "--mem-per-node", "0", cwd=tmp_path))
    assert line == "error: --mem-per-node must be positive, got 0"


# ------------------------------------------------------------------ units


DURATION_ROWS = (
    "mean wait",
    "median wait",
    "95th percentile wait",
    "max wait",
    "mean response (wait + run)",
    "makespan",
)


def test_each_summary_row_has_one_unit(tmp_path: Path) -> None:
    """Backfill modes side by side: no-backfill waits are hours, EASY's minutes or
    none; each row must still read in one unit (its largest figure's)."""
    log = tmp_path / "t.swf"
    gen = ["generate", "lublin", "--jobs", "300", "--procs", "32", "--seed", "2", "-o", log]
    assert htcsim(*gen, cwd=tmp_path).returncode == 0
    proc = htcsim("simulate", log, "--backfill", "none,easy,conservative", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] in DURATION_ROWS:
            rows[cells[0]] = cells[1:]
    assert set(rows) == set(DURATION_ROWS), proc.stdout
    units = {name: {cell.split()[-1] for cell in cells} for name, cells in rows.items()}
    assert all(len(u) == 1 for u in units.values()), rows
    assert {u.pop() for u in units.values()} != {"s"}, "the fixture must span units"


# ------------------------------------------------------------------ --cluster


def test_cluster_is_the_machine_a_log_is_read_for(tmp_path: Path) -> None:
    """The header says 8 processors; a 20-core job fits the 56-core nodes given."""
    log = swf(tmp_path / "small-header.swf", 8, [4, 20])
    nodes = cluster(tmp_path / "c56.toml", 2, 56)
    proc = htcsim("simulate", log, "--cluster", nodes, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "small-header: 2 jobs on 112 cores (2 big x 56)" in proc.stdout
    assert "dropped" not in proc.stdout


def test_a_job_no_node_holds_is_one_line_or_skipped(tmp_path: Path) -> None:
    log = swf(tmp_path / "wide.swf", 256, [4, 20, 200, 300])
    nodes = cluster(tmp_path / "c56.toml", 2, 56)
    line = one_error(htcsim("simulate", log, "--cluster", nodes, cwd=tmp_path))
    assert "job 3 needs 200 cores in all" in line and "112 cores" in line
    assert "2 job(s)" in line and "--skip-oversized" in line
    proc = htcsim("simulate", log, "--cluster", nodes, "--skip-oversized", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wide: 2 jobs on 112 cores" in proc.stdout and "dropped: oversized 2" in proc.stdout
    line = one_error(htcsim("simulate", log, "--cluster", nodes, "--max-procs", "8", cwd=tmp_path))
    assert line == "error: give either --cluster or --max-procs, not both"
