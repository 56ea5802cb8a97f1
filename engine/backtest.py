"""The walk-forward backtest: rank the universe lazily, then simulate each window's winners.

Flow per window (``_run_window_step``): winners = top-N of the window's ranking -> weights ->
lazy MTF fetch for the winners only -> ``_run_simulation`` on the winners' slice, carrying cash
and positions from the previous window so a symbol that stays a winner trades only its delta.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from engine.config import RunConfig
from engine.data.bars import interval_ms
from engine.data.ingest import IngestionService
from engine.data.lakehouse import Lakehouse, ranges_merge, store_open
from engine.data.sources.base import DataSource
from engine.errors import DataError, EngineError
from engine.exit_rules import ExitRules
from engine.metrics import equity_metrics, trading_metrics
from engine.panel import Panel, panel_load
from engine.progress import progress_iter
from engine.ranking import ranks_compute, weights_compute
from engine.signals import signals_compute, weights_from_signals
from engine.simulation.stage import AllocationContext, GridBook, SelectionContext, SimulationContext, SimulationStage
from engine.simulation.vbt import ORDER_REASONS, ORDER_SIDES, PriceBlock, SimResult
from engine.sql import sql_arrow
from engine.trades import TRADE_KINDS, window_trades
from engine.windows import DAY_MS, Window, windows_build

log = logging.getLogger(__name__)

STOP_KINDS = ("stop_loss", "take_profit", "trailing")

ORDER_SCHEMA = {
    "window": pl.Int64,
    "timestamp": pl.Datetime("ms", "UTC"),
    "symbol": pl.String,
    "side": pl.String,
    "size": pl.Float64,
    "price": pl.Float64,
    "fees": pl.Float64,
    "reason": pl.String,
}
TRADE_SCHEMA = {
    "window": pl.Int64,
    "symbol": pl.String,
    "entry_time": pl.Datetime("ms", "UTC"),
    "entry_price": pl.Float64,
    "exit_time": pl.Datetime("ms", "UTC"),
    "exit_price": pl.Float64,
    "exit_kind": pl.String,
    "ambiguous": pl.Boolean,
    "return": pl.Float64,
}


_OrderPart = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""One window's orders of a book: (window, bar open times, column names, order bars, vectorbt
order records, reason codes); kept as the simulator returned them, assembled at the end."""


def _orders_columns(parts: list[_OrderPart]) -> dict[str, np.ndarray]:
    """The orders of all windows as concatenated columns."""
    recs = np.concatenate([p[4] for p in parts])
    return {
        "window": np.concatenate([np.full(len(p[4]), p[0], dtype=np.int64) for p in parts]),
        "timestamp": np.concatenate([p[1][p[3]] for p in parts]),
        "symbol": np.concatenate([p[2][p[4]["col"]] for p in parts]),
        "side": recs["side"].astype(np.int64),
        "size": recs["size"],
        "price": recs["price"],
        "fees": recs["fees"],
        "reason": np.concatenate([p[5] for p in parts]).astype(np.int64),
    }


def _orders_frame(parts: list[_OrderPart]) -> pl.DataFrame:
    """All windows' orders of one book as one polars frame (built once, at the end)."""
    if not parts:
        return pl.DataFrame(schema=ORDER_SCHEMA)
    cols = _orders_columns(parts)
    sides = pl.Series(ORDER_SIDES, dtype=pl.String)
    reasons = pl.Series(ORDER_REASONS, dtype=pl.String)
    return pl.DataFrame(
        {
            "window": cols["window"],
            "timestamp": pl.Series(cols["timestamp"]).cast(pl.Datetime("ms", "UTC")),
            "symbol": pl.Series(cols["symbol"].tolist(), dtype=pl.String),
            "side": sides.gather(cols["side"]),
            "size": cols["size"],
            "price": cols["price"],
            "fees": cols["fees"],
            "reason": reasons.gather(cols["reason"]),
        },
        schema=ORDER_SCHEMA,
    )


def _trades_frame(parts: list[dict[str, np.ndarray]]) -> pl.DataFrame:
    """All windows' trades of one book as one polars frame (built once, at the end)."""
    if not parts:
        return pl.DataFrame(schema=TRADE_SCHEMA)
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return pl.DataFrame(
        {
            "window": cols["window"],
            "symbol": pl.Series(cols["symbol"].tolist(), dtype=pl.String),
            "entry_time": pl.Series(cols["entry_time"]).cast(pl.Datetime("ms", "UTC")),
            "entry_price": cols["entry_price"],
            "exit_time": pl.Series(cols["exit_time"]).cast(pl.Datetime("ms", "UTC")),
            "exit_price": cols["exit_price"],
            "exit_kind": pl.Series(TRADE_KINDS, dtype=pl.String).gather(cols["kind"]),
            "ambiguous": cols["ambiguous"],
            "return": cols["exit_price"] / cols["entry_price"] - 1.0,
        },
        schema=TRADE_SCHEMA,
    )


