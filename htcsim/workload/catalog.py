"""Where SWF logs live on this machine, what they hold, and how to fetch known ones.

Logs are data, not code: the project never commits them (their home is the Parallel
Workloads Archive). They are looked up in ``./traces`` and in the folder named by
``HTCSIM_TRACE_DIR``, which is what ``htcsim traces`` lists and what commands that
take a trace name resolve against.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from htcsim.workload.swf import read_swf_header

if TYPE_CHECKING:  # httpx is imported only when a log is fetched
    import httpx

__all__ = [
    "ARCHIVE_URL",
    "KNOWN_LOGS",
    "TRACE_DIR_ENV",
    "TraceFetchError",
    "TraceInfo",
    "fetch_trace",
    "find_trace",
    "list_traces",
    "trace_dirs",
]

TRACE_DIR_ENV = "HTCSIM_TRACE_DIR"

ARCHIVE_URL = "https://www.cs.huji.ac.il/labs/parallel/workload"

KNOWN_LOGS: dict[str, str] = {
    "KTH-SP2": "l_kth_sp2/KTH-SP2-1996-2.1-cln.swf.gz",
    "SDSC-SP2": "l_sdsc_sp2/SDSC-SP2-1998-4.2-cln.swf.gz",
    "CTC-SP2": "l_ctc_sp2/CTC-SP2-1996-3.1-cln.swf.gz",
    "HPC2N": "l_hpc2n/HPC2N-2002-2.2-cln.swf.gz",
    "SDSC-BLUE": "l_sdsc_blue/SDSC-BLUE-2000-4.2-cln.swf.gz",
    "LANL-CM5": "l_lanl_cm5/LANL-CM5-1994-4.1-cln.swf.gz",
    "SDSC-Par95": "l_sdsc_par/SDSC-Par-1995-3.1-cln.swf.gz",
    "SDSC-Par96": "l_sdsc_par/SDSC-Par-1996-3.1-cln.swf.gz",
    "NASA-iPSC": "l_nasa_ipsc/NASA-iPSC-1993-3.1-cln.swf.gz",
    "OSC-Clust": "l_osc/OSC-Clust-2000-3.1-cln.swf.gz",
    "Sandia-Ross": "l_sandia_ross/Sandia-Ross-2001-1.1-cln.swf.gz",
    "SDSC-DS": "l_sdsc_ds/SDSC-DS-2004-2.1-cln.swf.gz",
    "LPC-EGEE": "l_lpc/LPC-EGEE-2004-1.2-cln.swf.gz",
    "LLNL-Atlas": "l_llnl_atlas/LLNL-Atlas-2006-2.1-cln.swf.gz",
    "LLNL-Thunder": "l_llnl_thunder/LLNL-Thunder-2007-1.1-cln.swf.gz",
    "ANL-Intrepid": "l_anl_int/ANL-Intrepid-2009-1.swf.gz",
    "CEA-Curie": "l_cea_curie/CEA-Curie-2011-2.1-cln.swf.gz",
}
"""Short names of well-known PWA logs -> their path under :data:`ARCHIVE_URL`.

