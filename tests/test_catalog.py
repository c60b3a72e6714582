"""Trace catalog: folders searched, listing, name resolution, download logic."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import pytest

from htcsim.workload import catalog
from htcsim.workload.catalog import (
    ARCHIVE_URL,
    KNOWN_LOGS,
    TraceFetchError,
    TraceInfo,
    fetch_trace,
    find_trace,
    list_traces,
    trace_dirs,
)

SWF_TEXT = (
    "; Version: 2.2\n"
    "; MaxNodes: 338 (batch partition; 512 total)\n"
    "; MaxProcs: 338\n"
    ";\n"
    "    1     0  5  10  4 -1 -1  4  20 -1 1 1 1 -1 1 -1 -1 -1\n"
    "\n"
    "; a comment among the data\n"
    "    2     3  5  10  4 -1 -1  4  20 -1 1 1 1 -1 1 -1 -1 -1\n"
    "    3     3  5  10  4 -1 -1  4  20 -1 1 1 1 -1 1 -1 -1 -1\n"
)


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A working directory with ./traces, and a separate HTCSIM_TRACE_DIR."""
    work = tmp_path / "work"
    local = work / "traces"
    shared = tmp_path / "shared"
    local.mkdir(parents=True)
    shared.mkdir()
    (local / "Toy-Local-1.swf").write_text(SWF_TEXT)
    (shared / "KTH-SP2-1996-2.1-cln.swf.gz").write_bytes(gzip.compress(SWF_TEXT.encode()))
    (shared / "lublin_256.swf").write_text("; MaxNodes: 256\n" + SWF_TEXT.split(";\n", 1)[1])
    (shared / "README.md").write_text("not a log")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HTCSIM_TRACE_DIR", str(shared))
    return local, shared