def _kind_counts(parts: list[dict[str, np.ndarray]]) -> dict[str, int]:
    """Number of trades per exit kind (every kind of ``TRADE_KINDS``, 0 where none)."""
    kinds = np.concatenate([p["kind"] for p in parts]) if parts else np.empty(0, dtype=np.int8)
    counts = np.bincount(kinds, minlength=len(TRADE_KINDS))
    return {name: int(n) for name, n in zip(TRADE_KINDS, counts, strict=True)}


def _ffill_rows(a: np.ndarray) -> np.ndarray:
    """Row index of the last finite value at or before each row, per column (0 if none)."""
    idx = np.where(np.isfinite(a), np.arange(a.shape[0])[:, None], 0)
    return np.maximum.accumulate(idx, axis=0)


@dataclass
class _Pass:
    """Collected output of one pass over all windows."""

    equity_ts: list[np.ndarray] = field(default_factory=list)
    equity: list[np.ndarray] = field(default_factory=list)
    exposure: list[np.ndarray] = field(default_factory=list)
    orders: list[_OrderPart] = field(default_factory=list)
    trades: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Trades of each window as arrays (see ``_trades_frame``)."""
    audit: list[dict[str, Any]] = field(default_factory=list)
    n_ambiguous: int = 0
    states: list[tuple[float, dict[str, float], dict[str, float]]] = field(default_factory=list)
    """(cash, shares, last prices) at the start of each window, to restart a pass mid-way."""


@dataclass
class _Book:
    """One portfolio walking forward: its exit rules, carried state and collected output."""

    rules: ExitRules | None
    cash: float
    shares: dict[str, float] = field(default_factory=dict)
    last_price: dict[str, float] = field(default_factory=dict)
    out: _Pass = field(default_factory=_Pass)
    audit_rules: dict[str, Any] = field(init=False)
    """The book's part of every audit line: its mode and exit rules."""

    def __post_init__(self) -> None:
        self.audit_rules = {
            "mode": "rebalance" if self.rules is None else "exit_rules",
            "exit_rules": None if self.rules is None else self.rules.model_dump(),
        }


@dataclass
class BacktestResult:
    """Everything a run produced, before it is written to disk."""

    metrics: dict[str, Any]
    equity: pl.DataFrame
    orders: pl.DataFrame
    trades: pl.DataFrame
    winners: pl.DataFrame
    audit: list[dict[str, Any]]
    timings: dict[str, float]
    data_files: list[str]
    benchmark: pl.DataFrame