Cleaned (``-cln``) versions where the archive has one, as the literature uses;
ANL-Intrepid has no cleaned version.
"""

_SWF_SUFFIXES = (".swf.gz", ".swf")


class TraceFetchError(RuntimeError):
    """A known log could not be downloaded; the message names the URL."""


@dataclass(frozen=True)
class TraceInfo:
    """One log found on disk, as ``htcsim traces`` shows it."""

    name: str  # file name without .swf / .swf.gz
    path: Path
    n_jobs: int  # data lines in the file (before any job is dropped at load time)
    max_procs: int | None  # header MaxProcs, None when absent
    max_nodes: int | None  # header MaxNodes, None when absent
    size_bytes: int  # on disk (compressed size for .gz)


def _stem(path: Path) -> str:
    """``KTH-SP2-1996-2.1-cln`` for ``KTH-SP2-1996-2.1-cln.swf.gz``."""
    name = path.name
    for suffix in _SWF_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def trace_dirs() -> list[Path]:
    """Folders searched for logs: ``./traces`` (where :func:`fetch_trace` saves) and
    ``$HTCSIM_TRACE_DIR`` when it is set and exists; the same folder only once."""
    candidates = [Path("traces")]
    env = os.environ.get(TRACE_DIR_ENV)
    if env and Path(env).is_dir():
        candidates.append(Path(env))
    dirs: list[Path] = []
    seen: set[Path] = set()
    for folder in candidates:
        key = folder.resolve()
        if key not in seen:
            seen.add(key)
            dirs.append(folder)
    return dirs


def _trace_files(dirs: list[Path]) -> list[Path]:
    """``*.swf`` and ``*.swf.gz`` files of the existing folders, in folder then name order."""
    files: list[Path] = []
    seen: set[Path] = set()
    for folder in dirs:
        if not folder.is_dir():
            continue
        found = {p for pattern in ("*.swf", "*.swf.gz") for p in folder.glob(pattern)}
        for path in sorted(found, key=lambda p: p.name):
            key = path.resolve()
            if path.is_file() and key not in seen:
                seen.add(key)
                files.append(path)
    return files


def list_traces(dirs: list[Path] | None = None) -> list[TraceInfo]:
    """Every log in ``dirs`` (default :func:`trace_dirs`), from its header and a count of
    its data lines: fast enough to list a folder of large logs without parsing jobs."""
    infos: list[TraceInfo] = []
    for path in _trace_files(trace_dirs() if dirs is None else list(dirs)):
        head = read_swf_header(path)
        infos.append(
            TraceInfo(
                name=_stem(path),
                path=path,
                n_jobs=head.n_data_lines,
                max_procs=head.max_procs,
                max_nodes=head.max_nodes,
                size_bytes=path.stat().st_size,
            )
        )
    return infos


def find_trace(name_or_path: str | Path) -> Path:
    """Resolve a path, a file name, a stem or a short name to a log file.

    Tried in order: an existing path; an exact file name or stem in the trace folders;
    a :data:`KNOWN_LOGS` short name (``KTH-SP2``) by its archive file name; a stem
    prefix (case-insensitive) that matches one file only. An ambiguous prefix raises
    ``ValueError`` listing the candidates rather than picking one.
    """
    given = Path(name_or_path)
    if given.is_file():
        return given
    dirs = trace_dirs()
    files = _trace_files(dirs)
    text = str(name_or_path)
    key = text.lower()

    for path in files:
        if path.name.lower() == key or _stem(path).lower() == key:
            return path
    known = {short.lower(): archive_path for short, archive_path in KNOWN_LOGS.items()}
    if key in known:
        wanted = Path(known[key]).name.lower()
        for path in files:
            if path.name.lower() == wanted:
                return path
    matches = [path for path in files if _stem(path).lower().startswith(key)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(path.name for path in matches)
        raise ValueError(f"trace name {text!r} is ambiguous: it matches {names}")

    searched = ", ".join(str(folder.resolve()) for folder in dirs)
    env = os.environ.get(TRACE_DIR_ENV)
    env_note = f" ({TRACE_DIR_ENV}={env} is not a folder)" if env and not Path(env).is_dir() else ""
    hint = (
        f", or download it with htcsim.workload.catalog.fetch_trace({text!r})"
        if key in known
        else ""
    )
    raise FileNotFoundError(
        f"no SWF log {text!r}: not a file, and not found in {searched}{env_note}. "
        f"Set {TRACE_DIR_ENV} to the folder holding the logs{hint}."
    )


def fetch_trace(
    name: str,
    dest_dir: Path = Path("traces"),
    *,
    client: httpx.Client | None = None,
    overwrite: bool = False,
) -> Path:
    """Download the known log ``name`` from the archive into ``dest_dir``; return its path.

    The body is streamed to a temporary file in ``dest_dir`` and renamed into place only
    once complete (and, for ``.gz``, only if it starts like gzip, so an HTML error page
    served with status 200 is not saved as a log). A log already present is returned
    without a download unless ``overwrite``. ``client`` lets callers and tests supply
    their own transport; by default a client with a timeout that follows redirects.
    """
    short = {key.lower(): key for key in KNOWN_LOGS}.get(name.lower())
    if short is None:
        known = ", ".join(sorted(KNOWN_LOGS))
        raise ValueError(f"unknown log {name!r}; known logs: {known}")
    archive_path = KNOWN_LOGS[short]
    url = f"{ARCHIVE_URL}/{archive_path}"
    dest_dir = Path(dest_dir)
    target = dest_dir / Path(archive_path).name
    if target.exists() and not overwrite:
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)

    import httpx

    own_client = client is None
    http = client if client is not None else httpx.Client(timeout=60.0, follow_redirects=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as handle,
            http.stream("GET", url, follow_redirects=True) as response,
        ):
            response.raise_for_status()
            first = b""
            for chunk in response.iter_bytes():
                if len(first) < 2:
                    first += chunk[: 2 - len(first)]
                handle.write(chunk)
        if target.name.endswith(".gz") and first != b"\x1f\x8b":
            raise TraceFetchError(f"{short}: {url} did not return a gzip file")
        os.replace(tmp, target)
    except httpx.HTTPError as exc:
        raise TraceFetchError(f"could not download {short} from {url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
        if own_client:
            http.close()
    return target
