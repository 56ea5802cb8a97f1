"""Winner slices: DuckDB reads the requested symbols' bars, numpy aligns them on one time grid."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from engine.core.units import interval_ms
from engine.data.lakehouse import DATA_FILE, Lakehouse
from engine.data.sql import sql_batches

FIELDS = ("open", "high", "low", "close", "volume")
SLICE_BATCH = 256  # symbols per DuckDB winner-slice query


@dataclass(frozen=True)
class Panel:
    """Dense (n_bars, n_symbols) arrays on the grid ``ts_ms`` (bar open times); NaN = no bar."""

    ts_ms: np.ndarray
    symbols: list[str]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def rows(self, start_ms: int, end_ms: int) -> slice:
        """Row slice of bars with open time in ``[start_ms, end_ms)``."""
        lo, hi = np.searchsorted(self.ts_ms, [start_ms, end_ms])
        return slice(int(lo), int(hi))

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols)}

    def col(self, symbol: str) -> int:
        """Column index of ``symbol``."""
        return self._index[symbol]

    def cols(self, symbols: list[str]) -> np.ndarray:
        """Column indices of ``symbols`` (int64, in their order)."""
        return np.fromiter(map(self._index.__getitem__, symbols), np.int64, len(symbols))


def panel_load(
    lakehouse: Lakehouse,
    kind: str,
    interval: str,
    symbols: list[str],
    start_ms: int,
    end_ms: int,
    reuse: Panel | None = None,
) -> Panel:
    """Return the winner slice of ``symbols`` over ``[start_ms, end_ms)`` as a dense panel.

    Only the requested symbols' partition files are handed to DuckDB (``sql/winner_slice.sql``),
    so the cost follows the winners, not the universe. ``reuse``: a panel of the same store, kind
    and interval already loaded (the run's, for the survivorship audit's plan); on the same time
    grid its columns are copied for the symbols it holds and only the others are read.
    """
    step = interval_ms(interval)
    lo = start_ms // step * step
    grid = np.arange(lo, end_ms, step, dtype=np.int64)
    shape = (grid.size, len(symbols))
    arrays = {f: np.full(shape, np.nan) for f in FIELDS}
    storage = lakehouse.storage
    index = {s: i for i, s in enumerate(symbols)}
    held = _copy_held(reuse, grid, index, arrays)
    todo = [s for s in symbols if s not in held]
    for k in range(0, len(todo), SLICE_BATCH):  # one query per batch: the Arrow table stays small
        batch = todo[k : k + SLICE_BATCH]
        files = [
            storage.scan_url(p)
            for s in batch
            if storage.exists(p := lakehouse.partition(kind, interval, s) / DATA_FILE)
        ]
        if not files or not grid.size:
            continue
        params: dict[str, object] = {"files": files, "symbols": batch, "start": int(lo), "end": int(end_ms)}
        # streamed in no order: each row goes to its own cell (a symbol's bars are unique in time, the
        # bars contract), so the panel is the same and DuckDB never sorts or holds the whole slice
        for part in sql_batches("winner_slice", params, storage=storage):
            # column per row without a Python string per row: the symbol column's dictionary, mapped once
            codes = part.column("symbol").dictionary_encode()
            names = np.array([index[s] for s in codes.dictionary.to_pylist()], dtype=np.int64)
            cols = names[_numpy(codes.indices)]
            rows = (_numpy(part.column("ts_ms")) - lo) // step
            for f in FIELDS:
                arrays[f][rows, cols] = _numpy(part.column(f))
    return Panel(grid, list(symbols), **arrays)


def panels_load(
    lakehouse: Lakehouse,
    kind: str,
    interval: str,
    symbols: list[str],
    starts: list[int],
    end_ms: int,
    reuse: Panel | None = None,
) -> list[Panel]:
    """Return :func:`panel_load` of ``symbols`` from each of ``starts`` to ``end_ms``, with one read.

    The grid is regular (``interval`` steps from the start rounded down to a step), so the panel
    from a later start is the rows of the earliest one's from that start on, value for value: the
    widest span is read once and the others are copies of its rows (the first from the earliest start
    is the panel read itself: a single start costs what :func:`panel_load` does). ``reuse`` as in
    :func:`panel_load` (for the widest span).
    """
    step = interval_ms(interval)
    wide = panel_load(lakehouse, kind, interval, symbols, min(starts), end_ms, reuse)
    out, used = [], False
    for start in starts:
        r = int(np.searchsorted(wide.ts_ms, start // step * step, side="left"))
        if r == 0 and not used:
            out.append(wide)
            used = True
            continue
        arrays = {f: getattr(wide, f)[r:].copy() for f in FIELDS}
        out.append(Panel(wide.ts_ms[r:].copy(), list(symbols), **arrays))
    return out


def _numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Return an Arrow column as numpy, through polars (pyarrow's own ``to_numpy`` imports pandas: ~40 MB, ~0.4 s)."""
    return pl.Series(column).to_numpy()


def _copy_held(reuse: Panel | None, grid: np.ndarray, index: dict[str, int], arrays: dict[str, np.ndarray]) -> set[str]:
    """Copy the columns ``reuse`` holds into ``arrays`` (same grid only); return their symbols."""
    if reuse is None or not np.array_equal(reuse.ts_ms, grid):
        return set()
    held = [s for s in reuse.symbols if s in index]
    dst = np.array([index[s] for s in held], dtype=np.int64)
    src = reuse.cols(held)
    for f in FIELDS:
        arrays[f][:, dst] = getattr(reuse, f)[:, src]
    return set(held)