class BacktestEngine:
    """Walk-forward engine over a lakehouse and a data source, configured by a :class:`RunConfig`."""

    def __init__(
        self, cfg: RunConfig, source: DataSource | None = None, rules: list[ExitRules | None] | None = None
    ) -> None:
        self.cfg = cfg
        self.rules: list[ExitRules | None] = [cfg.exit_rules] if rules is None else list(rules)
        self.book_metrics: list[dict[str, Any]] = []
        if source is None:
            from engine.data.sources.registry import source_from_config

            source = source_from_config(cfg.data)
        self.source = source
        # the store of this data identity only (its own namespace under paths.lakehouse_dir)
        self.lakehouse: Lakehouse = store_open(cfg.paths.lakehouse_dir, source.identity())
        self.ingestion = IngestionService(self.lakehouse, source, quiet=cfg.quiet)
        self.stage = SimulationStage(cfg.costs, cfg.backtest.vbt_engine)
        self.timings: dict[str, float] = {}
        self.interval = self._sim_interval()

    # ---- preparation -------------------------------------------------------------------------

    def _sim_interval(self) -> str:
        """The finest loaded interval: stops and fills run on it."""
        tfs = self.cfg.backtest.timeframes
        if not tfs:
            return "1d"
        for tf in tfs:
            self.ingestion.interval_check(tf)
        return min(tfs, key=interval_ms)

    def _timed(self, name: str, start: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def data_prepare(self) -> None:
        """Make sure the daily universe is in the lakehouse (generated on first use if synthetic)."""
        t0 = time.perf_counter()
        data = self.cfg.data
        if data.source == "synthetic":
            src = self.source
            self.ingestion.fetch_universe(src.symbols(), src.start_ms, src.end_ms)
        elif data.source == "files":  # local files: imported (or re-imported if changed) here
            from engine.data.ingest import universe_ingest

            universe_ingest(self.ingestion, self.cfg, strict=True)
        elif not self.lakehouse.symbols("bars", "1d"):
            msg = (
                f"no daily bars for this data ({self.source.identity()}) in {self.lakehouse.root}: ingest "
                f"them first with the same data settings, e.g. `python -m engine task=ingest data={data.source}`"
            )
            raise DataError(msg)
        self._timed("data", t0)

    def ranks_prepare(self) -> None:
        """Coverage (DuckDB), windows and the ranks of every window (one polars collect)."""
        t0 = time.perf_counter()
        cov = pl.from_arrow(sql_arrow("coverage", {"glob": self.lakehouse.glob("bars", "1d")}))
        assert isinstance(cov, pl.DataFrame)
        self.coverage = {r["symbol"]: (r["first_ms"], r["last_ms"]) for r in cov.iter_rows(named=True)}
        universe = self.cfg.universe
        unknown = [s for s in universe.symbols if s not in self.coverage]
        if unknown:
            msg = f"unknown symbol(s) {unknown} in universe.symbols: the lakehouse has {len(self.coverage)} symbols, e.g. {sorted(self.coverage)[:3]}"
            raise EngineError(msg)
        n_universe = len([s for s in (universe.symbols or self.coverage) if s not in universe.exclude])
        if self.cfg.ranking.top_n > n_universe:
            msg = f"ranking.top_n={self.cfg.ranking.top_n} exceeds the universe of {n_universe} symbols: use 1 <= top_n <= {n_universe}"
            raise EngineError(msg)
        first = min(a for a, _ in self.coverage.values())
        end = max(b for _, b in self.coverage.values()) + DAY_MS
        self.windows = windows_build(first, end, self.cfg.backtest, self.cfg.ranking)
        self._timed("data", t0)
        t0 = time.perf_counter()
        self.ranks = ranks_compute(
            self.lakehouse.scan("bars", "1d"),
            [w.rank_date for w in self.windows],
            self.cfg.ranking,
            self.cfg.portfolio,
            universe,
        )
        top = self.ranks.filter(pl.col("rank") <= self.cfg.ranking.top_n)
        self.selected = top.partition_by("rank_date", as_dict=True)
        self._timed("ranking", t0)
        t0 = time.perf_counter()
        symbols = sorted(set(top.get_column("symbol").to_list()))
        history = 0 if self.cfg.signals is None else (self.cfg.signals.trend_days + 2) * DAY_MS + self._warmup_ms()
        self.daily = panel_load(
            self.lakehouse, "bars", "1d", symbols, self.windows[0].start_ms - history, self.windows[-1].end_ms
        )
        self._timed("windows", t0)
        self.mtf: dict[str, Panel] = {}
        if self.cfg.backtest.timeframes:
            self._mtf_prefetch(symbols)

    def _mtf_prefetch(self, symbols: list[str]) -> None:
        """Fetch the finer bars of every window's winners (only theirs, only their windows, only what
        is missing), then read them with one DuckDB winner-slice query per interval.

        Winners do not depend on the simulation, so the fetches of all windows can be merged per
        symbol; ``_run_window_step`` still asks for its window's bars, which are then covered.
        """
        t0 = time.perf_counter()
        warm = self._warmup_ms()
        spans: dict[str, list[tuple[int, int]]] = {}
        for w in self.windows:
            for s in self.selected.get((w.rank_date,), pl.DataFrame(schema=self.ranks.schema)).get_column("symbol"):
                spans.setdefault(s, []).append((w.start_ms - warm, w.end_ms))
        tfs = self.cfg.backtest.timeframes
        for s in progress_iter(sorted(spans), "fetch MTF bars of the winners", quiet=self.cfg.quiet):
            for a, b in ranges_merge(spans[s]):
                self.ingestion.fetch_mtf_for_candidates([s], tfs, a, b)
        lo, hi = self.windows[0].start_ms - warm, self.windows[-1].end_ms
        self.mtf = {tf: panel_load(self.lakehouse, "mtf", tf, symbols, lo, hi) for tf in tfs}
        self._timed("mtf", t0)

    # ---- walk-forward ------------------------------------------------------------------------

    def _reset(self, ambiguity: str, rules: list[ExitRules | None], light: bool = False) -> None:
        self.books = [_Book(r, self.cfg.backtest.init_cash) for r in rules]
        self.ambiguity = ambiguity
        self.light = light

    def _run_window_step(self, w: Window) -> None:
        """Select the window's winners, weight them, fetch their fine bars, simulate."""
        t0 = time.perf_counter()
        top = self.selected.get((w.rank_date,), pl.DataFrame(schema=self.ranks.schema))
        start_row = self.daily.rows(w.start_ms, w.end_ms).start
        tradable = [
            s
            for s in top.get_column("symbol").to_list()
            if start_row < self.daily.ts_ms.size and np.isfinite(self.daily.open[start_row, self.daily.col(s)])
        ]
        for s in set(top.get_column("symbol").to_list()) - set(tradable):
            log.warning("window %d: %s has no bar at %s; skipped", w.index, s, w.as_dict()["start"])
        chosen = top.filter(pl.col("symbol").is_in(tradable))
        weights = weights_compute(chosen, self.cfg.portfolio)
        exit_rules = self.cfg.exit_rules
        selection = SelectionContext(
            window=w.index,
            winners=tradable,
            scores=dict(zip(chosen.get_column("symbol"), chosen.get_column("score"), strict=True)),
            exit_rules=exit_rules,
        )
        allocation = AllocationContext(weights=weights, exit_rules=exit_rules)
        self._timed("windows", t0)
        if self.cfg.backtest.timeframes and tradable:
            t0 = time.perf_counter()
            start = w.start_ms - self._warmup_ms()
            self.ingestion.fetch_mtf_for_candidates(tradable, self.cfg.backtest.timeframes, start, w.end_ms)
            self._timed("mtf", t0)
        self._run_simulation(w, selection, allocation)

    def _warmup_ms(self) -> int:
        """History of fine bars loaded before a window so the signal's EMA has settled."""
        if self.cfg.signals is None:
            return 0
        return 3 * self.cfg.signals.ema_bars * interval_ms(self.cfg.backtest.timeframes[0])

    def _signal_weights(self, w: Window, winners: list[str], ts: np.ndarray, targets: dict[str, float]) -> np.ndarray:
        """Entries and trend exits of the trend-in-trend signal on the simulation grid, as a
        (n_bars, n_winners) weight array (NaN = no order); the same for every book of the window.

        A signal of the bar opened at T (signal interval) acts at the open of the grid bar that
        opens at T + interval: the target weight on an entry, 0 when the daily trend is lost.
        """
        p = self.cfg.signals
        assert p is not None
        sig_iv = self.cfg.backtest.timeframes[0]
        step = interval_ms(sig_iv)
        lo = w.start_ms - self._warmup_ms()
        day_lo = lo - (p.trend_days + 2) * DAY_MS

        def frames(panel: Panel, since: int) -> pl.LazyFrame:
            rows = panel.rows(since, w.end_ms)
            parts = []
            for s in winners:
                close = panel.close[rows, panel.col(s)]
                ok = np.isfinite(close)
                parts.append(pl.DataFrame({"symbol": s, "timestamp": panel.ts_ms[rows][ok], "close": close[ok]}))
            return pl.concat(parts).lazy()

        sig = signals_compute(frames(self.mtf[sig_iv], lo), frames(self.daily, day_lo), p, step)
        snap = "exact" if interval_ms(self.interval) <= step else "next"
        return weights_from_signals(sig, winners, ts, targets, step, snap=snap)

    def _window_block(
        self, w: Window, winners: list[str], carried: list[str]
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """OHLC of the window's columns on the simulation grid, gaps filled flat, plus a delist mask."""
        if self.interval == "1d":
            rows = self.daily.rows(w.start_ms, w.end_ms)
            ts = self.daily.ts_ms[rows]
            cols = [self.daily.col(s) for s in winners]
            raw = {f: getattr(self.daily, f)[rows][:, cols] for f in ("open", "high", "low", "close")}
        else:
            panel = self.mtf[self.interval]
            rows = panel.rows(w.start_ms, w.end_ms)
            cols = [panel.col(s) for s in winners]
            ts, raw = panel.ts_ms[rows], {f: getattr(panel, f)[rows][:, cols] for f in ("open", "high", "low", "close")}
            missing = [s for j, s in enumerate(winners) if not np.isfinite(raw["open"][0, j])]
            if missing:
                msg = f"{self.interval} bars of {missing} do not start at {w.as_dict()['start']}: the lakehouse's mtf data is incomplete; delete lakehouse/mtf/interval={self.interval} to refetch"
                raise DataError(msg)
        n = ts.size
        flat = np.empty((n, len(carried)))
        start_row = self.daily.rows(w.start_ms, w.end_ms).start
        for j, s in enumerate(carried):
            p = (
                self.daily.open[start_row, self.daily.col(s)]
                if s in self.daily.symbols and start_row < self.daily.ts_ms.size
                else np.nan
            )
            flat[:, j] = p if np.isfinite(p) else next(b.last_price[s] for b in self.books if s in b.last_price)
        close = np.hstack([raw["close"], flat])
        prev = _ffill_rows(close)
        cidx = np.arange(close.shape[1])
        close_ff = close[prev, cidx]
        gap = ~np.isfinite(close)
        block = {"close": close_ff}
        for f in ("open", "high", "low"):
            a = np.hstack([raw[f], flat])
            block[f] = np.where(gap, close_ff, a)
        delist = np.zeros(close.shape, dtype=bool)
        for j, s in enumerate(winners):
            valid = np.flatnonzero(np.isfinite(raw["close"][:, j]))
            last_ms = self.coverage[s][1]
            if valid.size and valid[-1] < n - 1 and last_ms + DAY_MS <= int(ts[-1]):
                delist[valid[-1] + 1, j] = True
        return ts, block, delist

    def _run_simulation(self, w: Window, selection: SelectionContext, allocation: AllocationContext) -> None:
        """Simulate one window for every book (one vectorbt call) and carry each book's state."""
        t0 = time.perf_counter()
        winners = list(allocation.weights)
        held = {s for b in self.books for s, q in b.shares.items() if q != 0}
        carried = sorted(held - set(winners))
        columns = winners + carried
        if not columns:
            ts = self.daily.ts_ms[self.daily.rows(w.start_ms, w.end_ms)]
            for book, audit in zip(self.books, self._audit(w, selection, allocation), strict=True):
                self._collect_flat(book, ts + DAY_MS, audit)
            self._timed("simulation", t0)
            return
        ts, block, delist = self._window_block(w, winners, carried)
        prices = PriceBlock(
            open=block["open"],
            high=block["high"],
            low=block["low"],
            close=block["close"],
            index=ts.astype("datetime64[ms]").astype("datetime64[ns]"),
            columns=columns,
        )
        placed = None if self.cfg.signals is None else self._signal_weights(w, winners, ts, allocation.weights)
        shared = None
        if self.cfg.signals is None:  # the rebalance orders are the same for every book
            shared = np.full(block["close"].shape, np.nan)
            shared[0, :] = [allocation.weights.get(s, 0.0) for s in columns]
            shared[delist] = 0.0
        # every book marks the window's columns alike, so the carry prices are common too
        first = self.books[0]
        carry_price = np.array([first.last_price.get(s, block["open"][0, j]) for j, s in enumerate(columns)])
        books = []
        for book in self.books:
            weights = shared
            if weights is None:
                weights = np.full(block["close"].shape, np.nan)
                # held winners are re-weighted at the rebalance (which resets their stops); new
                # winners wait for their entry signal; positions that left the winners are closed
                weights[0, :] = [
                    (allocation.weights[s] if book.shares.get(s) else np.nan) if s in allocation.weights else 0.0
                    for s in columns
                ]
                mine = weights[:, : len(winners)]
                mine[np.isfinite(placed)] = placed[np.isfinite(placed)]
                weights[delist] = 0.0
            carry = np.array([book.shares.get(s, 0.0) for s in columns])
            books.append(GridBook(book.rules, weights, max(book.cash, 0.0), carry))
        # one validated context per window, with the first book's rules (the run's own in a
        # normal run); the other books of a grid differ only in rules, weights and carried state
        first_rules = books[0].exit_rules
        ctx = SimulationContext(
            selection=selection
            if first_rules is selection.exit_rules
            else selection.model_copy(update={"exit_rules": first_rules}),
            allocation=allocation
            if first_rules is allocation.exit_rules
            else allocation.model_copy(update={"exit_rules": first_rules}),
            prices=prices,
            weights=books[0].weights,
            init_cash=books[0].init_cash,
            carry_shares=books[0].carry_shares,
            carry_price=carry_price,
            ambiguity=self.ambiguity,
        )
        # the normal run is one book; an exit-rule grid runs every book in the same vectorbt call
        results = [self.stage.execute(ctx)] if len(books) == 1 else self.stage.execute_grid(ctx, books)
        last = {s: float(block["close"][-1, j]) for j, s in enumerate(columns)}
        for book, res in zip(self.books, results, strict=True):
            book.cash = float(res.cash_end)
            book.shares = {s: float(q) for s, q in zip(columns, res.shares_end, strict=True) if q != 0}
            book.last_price.update(last)
            if self.light:  # a sensitivity pass: only the carried state and the final equity count
                book.out.equity = [res.equity[-1:]]
        if not self.light:
            step = interval_ms(self.interval)
            self._collect(
                w, ts, step, columns, block, [b.weights for b in books], delist, results, selection, allocation
            )
        self._timed("simulation", t0)

    def _audit(self, w: Window, selection: SelectionContext, allocation: AllocationContext) -> list[dict[str, Any]]:
        """The window's audit line of every book (exits and ambiguity are added by the caller)."""
        window = {
            **w.as_dict(),
            "winners": selection.winners,
            "weights": allocation.weights,
            "signals": None if self.cfg.signals is None else "trend_in_trend",
            "interval": self.interval,
        }
        return [{**window, **book.audit_rules} for book in self.books]

    def _collect_flat(self, book: _Book, close_ts: np.ndarray, audit: dict[str, Any]) -> None:
        book.out.equity_ts.append(close_ts)
        book.out.equity.append(np.full(close_ts.size, book.cash))
        book.out.exposure.append(np.zeros(close_ts.size))
        audit["exits"] = {}
        audit["ambiguous"] = 0
        book.out.audit.append(audit)

    def _collect(
        self,
        w: Window,
        ts: np.ndarray,
        step: int,
        columns: list[str],
        block: dict[str, np.ndarray],
        weights: list[np.ndarray],
        delist: np.ndarray,
        results: list[SimResult],
        selection: SelectionContext,
        allocation: AllocationContext,
    ) -> None:
        """Append the window's equity, orders, trades and audit line to every book's pass; the
        trades of all books come from one :func:`window_trades` call."""
        k = len(columns)
        fills = []
        for res in results:
            stop = res.order_reason != 0
            fills.append((res.order_bar[stop], res.order_records["col"][stop], res.order_records["price"][stop]))
        found = [
            None if (e := res.stop_exits) is None else (e.bar, e.col, e.kind, e.price, e.ambiguous) for res in results
        ]
        t = window_trades(
            np.hstack(weights) if len(weights) > 1 else weights[0],
            found,
            fills,
            block["open"],
            block["close"][-1],
            delist,
            ts,
            step,
            self.cfg.costs.slippage,
            signals=self.cfg.signals is not None,
            last_window=w.index == self.windows[-1].index,
        )
        bounds = np.searchsorted(t.col, np.arange(len(results) + 1) * k).tolist()
        names = np.asarray(columns, dtype=object)
        audits = self._audit(w, selection, allocation)
        for b, (book, res, audit) in enumerate(zip(self.books, results, audits, strict=True)):
            out = book.out
            out.equity_ts.append(ts + step)
            out.equity.append(np.asarray(res.equity, dtype=np.float64))
            held = res.equity - res.cash
            out.exposure.append(np.clip(held / np.asarray(res.equity), 0.0, None))
            if len(res.order_records):
                out.orders.append((w.index, ts, names, res.order_bar, res.order_records, res.order_reason))
            out.n_ambiguous += int(res.n_ambiguous)
            lo, hi = bounds[b], bounds[b + 1]
            kinds = t.kind[lo:hi]
            if hi > lo:
                out.trades.append(
                    {
                        "window": np.full(hi - lo, w.index, dtype=np.int64),
                        "symbol": names[t.col[lo:hi] - b * k],
                        "entry_time": t.entry_time[lo:hi],
                        "entry_price": t.entry_price[lo:hi],
                        "exit_time": t.exit_time[lo:hi],
                        "exit_price": t.exit_price[lo:hi],
                        "kind": kinds,
                        "ambiguous": t.ambiguous[lo:hi],
                    }
                )
            counts = np.bincount(kinds, minlength=len(TRADE_KINDS))
            audit["exits"] = {TRADE_KINDS[c]: int(n) for c, n in enumerate(counts) if n}
            audit["ambiguous"] = int(res.n_ambiguous)
            out.audit.append(audit)

    def _simulate_all(
        self,
        ambiguity: str,
        interval: str | None = None,
        restart: list[_Pass] | None = None,
        rules: list[ExitRules | None] | None = None,
    ) -> list[_Pass]:
        """One pass of every book (or of the books with ``rules``) over the windows.

        With ``restart`` (the pessimistic passes of those books), a light pass that keeps only
        each book's final equity: it resumes from the first window in which any of the books saw
        an ambiguous exit, from each book's state there, as earlier windows cannot differ.
        """
        finest = self.interval
        self.interval = interval or finest
        self._reset(ambiguity, self.rules if rules is None else rules, light=restart is not None)
        first = 0
        if restart is not None:
            first = min(next((i for i, a in enumerate(p.audit) if a["ambiguous"]), len(p.audit)) for p in restart)
            for book, p in zip(self.books, restart, strict=True):
                book.cash, shares, last = p.states[first]
                book.shares, book.last_price = dict(shares), dict(last)
        try:
            for w in progress_iter(
                self.windows[first:], f"walk-forward ({ambiguity}, {self.interval})", quiet=self.cfg.quiet
            ):
                for book in () if self.light else self.books:
                    book.out.states.append((book.cash, dict(book.shares), dict(book.last_price)))
                self._run_window_step(w)
        finally:
            self.interval = finest
        return [b.out for b in self.books]

    def _daily_comparison(self, main: _Pass, daily: _Pass) -> dict[str, Any]:
        """The same winners and rules with stops on daily bars only: what daily simulation misstates."""
        ts, eq = np.concatenate(daily.equity_ts), np.concatenate(daily.equity)
        n_days = (int(ts[-1]) - self.windows[0].start_ms) / DAY_MS
        m = equity_metrics(eq[(ts % DAY_MS) == 0], self.cfg.backtest.init_cash, n_days)
        by_kind = _kind_counts(daily.trades)
        n_stops = sum(by_kind[k] for k in STOP_KINDS)
        return {
            "total_return": m["total_return"],
            "max_drawdown": m["max_drawdown"],
            "n_stop_exits": n_stops,
            "n_ambiguous_exits": daily.n_ambiguous,
            "ambiguous_resolved_by_finer_bars": max(daily.n_ambiguous - main.n_ambiguous, 0),
        }

    # ---- the run -----------------------------------------------------------------------------

    def run(self) -> BacktestResult:
        """Prepare data and ranks, walk forward through every window, compute metrics.

        With several books (an exit-rule grid) the returned result is the first book's; the
        metrics of every book are in ``self.book_metrics``.
        """
        # The objects alive now (imported modules, config, data panels) live for the whole run;
        # frozen, the cyclic GC stops rescanning them in every full collection the walk-forward's
        # many small allocations trigger (~0.1-0.2 s each once vectorbt is imported).
        gc.freeze()
        try:
            return self._run()
        finally:
            gc.unfreeze()

    def _run(self) -> BacktestResult:
        self.data_prepare()
        self.ranks_prepare()
        main = self._simulate_all("pessimistic")
        active = any(r is not None for r in self.rules)
        # the optimistic (take-profit-first) pass runs only the books that met an ambiguous bar;
        # the others would repeat their pessimistic pass exactly
        ambiguous = [i for i, p in enumerate(main) if p.n_ambiguous]
        alt: dict[int, _Pass] = {}
        if active and ambiguous:
            passes = self._simulate_all(
                "optimistic", restart=[main[i] for i in ambiguous], rules=[self.rules[i] for i in ambiguous]
            )
            alt = dict(zip(ambiguous, passes, strict=True))
        daily = None
        if active and self.interval != "1d":
            daily = self._simulate_all("pessimistic", "1d")
        t0 = time.perf_counter()
        self.book_metrics = []
        for i, (rules, p) in enumerate(zip(self.rules, main, strict=True)):
            extra: dict[str, Any] = {"mode": "rebalance" if rules is None else "exit_rules", "daily_bars": None}
            if rules is not None:
                final = alt[i].equity[-1][-1] if i in alt else p.equity[-1][-1]
                extra["total_return_optimistic"] = float(final / self.cfg.backtest.init_cash - 1.0)
                if daily is not None:
                    extra["daily_bars"] = self._daily_comparison(p, daily[i])
            else:
                extra["total_return_optimistic"] = None
            self.book_metrics.append(self._pass_metrics(p, extra))
        result = self._result(main[0], self.book_metrics[0])
        self._timed("metrics", t0)
        return result

    def _pass_metrics(self, p: _Pass, extra: dict[str, Any]) -> dict[str, Any]:
        ts, equity, exposure = np.concatenate(p.equity_ts), np.concatenate(p.equity), np.concatenate(p.exposure)
        daily = (ts % DAY_MS) == 0
        n_days = (int(ts[-1]) - self.windows[0].start_ms) / DAY_MS
        n_orders = sum(len(o[4]) for o in p.orders)
        traded = float(sum(np.sum(o[4]["size"] * o[4]["price"]) for o in p.orders))
        returns = (
            np.concatenate([t["exit_price"] / t["entry_price"] - 1.0 for t in p.trades]) if p.trades else np.empty(0)
        )
        by_kind = _kind_counts(p.trades)
        return {
            **equity_metrics(equity[daily], self.cfg.backtest.init_cash, n_days),
            **trading_metrics(n_orders, traded, returns, by_kind, equity[daily], exposure[daily], n_days),
            "final_equity": float(equity[-1]),
            "n_windows": len(self.windows),
            "start": self.windows[0].as_dict()["start"],
            "end": self.windows[-1].as_dict()["end"],
            "interval": self.interval,
            "n_ambiguous_exits": p.n_ambiguous,
            "n_stop_exits": sum(by_kind[k] for k in STOP_KINDS),
            **extra,
        }

    def _result(self, main: _Pass, metrics: dict[str, Any]) -> BacktestResult:
        ts, equity, exposure = (
            np.concatenate(main.equity_ts),
            np.concatenate(main.equity),
            np.concatenate(main.exposure),
        )
        orders = _orders_frame(main.orders)
        trades = _trades_frame(main.trades)
        equity_df = pl.DataFrame({"timestamp": ts, "equity": equity, "exposure": exposure}).with_columns(
            pl.col("timestamp").cast(pl.Datetime("ms", "UTC"))
        )
        winners = self.ranks.join(
            pl.DataFrame([{"rank_date": w.rank_date, "window": w.index} for w in self.windows]), on="rank_date"
        ).with_columns((pl.col("rank") <= self.cfg.ranking.top_n).alias("selected"))
        weights = pl.DataFrame(
            [{"window": a["window"], "symbol": s, "weight": x} for a in main.audit for s, x in a["weights"].items()],
            schema={"window": pl.Int64, "symbol": pl.String, "weight": pl.Float64},
        )
        winners = winners.join(weights, on=["window", "symbol"], how="left").sort(["window", "rank"])
        traded = {f"symbol={s.replace('/', '_')}" for s in set(trades.get_column("symbol").to_list())}
        files = sorted(
            str(p.relative_to(self.lakehouse.root.parent))  # namespace/bars/...: relative to paths.lakehouse_dir
            for kind in ("bars", "mtf")
            for p in (self.lakehouse.root / kind).glob("interval=*/symbol=*/data.parquet")
            if (kind == "bars" and p.parent.parent.name == "interval=1d") or (kind == "mtf" and p.parent.name in traded)
        )
        return BacktestResult(
            metrics, equity_df, orders, trades, winners, main.audit, dict(self.timings), files, self._benchmark()
        )

    def _benchmark(self) -> pl.DataFrame:
        """Equal-weight universe (rebalanced daily) and BTC buy-and-hold, marked at daily closes."""
        start, end = self.windows[0].start_ms, self.windows[-1].end_ms
        init = self.cfg.backtest.init_cash
        rets = (
            self.lakehouse.scan("bars", "1d")
            .select("symbol", "timestamp", "close")
            .with_columns(
                (pl.col("close") / pl.col("close").shift(1) - 1.0).over("symbol", order_by="timestamp").alias("ret")
            )
            .filter(pl.col("timestamp").dt.epoch("ms").is_between(start, end - 1))
            .collect()
        )
        ew = (
            rets.filter(pl.col("ret").is_not_null())
            .sort(["timestamp", "symbol"])
            .group_by("timestamp", maintain_order=True)
            .agg(pl.col("ret").mean())
            .with_columns((init * (1.0 + pl.col("ret")).cum_prod()).alias("equal_weight"))
            .select("timestamp", "equal_weight")
        )
        btc = rets.filter(pl.col("symbol") == "BTC/USDT").sort("timestamp")
        if btc.height:
            bh = btc.select("timestamp", (init * (1.0 + pl.col("ret").fill_null(0.0)).cum_prod()).alias("btc_buy_hold"))
            ew = ew.join(bh, on="timestamp", how="left")
        return ew.with_columns(pl.col("timestamp") + pl.duration(days=1)).sort("timestamp")
