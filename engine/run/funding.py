"""Funding of a perpetual run: read once, laid on each window's simulation grid, booked per trade.

With ``data.market=perp`` the plan reads the winners' funding rates over the run
(``engine.data.funding.funding_read``: ``symbol``, ``time`` (ms), ``rate``, ``mark``; null mark = the
bar's open at or after that time). Per window, :func:`funding_grid` gives the kernel one number per
bar and column: the sum over the funding times inside the bar (``ts[i] <= time < ts[i + 1]``) of
``rate x mark``; the kernel charges ``shares x that`` to the position held after the bar's open row
(a long pays a positive rate, a short receives it; docs/LONG_SHORT.md). :func:`funding_records`
turns a window's payments into rows that :func:`engine.run.trades.trades_from_orders` books on
the trade that held the position.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from engine.config import RunConfig
from engine.core.errors import DataError
from engine.data.lakehouse import Lakehouse
from engine.data.panel import Panel

log = logging.getLogger(__name__)


PERCENT_LIKE = 0.001
"""A median |rate| of 0.1 % per funding interval or more (110 % a year at 8 h) looks like percentages."""


def funding_units_warn(frame: pl.DataFrame) -> list[str]:
    """Warn (one line) about the symbols of ``frame`` whose median |rate| is :data:`PERCENT_LIKE` or more; return them.

    Real perpetuals' medians are near 0.0001 (0.01 % per 8 h); 0.01 is that rate typed in percent.
    Such rates are read (a short, extreme history can have them), not refused.
    """
    if frame.height == 0:
        return []
    med = (
        frame.group_by("symbol")
        .agg(pl.col("rate").abs().median().alias("m"))
        .filter(pl.col("m") >= PERCENT_LIKE)
        .sort("symbol")
    )
    if med.height:
        shown = ", ".join(f"{s} {m:.4g}" for s, m in med.iter_rows())
        log.warning(
            "funding rates that look like percentages for %d symbol(s) (median |rate| per interval: %s): rates are "
            "fractions (0.0001 = 0.01 %%); if your files hold percentages, divide them by 100",
            med.height,
            shown,
        )
    return med.get_column("symbol").to_list()


def funding_load(
    cfg: RunConfig, symbols: list[str], start_ms: int, end_ms: int, checked: Lakehouse | None = None
) -> pl.DataFrame:
    """Return the funding rates of ``symbols`` over the run; a perp run without any is refused (one line).

    With ``data.funding_missing=zero`` the reader has said (a warning line) that missing funding is
    taken as zero: an empty frame is then no funding at all. ``checked``: the plan's store, whose
    funding the run's data step checked for every symbol (``funding_read``'s ``checked``).
    """
    from engine.data.funding import funding_read  # type: ignore[import-not-found,unused-ignore]

    frame: pl.DataFrame = funding_read(cfg, symbols, start_ms, end_ms, checked=checked)
    funding_units_warn(frame)  # rates typed in percent: named in a warning every run
    assumed_zero = getattr(cfg.data, "funding_missing", "error") == "zero"  # the reader warned: funding 0
    if frame.height == 0 and symbols and not assumed_zero:
        msg = (
            f"data.market=perp but no funding rate of the winners ({', '.join(symbols[:3])}, ...) between the run's "
            "first and last bar: ingest the funding data of this exchange (task=ingest data.market=perp)"
        )
        raise DataError(msg)
    return frame


class FundingIndex:
    """A run's funding rates split once by symbol, laid on each window's grid by :meth:`grid`.

    Built once per run from :func:`funding_load`'s frame: the rows grouped by symbol, each group in
    the frame's own order (so a window sums the same payments in the same order as a filter of the
    whole frame would), and per panel the ``rate x mark`` of a symbol whose null marks are filled
    (:func:`_open_at_or_after`: elementwise, so the same for the whole span as for a window's part).
    When every symbol's times are sorted (as :func:`engine.data.funding.funding_read` gives them),
    a window's rows of every column are found with two binary searches on one key.
    """

    def __init__(self, frame: pl.DataFrame) -> None:
        # the frame's rows grouped by symbol, the groups in the order their symbols first appear and the
        # rows of a group in the frame's order (a stable sort on the group's number)
        sym = frame.get_column("symbol").cast(pl.String) if frame.height else pl.Series("symbol", [], pl.String)
        names = sym.unique(maintain_order=True)  # in the order they first appear
        codes = pl.int_range(0, names.len(), dtype=pl.Int64, eager=True)
        row_group = np.asarray(sym.replace_strict(names, codes, return_dtype=pl.Int64).to_numpy(), dtype=np.int64)
        perm = np.argsort(row_group, kind="stable")
        self._symbols = names.to_list()
        self._sid = {s: i for i, s in enumerate(self._symbols)}
        self._t = _values(frame, "time", np.int64)[perm]
        self._rate = _values(frame, "rate", np.float64)[perm]
        self._mark = _values(frame, "mark", np.float64)[perm]
        sizes = np.bincount(row_group, minlength=names.len())
        self._off = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self._row_sid = np.repeat(np.arange(names.len()), sizes)
        self._amount = self._rate * self._mark  # NaN where the mark is null (filled per panel)
        self._filled: dict[int, tuple[Panel, np.ndarray, set[int]]] = {}  # by id(panel); the panel kept alive
        steps = np.diff(self._t)
        self._ordered = bool(np.all((steps >= 0) | (np.diff(self._row_sid) != 0)))
        self._shift = int(self._t.min()) if self._t.size else 0
        self._span = int(self._t.max()) - self._shift + 1 if self._t.size else 1
        self._key = (self._t - self._shift) + self._row_sid.astype(np.int64) * self._span

    def _amounts(self, panel: Panel, idx: np.ndarray) -> np.ndarray:
        """Return ``rate x mark`` of rows ``idx``, null marks filled from ``panel`` (once per panel and symbol)."""
        nan = np.isnan(self._mark[idx])
        out: np.ndarray
        if not nan.any():
            out = self._amount[idx]
            return out
        _, full, done = self._filled.setdefault(id(panel), (panel, self._amount.copy(), set()))
        for sid in np.unique(self._row_sid[idx[nan]]).tolist():
            if sid not in done:
                a, b = int(self._off[sid]), int(self._off[sid + 1])
                mark, t = self._mark[a:b], self._t[a:b]
                full[a:b] = self._rate[a:b] * np.where(
                    np.isnan(mark), _open_at_or_after(panel, self._symbols[sid], t), mark
                )
                done.add(sid)
        out = full[idx]
        return out

    def _rows(self, js: list[int], sids: list[int], first: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the rows with time in ``[first, end)`` of symbols ``sids`` and the column ``js`` of each."""
        sid = np.asarray(sids, dtype=np.int64)
        if self._ordered:  # each symbol's rows inside the window are one run of its sorted rows
            lo = np.searchsorted(self._key, sid * self._span + min(max(first - self._shift, 0), self._span))
            hi = np.searchsorted(self._key, sid * self._span + min(max(end - self._shift, 0), self._span))
            counts = hi - lo
            idx = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
            return idx, np.repeat(np.asarray(js, dtype=np.int64), counts)
        parts, cols = [], []
        for j, k in zip(js, sid.tolist(), strict=True):
            a, b = int(self._off[k]), int(self._off[k + 1])
            t = self._t[a:b]
            rows = a + np.flatnonzero((t >= first) & (t < end))
            parts.append(rows)
            cols.append(np.full(rows.size, j, dtype=np.int64))
        return np.concatenate(parts or [np.empty(0, np.int64)]), np.concatenate(cols or [np.empty(0, np.int64)])

    def grid(self, panel: Panel, columns: list[str], ts: np.ndarray, bar_ms: int) -> np.ndarray:
        """Return (n_bars, k) funding per share: the sum of ``rate x mark`` of the funding times inside each bar.

        A null mark is the symbol's open on ``panel`` at or after the funding time (its last close
        when no bar follows). Funding times outside the window's bars are left out.
        """
        n = ts.size
        out = np.zeros((n, len(columns)))
        if not n:
            return out
        js, sids, seen = [], [], set()
        for j, sym in enumerate(columns):
            if sym in self._sid and sym not in seen:
                seen.add(sym)
                js.append(j)
                sids.append(self._sid[sym])
        idx, col = self._rows(js, sids, int(ts[0]), int(ts[-1]) + bar_ms)
        if idx.size:
            bar = np.searchsorted(ts, self._t[idx], side="right") - 1
            np.add.at(out, (bar, col), self._amounts(panel, idx))
        return out


def _values(frame: pl.DataFrame, name: str, dtype: type[np.generic]) -> np.ndarray:
    """Return a column of the frame as ``dtype`` (nulls as NaN), empty for an empty frame."""
    if not frame.height:
        return np.empty(0, dtype=dtype)
    col = frame.get_column(name)
    out: np.ndarray = (col.fill_null(np.nan) if dtype is np.float64 else col).to_numpy().astype(dtype)
    return out


def funding_grid(frame: pl.DataFrame, panel: Panel, columns: list[str], ts: np.ndarray, bar_ms: int) -> np.ndarray:
    """Return :meth:`FundingIndex.grid` of ``frame`` (one window; a run builds its index once)."""
    return FundingIndex(frame).grid(panel, columns, ts, bar_ms)


def _open_at_or_after(panel: Panel, symbol: str, t: np.ndarray) -> np.ndarray:
    """Return the symbol's open of its first bar at or after each time (its last close when none follows)."""
    c = panel.col(symbol)
    ok = np.isfinite(panel.open[:, c])
    ts, opens, closes = panel.ts_ms[ok], panel.open[ok, c], panel.close[ok, c]
    at = np.searchsorted(ts, t, side="left")
    return np.where(at < ts.size, opens[np.minimum(at, ts.size - 1)], closes[-1] if ts.size else np.nan)


def funding_records(paid: np.ndarray, window: int, ts: np.ndarray, columns: list[str]) -> dict[str, np.ndarray]:
    """Return a window's funding payments as rows: window, ``idx`` (2 x bar: after the bar's open row), time, symbol, amount."""
    bar, col = np.nonzero(paid)
    order = np.lexsort((col, bar))
    bar, col = bar[order], col[order]
    return {
        "window": np.full(bar.size, window, dtype=np.int64),
        "idx": 2 * bar.astype(np.int64),
        "timestamp": ts[bar].astype(np.int64),
        "symbol": np.asarray(columns, dtype=object)[col],
        "amount": paid[bar, col],
    }


def funding_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Return a book's funding payments of every window as one set of columns (empty when none)."""
    keys = ("window", "idx", "timestamp", "symbol", "amount")
    if not parts:
        empty = {k: np.empty(0, dtype=np.int64) for k in keys}
        return empty | {"symbol": np.empty(0, dtype=object), "amount": np.empty(0)}
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def funding_per_trade(orders: dict[str, np.ndarray], funding: dict[str, np.ndarray], trade: np.ndarray) -> np.ndarray:
    """Return each order's trade's funding: every payment goes to the trade of its symbol's last fill before it.

    ``orders`` carry ``window`` and ``idx`` (2 x bar + row) in simulation order, ``trade`` the trade
    number of each order. A payment after a fill of row 0 of its bar (``idx`` 2 x bar) comes after the
    fills of that open row and before the rest of the bar's.
    """
    m = int(trade.max()) + 1 if trade.size else 0
    out = np.zeros(m)
    sym = np.asarray(orders["symbol"], dtype=object).astype(str)
    key = np.asarray(orders["window"], dtype=np.int64) * (1 << 40) + np.asarray(orders["idx"], dtype=np.int64)
    fkey = np.asarray(funding["window"], dtype=np.int64) * (1 << 40) + np.asarray(funding["idx"], dtype=np.int64)
    fsym = np.asarray(funding["symbol"], dtype=object).astype(str)
    for s in np.unique(fsym):
        mine = np.flatnonzero(sym == s)  # this symbol's fills in simulation order (keys non-decreasing)
        pay = fsym == s
        last = np.searchsorted(key[mine], fkey[pay], side="right") - 1
        if (last < 0).any():
            msg = f"funding paid on {s} before any fill of it; report this as an engine bug"
            raise RuntimeError(msg)
        np.add.at(out, trade[mine[last]], np.asarray(funding["amount"], dtype=np.float64)[pay])
    return out
