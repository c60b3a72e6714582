"""SWF reader/writer: conventions, exact accounting, precise errors, real logs."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htcsim.model import JOB_DTYPE, Machine, Workload, empty_jobs
from htcsim.workload import swf as swf_module
from htcsim.workload.swf import SWFError, read_swf, read_swf_header
from htcsim.workload.swf_writer import write_swf, write_workload_swf

# Field defaults for a test line: a 4-processor job that ran 100 s of a 200 s request.
DEFAULTS = {
    1: 1, 2: 0, 3: 0, 4: 100, 5: 4, 6: -1, 7: -1, 8: 4, 9: 200,
    10: -1, 11: 1, 12: 1, 13: 1, 14: -1, 15: 1, 16: -1, 17: -1, 18: -1,
}  # fmt: skip

HEADER = "; Version: 2.2\n; MaxNodes: 16\n; MaxProcs: 16\n"


def line(job: int, submit: int, **fields: object) -> str:
    """One aligned data line; ``f4=-1`` sets field 4, and so on."""
    values: dict[int, object] = {**DEFAULTS, 1: job, 2: submit}
    for key, value in fields.items():
        values[int(key[1:])] = value
    return " ".join(f"{values[j]!s:>6}" for j in range(1, 19))


def swf(tmp_path: Path, text: str, name: str = "x.swf") -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def accounted(w: Workload, n_lines: int) -> None:
    """Nothing lost: every data line is a job or a counted drop (bad lines included)."""
    assert len(w.jobs) + sum(w.dropped.values()) == n_lines
    bad = sum(v for k, v in w.dropped.items() if k.startswith("bad_line:"))
    assert bad == w.skipped_lines


# ----------------------------------------------------------------------------- header


def test_header_keys_leading_integers_duplicates_and_continuations(tmp_path: Path) -> None:
    text = (
        "; Version: 2.2\n"
        "; Computer: IBM SP2\n"
        "; Information: http://www.tc.cornell.edu/\n"
        ";              http://www.cs.huji.ac.il/labs/parallel/workload/\n"
        "; UnixStartTime: 835823160\n"
        "; MaxNodes: 338 (batch partition; 512 total)\n"
        "; MaxProcs: 338\n"
        "; Queue:  1 DSI      \n"
        "; Queue:  2 astro    \n"
        ";\n"
        "; Note: THIS IS A CLEANED VERSION OF THE LOG!\n"
        ";       The filter used to produce it was\n"
        ";         user=135 (2080 jobs removed)\n"
        ";\n" + line(1, 0) + "\n"
    )
    w = read_swf(swf(tmp_path, text))
    assert w.header["MaxNodes"] == "338 (batch partition; 512 total)"
    assert w.header["Computer"] == "IBM SP2"
    assert w.header["Queue"] == "1 DSI\n2 astro"
    assert w.header["Information"] == (
        "http://www.tc.cornell.edu/\nhttp://www.cs.huji.ac.il/labs/parallel/workload/"
    )
    assert w.header["Note"].splitlines() == [
        "THIS IS A CLEANED VERSION OF THE LOG!",
        "The filter used to produce it was",
        "user=135 (2080 jobs removed)",
    ]
    assert "http" not in w.header  # a URL continuation line is not a key
    assert w.machine == Machine(n_nodes=338, cores_per_node=1)
    assert w.unix_start_time == 835823160
    assert w.name == "x"


def test_machine_from_procs_and_nodes(tmp_path: Path) -> None:
    text = "; MaxNodes: 144\n; MaxProcs: 1152\n" + line(1, 0) + "\n"
    w = read_swf(swf(tmp_path, text))
    assert w.machine == Machine(n_nodes=144, cores_per_node=8)
    assert w.unix_start_time is None


def test_machine_from_max_nodes_when_no_max_procs(tmp_path: Path) -> None:
    w = read_swf(swf(tmp_path, "; MaxNodes: 256\n" + line(1, 0) + "\n"))
    assert w.machine.total_cores == 256
    assert "machine_size_from_largest_job" not in w.changed


def test_machine_from_largest_job_is_recorded(tmp_path: Path) -> None:
    text = "\n".join([line(1, 0, f8=3), line(2, 5, f8=7), line(3, 6, f8=9, f4=-1)]) + "\n"
    w = read_swf(swf(tmp_path, text))
    assert w.machine.total_cores == 7  # the job that never ran does not size the machine
    assert w.changed["machine_size_from_largest_job"] == 1
    assert w.dropped == {"run_time_unknown": 1}


def test_machine_size_override(tmp_path: Path) -> None:
    text = HEADER + "\n".join([line(1, 0, f8=8), line(2, 1, f8=12)]) + "\n"
    w = read_swf(swf(tmp_path, text), max_procs=10)
    assert w.machine.total_cores == 10
    assert w.dropped == {"larger_than_machine": 1}
    assert w.jobs["job_id"].tolist() == [1]


def test_no_header_no_jobs_cannot_size_machine(tmp_path: Path) -> None:
    with pytest.raises(SWFError, match="max_procs"):
        read_swf(swf(tmp_path, "; Version: 2\n"))


def test_header_only_file_is_an_empty_workload(tmp_path: Path) -> None:
    w = read_swf(swf(tmp_path, HEADER))
    assert len(w) == 0
    assert w.jobs.dtype == JOB_DTYPE
    assert w.machine.total_cores == 16


def test_header_value_without_integer_names_the_line(tmp_path: Path) -> None:
    text = "; Version: 2.2\n; MaxProcs: many\n" + line(1, 0) + "\n"
    with pytest.raises(SWFError, match=r"x\.swf:2: header MaxProcs: 'many'"):
        read_swf(swf(tmp_path, text))


# ------------------------------------------------------------- conventions, accounting


def test_fallbacks_and_drops_are_counted_exactly(tmp_path: Path) -> None:
    rows = [
        line(1, 0),  # plain
        line(2, 1, f8=-1, f5=8),  # size from allocated
        line(3, 2, f8=-1, f5=2),  # size from allocated
        line(4, 3, f9=-1, f4=50),  # walltime from run time (unknown)
        line(5, 4, f9=0, f4=60),  # walltime from run time (zero)
        line(6, 5, f4=300, f9=200),  # ran past its request: kept, raw run kept
        line(7, 6, f4=-1),  # never ran
        line(8, 7, f4=-1, f8=-1, f5=-1),  # never ran (checked before size)
        line(9, 8, f8=0, f5=-1),  # no size
        line(10, 9, f8=-1, f5=-1),  # no size
        line(11, 10, f8=17),  # larger than the 16-processor machine
        line(12, 11, f4=0),  # zero run time: a valid job
    ]
    w = read_swf(swf(tmp_path, HEADER + "\n".join(rows) + "\n"))
    assert w.dropped == {
        "run_time_unknown": 2,
        "size_unknown_or_zero": 2,
        "larger_than_machine": 1,
    }
    assert w.changed == {
        "size_from_allocated": 2,
        "walltime_from_run_time": 2,
        "run_exceeds_walltime": 1,
    }
    assert w.skipped_lines == 0
    accounted(w, len(rows))
    jobs = w.jobs
    assert jobs["job_id"].tolist() == [1, 2, 3, 4, 5, 6, 12]
    assert jobs["n_tasks"].tolist() == [4, 8, 2, 4, 4, 4, 4]
    assert jobs["walltime_s"].tolist() == [200, 200, 200, 50, 60, 200, 200]
    assert jobs["run_s"].tolist() == [100, 100, 100, 50, 60, 300, 0]


def test_every_column_is_filled(tmp_path: Path) -> None:
    text = HEADER + line(
        42, 7, f3=11, f4=552, f5=6, f6=552.21, f7=1234.5, f8=5, f9=900, f10=2048,
        f11=0, f12=13, f13=14, f14=15, f15=2, f16=3, f17=41, f18=30,
    ) + "\n"  # fmt: skip
    (job,) = read_swf(swf(tmp_path, text)).jobs
    expected = {
        "job_id": 42, "submit_s": 7, "run_s": 552, "walltime_s": 900, "n_tasks": 5,
        "cores_per_task": 1, "mem_mib_per_task": 2, "gpus_per_task": 0, "user_id": 13,
        "group_id": 14, "executable_id": 15, "queue_id": 2, "partition_id": 3,
        "status": 0, "preceding_job_id": 41, "think_time_s": 30, "recorded_wait_s": 11,
        "recorded_alloc": 6, "avg_cpu_s": 552.21, "used_mem_kib": 1234.5,
    }  # fmt: skip
    assert set(expected) == set(JOB_DTYPE.names)
    for name, value in expected.items():
        assert job[name] == value, name


def test_unknown_markers_survive(tmp_path: Path) -> None:
    (job,) = read_swf(swf(tmp_path, HEADER + line(1, 0) + "\n")).jobs
    defaults = empty_jobs(1)[0]
    for name in ("executable_id", "partition_id", "preceding_job_id", "think_time_s"):
        assert job[name] == defaults[name] == -1
    assert job["avg_cpu_s"] == -1.0


def test_integral_decimals_in_whole_fields_are_accepted(tmp_path: Path) -> None:
    text = HEADER + line(3, 12.0, f4="100.0", f8="4.0", f11="1.0", f9="2e2") + "\n"
    (job,) = read_swf(swf(tmp_path, text)).jobs
    assert (job["submit_s"], job["run_s"], job["n_tasks"], job["walltime_s"]) == (12, 100, 4, 200)


def test_jobs_sorted_by_submit_then_id(tmp_path: Path) -> None:
    text = HEADER + "\n".join([line(5, 0), line(3, 10), line(2, 10), line(9, 10), line(1, 11)])
    w = read_swf(swf(tmp_path, text + "\n"))
    assert w.jobs["job_id"].tolist() == [5, 2, 3, 9, 1]


def test_max_jobs_counts_data_lines_before_dropping(tmp_path: Path) -> None:
    rows = [line(1, 0), line(2, 1, f4=-1), line(3, 2), line(4, 3), "garbage"]
    path = swf(tmp_path, HEADER + "\n".join(rows) + "\n")
    w = read_swf(path, max_jobs=3)
    assert w.jobs["job_id"].tolist() == [1, 3]
    assert w.dropped == {"run_time_unknown": 1}
    accounted(w, 3)
    assert len(read_swf(path, max_jobs=0)) == 0
    with pytest.raises(SWFError):
        read_swf(path)  # the bad line is past max_jobs only in the calls above


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        (" ".join(line(3, 5).split()[:17]), r"field 18 \(think time\): missing"),
        (line(3, 5) + " 7", r"field 19: unexpected: the line has 19 fields"),
        (line(3, 5, f4="abc"), r"field 4 \(run time\): 'abc' is not a number"),
        (line(3, 5, f12="0x10"), r"field 12 \(user id\): '0x10' is not a number"),
        (line(3, 5, f6="nan"), r"field 6 \(average CPU time\): nan is not a finite number"),
        (line(3, -5), r"field 2 \(submit time\): -5 is negative"),
        (line(3, 1), r"field 2 \(submit time\): 1 is earlier than 5 on line 5"),
        (line(3, 5, f9=12.5), r"field 9 \(requested time\): 12.5 is not a whole number"),
        (line(3, 5, f11=300), r"field 11 \(status\): 300 is outside the range"),
    ],
)
def test_bad_line_error_names_file_line_and_field(tmp_path: Path, bad: str, pattern: str) -> None:
    # header is 3 lines; jobs on lines 4 and 5; the bad line is line 6
    text = HEADER + line(1, 0) + "\n" + line(2, 5) + "\n" + bad + "\n" + line(4, 9) + "\n"
    path = swf(tmp_path, text)
    with pytest.raises(SWFError, match=rf"^{path}:6: {pattern}") as info:
        read_swf(path)
    assert isinstance(info.value, ValueError)
    assert info.value.line == 6
    assert info.value.path == str(path)


def test_line_numbers_count_blank_and_comment_lines(tmp_path: Path) -> None:
    text = (
        HEADER
        + line(1, 0)
        + "\n\n; a comment among the data\n"  # lines 5 and 6
        + line(2, 5)  # line 7
        + "\n   \n"  # line 8 is blanks only
        + line(3, 6, f9=1.5)  # line 9
        + "\n"
    )
    with pytest.raises(SWFError, match=r"x\.swf:9: field 9 \(requested time\)"):
        read_swf(swf(tmp_path, text))


def test_blank_lines_among_data_keep_line_numbers_exact(tmp_path: Path) -> None:
    text = HEADER + line(1, 0) + "\n\n" + line(2, 1) + "\n \t \n" + line(3, 2, f4="1.5") + "\n"
    with pytest.raises(SWFError, match=r"x\.swf:8: field 4 \(run time\)"):
        read_swf(swf(tmp_path, text))
    w = read_swf(swf(tmp_path, text.replace("1.5", "15")))
    assert w.jobs["job_id"].tolist() == [1, 2, 3]


def test_first_bad_line_is_reported(tmp_path: Path) -> None:
    text = HEADER + "\n".join([line(1, 5), line(2, 4, f4="x"), line(3, 3)]) + "\n"
    with pytest.raises(SWFError, match=r"x\.swf:5: field 4 \(run time\)"):
        read_swf(swf(tmp_path, text))


def test_skip_bad_lines_counts_every_reason(tmp_path: Path) -> None:
    rows = [
        line(1, 10),
        "1 2 3",  # field count
        line(3, 11, f5="four"),  # not numeric
        line(4, 12, f3=0.5),  # not integral
        line(5, -1),  # negative submit
        line(6, 5),  # submitted before job 1 (10): unsorted
        line(7, 13, f4=-1),  # fine as a line, dropped by convention
        line(8, 13),
        line(9, 14, f11=1000),  # out of range
    ]
    w = read_swf(swf(tmp_path, HEADER + "\n".join(rows) + "\n"), skip_bad_lines=True)
    assert w.jobs["job_id"].tolist() == [1, 8]
    assert w.skipped_lines == 6
    assert w.dropped == {
        "bad_line:field_count": 1,
        "bad_line:not_numeric": 1,
        "bad_line:not_integral": 1,
        "bad_line:negative_submit": 1,
        "bad_line:unsorted_submit": 1,
        "bad_line:out_of_range": 1,
        "run_time_unknown": 1,
    }
    accounted(w, len(rows))


def test_unsorted_lines_compare_with_the_running_maximum(tmp_path: Path) -> None:
    rows = [line(1, 0), line(2, 100), line(3, 50), line(4, 60), line(5, 100), line(6, 101)]
    w = read_swf(swf(tmp_path, HEADER + "\n".join(rows) + "\n"), skip_bad_lines=True)
    assert w.jobs["job_id"].tolist() == [1, 2, 5, 6]
    assert w.dropped == {"bad_line:unsorted_submit": 2}


def test_not_gzip_despite_suffix_is_read_as_text_and_corrupt_gzip_is_an_error(
    tmp_path: Path,
) -> None:
    plain = tmp_path / "plain.swf.gz"
    plain.write_text(HEADER + line(1, 0) + "\n")
    assert len(read_swf(plain)) == 1
    broken = tmp_path / "broken.swf.gz"
    broken.write_bytes(gzip.compress((HEADER + line(1, 0)).encode())[:-12])
    with pytest.raises(SWFError, match=r"broken\.swf\.gz: not a readable gzip file"):
        read_swf(broken)


# ------------------------------------------------------------------ paths and formats


def test_gz_and_plain_give_the_same_workload(tmp_path: Path) -> None:
    text = HEADER + "\n".join(line(i, 3 * i, f6=f"{i}.25") for i in range(1, 50)) + "\n"
    plain = read_swf(swf(tmp_path, text, "a.swf"))
    packed = read_swf(swf(tmp_path, text, "a.swf.gz"))
    assert packed.name == plain.name == "a"
    np.testing.assert_array_equal(plain.jobs, packed.jobs)
    assert packed.header == plain.header


def test_fallback_scan_gives_the_same_jobs_as_the_fast_path(tmp_path: Path) -> None:
    rows = [line(i, 2 * i, f6=f"{i}.5", f4=-1 if i % 7 == 0 else 10 * i) for i in range(1, 40)]
    fast = read_swf(swf(tmp_path, HEADER + "\n".join(rows) + "\n", "fast.swf"))
    # a comment in the middle, CRLF, tab separators and a blank line at the end
    odd = HEADER + "\r\n".join(rows[:20]) + "\r\n; mid-file note\r\n"
    odd += "\n".join(r.replace("  ", "\t") for r in rows[20:]) + "\n\n"
    slow = read_swf(swf(tmp_path, odd, "slow.swf"))
    np.testing.assert_array_equal(fast.jobs, slow.jobs)
    assert fast.dropped == slow.dropped == {"run_time_unknown": 5}
    assert slow.header["Comment"] == "mid-file note"


def test_regular_files_never_take_the_line_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-line scan is for reporting problems; clean files (aligned columns, integral
    decimals, trailing blanks) must parse on the vectorised path."""

    def no_scan(*args: object) -> None:
        raise AssertionError("the line-by-line fallback ran")

    monkeypatch.setattr(swf_module, "_slow_rows", no_scan)
    rows = [line(i, i, f6="12.5", f9="60.0") + "  " for i in range(1, 30)]
    w = read_swf(swf(tmp_path, HEADER + "\n".join(rows) + "\n\n\n"))
    assert len(w) == 29
    assert w.jobs["walltime_s"][0] == 60


