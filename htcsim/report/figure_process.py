"""The process that draws results' figures while the caller writes their tables.

Drawing three PNGs costs about a second, half of it importing matplotlib; a
process of its own does both beside the process that replays and writes
tables. What crosses is ``htcsim.report.figures``' small records; this module
imports nothing heavy, so that neither side imports what it does not use:
the caller never imports matplotlib, the drawing process never polars.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

    from htcsim.report.figures import ResultFigures
    from htcsim.schedule import SimResult


class FigureProcess:
    """A spawned process that draws results' figures (``htcsim.report.plots``).

    It starts importing matplotlib as soon as it is made: a caller that will
    plot makes it before its replay (``htcsim simulate`` does), so that the
    figures are ready about when the tables are. Spawned, not forked: polars
    runs a thread pool, and forking a threaded process can deadlock the
    child. Close it (or use it as a context manager).
    """

    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )
        self._pool.submit(_import_plots)  # starts the process, which imports matplotlib

    def draw(self, result: SimResult, series: pl.DataFrame, out: Path) -> Future[dict[str, Path]]:
        """Draw ``result``'s figures (``series``: its time series) into ``out``;
        their file name -> path when done, or the drawing's error."""
        from htcsim.report.figures import result_figures

        return self._pool.submit(_draw, result_figures(result, series), out)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> FigureProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _import_plots() -> None:
    import htcsim.report.plots  # noqa: F401  (matplotlib: the slow part of a first figure)


def _draw(figures: ResultFigures, out: Path) -> dict[str, Path]:
    from htcsim.report.plots import draw_figures

    return draw_figures(figures, out)