def test_trace_dirs_local_then_env_deduplicated(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    local, shared = folders
    assert [p.resolve() for p in trace_dirs()] == [local.resolve(), shared.resolve()]
    monkeypatch.setenv("HTCSIM_TRACE_DIR", str(local))  # same folder as ./traces
    assert [p.resolve() for p in trace_dirs()] == [local.resolve()]
    monkeypatch.setenv("HTCSIM_TRACE_DIR", str(shared / "missing"))
    assert [p.resolve() for p in trace_dirs()] == [local.resolve()]
    monkeypatch.delenv("HTCSIM_TRACE_DIR")
    assert trace_dirs() == [Path("traces")]


def test_list_traces_reads_headers_and_counts_lines(folders: tuple[Path, Path]) -> None:
    local, shared = folders
    infos = {info.name: info for info in list_traces()}
    assert set(infos) == {"Toy-Local-1", "KTH-SP2-1996-2.1-cln", "lublin_256"}
    kth = infos["KTH-SP2-1996-2.1-cln"]
    assert kth == TraceInfo(
        name="KTH-SP2-1996-2.1-cln",
        path=shared / "KTH-SP2-1996-2.1-cln.swf.gz",
        n_jobs=3,
        max_procs=338,
        max_nodes=338,
        size_bytes=(shared / "KTH-SP2-1996-2.1-cln.swf.gz").stat().st_size,
    )
    assert infos["Toy-Local-1"].path == Path("traces") / "Toy-Local-1.swf"
    assert (infos["lublin_256"].max_procs, infos["lublin_256"].max_nodes) == (None, 256)
    assert [info.name for info in list_traces([shared])] == ["KTH-SP2-1996-2.1-cln", "lublin_256"]
    assert list_traces([local / "nope"]) == []


def test_find_trace_by_path_name_stem_short_name_and_prefix(
    folders: tuple[Path, Path],
) -> None:
    local, shared = folders
    kth = shared / "KTH-SP2-1996-2.1-cln.swf.gz"
    assert find_trace(kth) == kth
    assert find_trace(str(kth)) == kth
    assert find_trace("KTH-SP2-1996-2.1-cln.swf.gz") == kth
    assert find_trace("KTH-SP2-1996-2.1-cln") == kth
    assert find_trace("KTH-SP2") == kth  # KNOWN_LOGS short name
    assert find_trace("kth-sp2") == kth
    assert find_trace("lublin") == shared / "lublin_256.swf"  # unique prefix
    assert find_trace("Toy-Local-1").resolve() == (local / "Toy-Local-1.swf").resolve()


def test_find_trace_ambiguous_prefix(folders: tuple[Path, Path]) -> None:
    _, shared = folders
    (shared / "KTH-SP2-1996-2.1-cln.first5000.swf.gz").write_bytes(b"")
    assert find_trace("KTH-SP2") == shared / "KTH-SP2-1996-2.1-cln.swf.gz"  # known name wins
    with pytest.raises(ValueError, match="ambiguous"):
        find_trace("KTH-SP2-1996")


def test_find_trace_not_found_lists_folders_and_env(folders: tuple[Path, Path]) -> None:
    local, shared = folders
    with pytest.raises(FileNotFoundError) as info:
        find_trace("SDSC-BLUE")
    message = str(info.value)
    assert str(local.resolve()) in message
    assert str(shared.resolve()) in message
    assert "HTCSIM_TRACE_DIR" in message
    assert "fetch_trace('SDSC-BLUE')" in message


def test_known_logs_are_archive_paths() -> None:
    assert {"KTH-SP2", "SDSC-SP2", "CTC-SP2", "HPC2N", "SDSC-BLUE"} <= set(KNOWN_LOGS)
    assert KNOWN_LOGS["KTH-SP2"] == "l_kth_sp2/KTH-SP2-1996-2.1-cln.swf.gz"
    for short, path in KNOWN_LOGS.items():
        folder, name = path.split("/")
        assert folder.startswith("l_") and name.endswith(".swf.gz"), short
    assert ARCHIVE_URL == "https://www.cs.huji.ac.il/labs/parallel/workload"


# -------------------------------------------------------------------------- fetch_trace


def _client(status: int, body: bytes, seen: list[str]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(status, content=body)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_fetch_trace_downloads_into_place(tmp_path: Path) -> None:
    body = gzip.compress(SWF_TEXT.encode())
    seen: list[str] = []
    dest = tmp_path / "traces"
    with _client(200, body, seen) as client:
        path = fetch_trace("hpc2n", dest, client=client)
        assert path == dest / "HPC2N-2002-2.2-cln.swf.gz"
        assert path.read_bytes() == body
        assert seen == [f"{ARCHIVE_URL}/l_hpc2n/HPC2N-2002-2.2-cln.swf.gz"]
        assert fetch_trace("HPC2N", dest, client=client) == path  # present: no download
        assert len(seen) == 1
        fetch_trace("HPC2N", dest, client=client, overwrite=True)
        assert len(seen) == 2
    assert [p.name for p in dest.iterdir()] == [path.name]  # no temporary file left


def test_fetch_trace_http_error_names_the_url(tmp_path: Path) -> None:
    seen: list[str] = []
    dest = tmp_path / "traces"
    with _client(404, b"not here", seen) as client, pytest.raises(TraceFetchError) as info:
        fetch_trace("KTH-SP2", dest, client=client)
    assert f"{ARCHIVE_URL}/l_kth_sp2/KTH-SP2-1996-2.1-cln.swf.gz" in str(info.value)
    assert "404" in str(info.value)
    assert list(dest.iterdir()) == []


def test_fetch_trace_rejects_a_page_that_is_not_gzip(tmp_path: Path) -> None:
    seen: list[str] = []
    with (
        _client(200, b"<html>moved</html>", seen) as client,
        pytest.raises(TraceFetchError, match="did not return a gzip file"),
    ):
        fetch_trace("CTC-SP2", tmp_path, client=client)
    assert list(tmp_path.iterdir()) == []


def test_fetch_trace_transport_failure_names_the_url(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("network unreachable", request=request)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    with client, pytest.raises(TraceFetchError, match=r"l_sdsc_sp2/SDSC-SP2-1998-4\.2-cln"):
        fetch_trace("SDSC-SP2", tmp_path, client=client)


def test_fetch_trace_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown log 'Mars-1'") as info:
        fetch_trace("Mars-1", tmp_path)
    for short in ("KTH-SP2", "SDSC-SP2", "CTC-SP2", "HPC2N", "SDSC-BLUE"):
        assert short in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.trace
def test_list_real_traces(trace_dir: Path, kth_excerpt: Path) -> None:
    infos = {info.name: info for info in catalog.list_traces([trace_dir, kth_excerpt.parent])}
    assert infos["HPC2N-2002-2.2-cln"].n_jobs == 202871
    assert infos["HPC2N-2002-2.2-cln"].max_procs == 240
    assert infos["CTC-SP2-1996-3.1-cln"].max_nodes == 338
    assert infos["SDSC-BLUE-2000-4.2-cln"].max_procs == 1152
    assert infos["KTH-SP2-1996-2.1-cln.first5000"].n_jobs == 5000
    if "lublin_256" in infos:  # RLScheduler's synthetic log, when it is there
        assert infos["lublin_256"].max_procs is None