def test_comments_and_blank_lines_among_the_data_stay_on_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Notes among or after the jobs and blank lines are well formed: the data is
    parsed in bulk, with the line numbers, header keys and ``max_jobs`` cut the
    line-by-line scan gives."""
    rows = [line(i, 10 * i) for i in range(1, 9)]
    text = (
        HEADER
        + "\n".join(rows[:3])  # lines 4-6
        + "\n; Note: a note among the jobs\n\n   \n"  # lines 7-9
        + "\n".join(rows[3:6])  # lines 10-12
        + "\n  ; MaxQueues: 3\n"  # line 13
        + "\n".join(rows[6:])  # lines 14-15
        + "\n; trailing remark\n\n"
    )
    path = swf(tmp_path, text)
    with monkeypatch.context() as patch:
        patch.setattr(swf_module, "_fast_columns", lambda rest: None)
        scanned = {k: read_swf(path, max_jobs=k) for k in (None, 0, 3, 5, 6)}

    def no_scan(*args: object) -> None:
        raise AssertionError("the line-by-line fallback ran")

    monkeypatch.setattr(swf_module, "_slow_rows", no_scan)
    for k, slow in scanned.items():
        fast = read_swf(path, max_jobs=k)
        np.testing.assert_array_equal(fast.jobs, slow.jobs)
        assert fast.header == slow.header, k
    full = read_swf(path)
    assert len(full) == 8
    assert full.header["Note"] == "a note among the jobs"
    assert full.header["MaxQueues"] == "3"
    assert full.header["Comment"] == "trailing remark"
    assert "MaxQueues" not in read_swf(path, max_jobs=3).header  # beyond line 13
    # a later problem is located on its real line: job 7 submitted before job 6
    unsorted = text.replace(line(7, 70), line(7, 1))
    with pytest.raises(SWFError, match=r"x\.swf:14: "):
        read_swf(swf(tmp_path, unsorted))


@st.composite
def _aligned_logs(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    """Valid data lines with random job values and random blanks between fields."""
    n = draw(st.integers(1, 25))
    values = np.array(
        draw(
            st.lists(
                st.lists(st.integers(-1, 10_000), min_size=18, max_size=18),
                min_size=n,
                max_size=n,
            )
        ),
        dtype=np.int64,
    )
    values[:, 1] = np.sort(np.abs(values[:, 1]))  # submits sorted, >= 0
    values[:, 3] = np.abs(values[:, 3])  # every job ran
    values[:, 5] = np.abs(values[:, 5])  # written as value.5 below
    values[:, 7] = 1 + np.abs(values[:, 7]) % 16  # sizes fit the 16-processor machine
    values[:, 10] = values[:, 10] % 6  # a valid status
    blanks = st.sampled_from([" ", "  ", "     ", "\t", " \t "])
    lines = []
    for row in values:
        parts = [draw(st.sampled_from(["", " ", "   "]))]
        for j, value in enumerate(row):
            parts.append(str(value) if j != 5 else f"{value}.5")
            parts.append(draw(blanks) if j < 17 else draw(st.sampled_from(["", " ", "  "])))
        lines.append("".join(parts))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    return HEADER + ending.join(lines) + ending, values


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_aligned_logs())
def test_any_alignment_reads_the_same_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: tuple[str, np.ndarray]
) -> None:
    text, values = log
    path = swf(tmp_path, text)
    fast = read_swf(path)
    with monkeypatch.context() as patch:
        patch.setattr(swf_module, "_fast_columns", lambda rest: None)
        slow = read_swf(path)
    np.testing.assert_array_equal(fast.jobs, slow.jobs)
    order = np.lexsort((values[:, 0], values[:, 1]))
    expected = values[order]
    np.testing.assert_array_equal(fast.jobs["job_id"], expected[:, 0])
    np.testing.assert_array_equal(fast.jobs["n_tasks"], expected[:, 7])
    np.testing.assert_array_equal(fast.jobs["avg_cpu_s"], expected[:, 5] + 0.5)
    np.testing.assert_array_equal(fast.jobs["think_time_s"], expected[:, 17])


_WHOLE = st.one_of(st.integers(-1, 10_000), st.integers(-(10**18) + 1, 10**18 - 1)).map(
    lambda v: st.sampled_from([str(v), f"+{v}" if v >= 0 else str(v)])
)
_DECIMAL = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(-1e9, 1e9, allow_nan=False).map(repr),
    st.sampled_from(["0.5", ".25", "-.5", "7.", "1e3", "2.5E-2", "+3.0e+1", "-0"]),
)


@st.composite
def _plain_data(draw: st.DrawFn) -> bytes:
    """Data lines of 18 plain numbers: what the C path takes."""
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        tokens = [draw(_DECIMAL) if j in (6, 7) else draw(draw(_WHOLE)) for j in range(1, 19)]
        blanks = [draw(st.sampled_from([" ", "   ", "\t", " \t\v"])) for _ in range(17)]
        lead = draw(st.sampled_from(["", "  "]))
        tail = draw(st.sampled_from(["", " ", "\r"]))
        lines.append(lead + "".join(t + b for t, b in zip(tokens, [*blanks, tail], strict=True)))
    return "\n".join(lines).rstrip().encode()


@settings(max_examples=150, deadline=None)
@given(_plain_data())
def test_plain_data_parses_in_c_as_polars_parses_it(data: bytes) -> None:
    """The C fast path and the polars path give the same columns, types included."""
    plain = swf_module._plain_columns(data)
    assert plain is not None
    csv = swf_module._csv_columns(data)
    assert csv is not None
    for j in range(1, 19):
        assert plain[j].dtype == csv[j].dtype == (np.float64 if j in (6, 7) else np.int64)
        np.testing.assert_array_equal(plain[j], csv[j], err_msg=f"f{j}")


@pytest.mark.parametrize(
    "token",
    ["12.0", "1e3", "nan", "inf", "0x10", "1,5", "--1", "+", "12a", "1234567890123456789"],
)
def test_data_that_is_not_plain_leaves_the_c_path(token: str) -> None:
    """What C does not vouch for goes to the slower paths, which accept it or name it."""
    fields = [str(j) for j in range(1, 19)]
    fields[8] = token  # requested time: a whole-number field
    assert swf_module._plain_columns(" ".join(fields).encode()) is None
    decimal = [str(j) for j in range(1, 19)]
    decimal[5] = token if token not in ("12.0", "1e3", "1234567890123456789") else "1e"
    assert swf_module._plain_columns(" ".join(decimal).encode()) is None
    for short in (b"1 2 3", b"1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19"):
        assert swf_module._plain_columns(short) is None


def test_trailing_blanks_and_no_final_newline(tmp_path: Path) -> None:
    text = HEADER + "\n".join(line(i, i) + "   " for i in range(1, 4))
    w = read_swf(swf(tmp_path, text))
    assert w.jobs["job_id"].tolist() == [1, 2, 3]


def test_read_swf_header_counts_data_lines(tmp_path: Path) -> None:
    text = HEADER + line(1, 0) + "\n\n; note\n" + line(2, 1) + "\n  \n" + line(3, 2) + "\n\n"
    head = read_swf_header(swf(tmp_path, text, "h.swf.gz"))
    assert head.n_data_lines == 3
    assert (head.max_procs, head.max_nodes, head.unix_start_time) == (16, 16, None)
    assert head.header["Comment"] == "note"
    plain = read_swf_header(swf(tmp_path, HEADER + line(1, 0) + "\n" + line(2, 0), "p.swf"))
    assert plain.n_data_lines == 2


# ---------------------------------------------------------------------------- writer


def _schedule(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    jobs = empty_jobs(n)
    jobs["job_id"] = np.arange(100, 100 + n)
    jobs["submit_s"] = np.arange(n) * 7
    jobs["run_s"] = 30 + np.arange(n) % 11
    jobs["walltime_s"] = 60
    jobs["n_tasks"] = 1 + np.arange(n) % 5
    jobs["cores_per_task"] = 1 + np.arange(n) % 2
    jobs["avg_cpu_s"] = np.where(np.arange(n) % 3 == 0, 552.21, 43307.0)
    jobs["used_mem_kib"] = -1
    start = jobs["submit_s"] + np.arange(n) % 4
    end = start + jobs["run_s"]
    start[3] = -1  # never started
    end[3] = -1
    return jobs, start, end


@pytest.mark.parametrize("name", ["out.swf", "out.swf.gz"])
def test_write_read_round_trip(tmp_path: Path, name: str) -> None:
    jobs, start, end = _schedule(40)
    machine = Machine.from_procs(16, 8)
    path = tmp_path / name
    write_swf(
        path, jobs, start, end, header={"Computer": "toy", "UnixStartTime": "1000"},
        machine=machine, comment="replayed with EASY",
    )  # fmt: skip
    w = read_swf(path)
    assert w.machine == machine
    assert w.unix_start_time == 1000
    assert w.header["Computer"] == "toy"
    assert "replayed with EASY" in w.header["Comment"]
    keep = np.ones(40, dtype=bool)
    keep[3] = False  # run -1 in the output: the never-started job is dropped on reading
    assert w.dropped == {"run_time_unknown": 1}
    for field in ("job_id", "submit_s", "walltime_s", "avg_cpu_s"):
        np.testing.assert_array_equal(w.jobs[field], jobs[field][keep], err_msg=field)
    sizes = jobs["n_tasks"] * jobs["cores_per_task"]
    np.testing.assert_array_equal(w.jobs["n_tasks"], sizes[keep])
    np.testing.assert_array_equal(w.jobs["recorded_wait_s"], (start - jobs["submit_s"])[keep])
    np.testing.assert_array_equal(w.jobs["run_s"], (end - start)[keep])


def test_writer_output_is_plain_18_field_swf(tmp_path: Path) -> None:
    jobs, start, end = _schedule(6)
    path = tmp_path / "out.swf"
    write_swf(path, jobs, start, end)
    lines = path.read_text().splitlines()
    data = [ln.split() for ln in lines if not ln.startswith(";")]
    assert len(data) == 6
    assert all(len(fields) == 18 for fields in data)
    assert data[0][5] == "552.21" and data[1][5] == "43307"  # compact field 6
    assert data[3][2:4] == ["-1", "-1"]  # never started: wait and run unknown
    assert data[0][2] == "0" and data[1][3] == str(end[1] - start[1])
    assert "; MaxJobs: 6" in lines


def test_writer_sorts_by_submit_and_checks_shapes(tmp_path: Path) -> None:
    jobs, start, end = _schedule(5)
    order = np.array([4, 2, 0, 3, 1])
    path = tmp_path / "out.swf"
    write_swf(path, jobs[order], start[order], end[order], machine=Machine(1, 8))
    assert read_swf(path).jobs["job_id"].tolist() == [100, 101, 102, 104]
    with pytest.raises(ValueError, match="must match"):
        write_swf(path, jobs, start[:2], end)
    with pytest.raises(TypeError):
        write_swf(path, np.zeros(5), start, end)


def test_write_workload_round_trip_keeps_every_column(tmp_path: Path) -> None:
    rows = [
        line(i, 5 * i, f3=i % 3 - 1, f6=f"{i}.75", f7=i * 10, f11=i % 2, f17=i - 1, f18=4)
        for i in range(1, 30)
    ]
    text = "; Computer: toy\n; UnixStartTime: 99\n" + HEADER + "\n".join(rows) + "\n"
    original = read_swf(swf(tmp_path, text))
    out = tmp_path / "again.swf.gz"
    write_workload_swf(out, original, comment="copy")
    back = read_swf(out)
    np.testing.assert_array_equal(back.jobs, original.jobs)
    assert back.machine == original.machine
    assert back.unix_start_time == 99
    assert back.header["Computer"] == "toy"
    assert back.header["Comment"] == "copy"


def test_write_workload_of_multicore_tasks(tmp_path: Path) -> None:
    jobs = empty_jobs(3)
    jobs["job_id"] = [1, 2, 3]
    jobs["submit_s"] = [0, 0, 4]
    jobs["run_s"] = [10, 0, 7]
    jobs["walltime_s"] = [20, 5, 7]
    jobs["n_tasks"] = [1, 2, 3]
    jobs["cores_per_task"] = [4, 1, 2]
    jobs["mem_mib_per_task"] = [1000, 0, 3]
    workload = Workload(name="gen", jobs=jobs, machine=Machine(n_nodes=2, cores_per_node=4))
    out = tmp_path / "gen.swf"
    write_workload_swf(out, workload)
    data = [ln.split() for ln in out.read_text().splitlines() if not ln.startswith(";")]
    assert [row[7] for row in data] == ["4", "2", "6"]  # processors = tasks x cores
    assert [row[9] for row in data] == ["256000", "-1", "1536"]  # KB per processor
    assert [row[2] for row in data] == ["-1", "-1", "-1"]  # no recorded wait
    back = read_swf(out)
    assert back.jobs["n_tasks"].tolist() == [4, 2, 6]
    assert back.jobs["run_s"].tolist() == [10, 0, 7]
    assert back.machine.total_cores == 8
    assert back.unix_start_time is None


# ------------------------------------------------------------------------ real logs

# The trace folder's MANIFEST counts (the archive's cleaned logs), re-checked with awk.
REAL = {
    "KTH-SP2-1996-2.1-cln": dict(
        lines=28476, procs=100, nodes=100, dropped={"size_unknown_or_zero": 1},
        changed={"run_exceeds_walltime": 475},
    ),
    "SDSC-SP2-1998-4.2-cln": dict(
        lines=59715, procs=128, nodes=128, dropped={"run_time_unknown": 5671},
        changed={"walltime_from_run_time": 35, "run_exceeds_walltime": 4134},
    ),
    "CTC-SP2-1996-3.1-cln": dict(
        lines=77222, procs=338, nodes=338, dropped={},
        changed={
            "size_from_allocated": 77222, "walltime_from_run_time": 6,
            "run_exceeds_walltime": 7174,
        },
    ),
    "HPC2N-2002-2.2-cln": dict(
        lines=202871, procs=240, nodes=240, dropped={},
        changed={"run_exceeds_walltime": 14817},
    ),
    "SDSC-BLUE-2000-4.2-cln": dict(
        lines=243306, procs=1152, nodes=144, dropped={"run_time_unknown": 10744},
        changed={"run_exceeds_walltime": 23434},
    ),
}  # fmt: skip
# Not an archive log: RLScheduler's synthetic Lublin log, checked when it is there.
EXTRA = {
    "lublin_256": dict(
        lines=10000, procs=256, nodes=256, dropped={},
        changed={"size_from_allocated": 10000, "walltime_from_run_time": 10000},
    ),
}  # fmt: skip


@pytest.mark.trace
def test_every_real_log_loads_and_accounts_for_every_line(trace_dir: Path) -> None:
    paths = sorted(trace_dir.glob("*.swf.gz"))
    assert paths, f"no *.swf.gz in {trace_dir}"
    for path in paths:
        w = read_swf(path)
        head = read_swf_header(path)
        assert w.skipped_lines == 0, path.name
        assert len(w) > 0, path.name
        accounted(w, head.n_data_lines)
        submits = w.jobs["submit_s"]
        assert np.all(submits[1:] >= submits[:-1]), path.name
        assert int(w.jobs["n_tasks"].max()) <= w.machine.total_cores, path.name


@pytest.mark.trace
@pytest.mark.parametrize("name", sorted(REAL | EXTRA))
def test_real_log_counts_match_the_manifest(trace_dir: Path, name: str) -> None:
    expected = (REAL | EXTRA)[name]
    path = trace_dir / f"{name}.swf.gz"
    if name in EXTRA and not path.exists():
        pytest.skip(f"{path.name} is not an archive log; put it in HTCSIM_TRACE_DIR to check it")
    w = read_swf(path)
    assert len(w) + sum(w.dropped.values()) == expected["lines"]
    assert w.machine.total_cores == expected["procs"]
    assert w.machine.n_nodes == expected["nodes"]
    assert dict(w.dropped) == expected["dropped"]
    assert dict(w.changed) == expected["changed"]


@pytest.mark.trace
def test_real_log_details(trace_dir: Path) -> None:
    ctc = read_swf(trace_dir / "CTC-SP2-1996-3.1-cln.swf.gz")
    assert ctc.changed["size_from_allocated"] == len(ctc)  # field 8 is -1 on every line
    assert ctc.header["MaxNodes"].startswith("338 (batch partition")
    hpc2n = read_swf(trace_dir / "HPC2N-2002-2.2-cln.swf.gz")
    assert int(hpc2n.jobs["n_tasks"].max()) == 200
    assert int(hpc2n.jobs["submit_s"][0]) == 342072
    assert hpc2n.jobs["avg_cpu_s"][1] == 552.21
    sdsc = read_swf(trace_dir / "SDSC-SP2-1998-4.2-cln.swf.gz")
    assert int(sdsc.jobs["submit_s"][0]) == 566129
    assert np.count_nonzero(sdsc.jobs["run_s"] == 0) == 10  # run 0 is a valid job


@pytest.mark.trace
def test_the_kth_excerpt_counts(kth_excerpt: Path) -> None:
    """The excerpt the suite derives from the full KTH log reads as its first
    5,000 records: nothing dropped, the full log's machine."""
    w = read_swf(kth_excerpt)
    assert len(w) == 5000 and dict(w.dropped) == {}
    assert dict(w.changed) == {"run_exceeds_walltime": 71}
    assert (w.machine.total_cores, w.machine.n_nodes) == (100, 100)
    assert w.header["Note"].startswith("an excerpt of KTH-SP2-1996-2.1-cln.swf")


@pytest.mark.trace
def test_real_log_round_trip(kth_excerpt: Path, trace_dir: Path, tmp_path: Path) -> None:
    w = read_swf(kth_excerpt)
    start = w.jobs["submit_s"] + w.jobs["recorded_wait_s"]
    end = start + w.jobs["run_s"]
    out = tmp_path / "kth.swf.gz"
    write_swf(out, w.jobs, start, end, header=w.header, machine=w.machine)
    back = read_swf(out)
    for field in ("job_id", "submit_s", "n_tasks", "walltime_s", "run_s", "user_id"):
        np.testing.assert_array_equal(back.jobs[field], w.jobs[field], err_msg=field)
    assert back.unix_start_time == w.unix_start_time
    assert back.header["Note"].startswith(w.header["Note"])
