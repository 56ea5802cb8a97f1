"""The walk-forward backtest, as data flowing through state.

1. Preparation, once per run: the universe's base bars, the windows, every window's ranking, winners
   and weights (``WindowPlan``), the winners' finer bars and, with ``signals``, the signal table.
2. A pass folds the windows over a state it owns (``PassState``: per book, cash and the open
   positions with their risk state: quantity, cost basis, trailing peak, opening time). A window
   step (``_run_window_step``) fetches the winners' finer bars and simulates the window
   (``_run_simulation``) from the state, then leaves the new state. The pessimistic pass, the
   optimistic (take-profit-first) pass and the base-bars comparison are each one call of
   :meth:`BacktestEngine._fold` with a ``PassSpec`` and a state of their own.
3. The result assembler turns a pass's output into orders, round-trip trades (``engine.trades``),
   equity, audit lines and metrics.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import polars as pl

from engine.config import RunConfig
from engine.data.bars import interval_ms
from engine.data.ingest import IngestionService
from engine.data.lakehouse import Lakehouse, ranges_merge, store_open
from engine.data.sources.base import DataSource
from engine.errors import DataError, EngineError, NoWinnersError
from engine.exit_rules import ExitRules
from engine.metrics import YEAR_DAYS, equity_metrics, trading_metrics
from engine.panel import Panel, panel_load
from engine.progress import progress_iter
from engine.ranking import eligibility_diagnose, ranks_compute, weights_compute
from engine.signals import signals_compute
from engine.simulation.stage import AllocationContext, GridBook, SelectionContext, SimulationContext, SimulationStage
from engine.simulation.stops import Ambiguity, StopState
from engine.simulation.vbt import ORDER_REASONS, ORDER_SIDES, PriceBlock, SimResult
from engine.sql import sql_arrow
from engine.trades import STOP_KINDS, TRADE_KINDS, kind_counts, trades_frame, trades_from_orders
from engine.windows import DAY_MS, Window, windows_build

log = logging.getLogger(__name__)

SIGNAL = ORDER_REASONS.index("signal")
DELISTED = ORDER_REASONS.index("delisted")
MS_NS = 1_000_000
NO_ORDERS = (
    "no order was placed: the run held its initial cash throughout and its metrics say nothing about "
    "the strategy; check backtest.init_cash against the winners' prices, the ranking filters and the period"
)
"""metrics.json's ``warnings`` entry (and the console's warning) of a book that placed no order."""

ORDER_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "window": pl.Int64,
    "timestamp": pl.Datetime("ms", "UTC"),
    "symbol": pl.String,
    "side": pl.String,
    "size": pl.Float64,
    "price": pl.Float64,
    "fees": pl.Float64,
    "reason": pl.String,
    "ambiguous": pl.Boolean,
}


# ---- state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """An open position of a book, carried from window to window.

    ``basis`` (size-weighted average buy fill since the position opened, slippage included),
    ``peak`` (highest price since it opened) and ``opened_ms`` (open time of its opening bar) are
    the risk state its stops reference; NaN / 0 in a book without exit rules (not tracked).
    """

    qty: float
    basis: float
    peak: float
    opened_ms: int


@dataclass
class BookOutput:
    """What a pass collects for one book (arrays kept as produced, assembled at the end)."""

    equity_ts: list[np.ndarray] = field(default_factory=list)
    equity: list[np.ndarray] = field(default_factory=list)
    exposure: list[np.ndarray] = field(default_factory=list)
    orders: list[dict[str, np.ndarray]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    n_ambiguous: int = 0
    stop_exits: np.ndarray = field(default_factory=lambda: np.zeros(len(TRADE_KINDS), dtype=np.int64))
    """Stop exits found per exit-kind code (all passes keep this, light ones included)."""
    ambiguous_windows: list[int] = field(default_factory=list)
    final_equity: float = float("nan")


@dataclass
class BookState:
    """One portfolio walking forward: its exit rules, cash and open positions."""

    rules: ExitRules | None
    cash: float
    positions: dict[str, Position] = field(default_factory=dict)
    out: BookOutput = field(default_factory=BookOutput)
    audit_rules: dict[str, Any] = field(init=False)
    """The book's part of every audit line: its mode and exit rules."""

    def __post_init__(self) -> None:
        """Build the book's part of the audit lines from its rules."""
        self.rules_set(self.rules)

    def rules_set(self, rules: ExitRules | None) -> None:
        """Switch the book's exit rules (a walk-forward optimisation's book at a window boundary).

        Its cash and positions, with their cost basis, peak and clock, carry unchanged.
        """
        self.rules = rules
        self.audit_rules = {
            "mode": "rebalance" if rules is None else "exit_rules",
            "exit_rules": None if rules is None else rules.model_dump(),
        }


@dataclass(frozen=True)
class PassSpec:
    """What distinguishes one pass over the windows from another."""

    ambiguity: Ambiguity
    interval: str
    """Bars the pass simulates on (stops and fills)."""
    light: bool = False
    """Keep only the state and the final equity (a sensitivity pass)."""


@dataclass
class PassState:
    """The state a pass folds the windows over.

    Every book's cash and positions, the last close of every symbol seen (carry prices), and
    snapshots at each window start (to resume a pass).
    """

    spec: PassSpec
    books: list[BookState]
    last_price: dict[str, float] = field(default_factory=dict)
    last_bar_ms: int = 0
    """Open time of the last bar simulated."""
    snapshots: list[tuple[list[tuple[float, dict[str, Position]]], dict[str, float]]] = field(default_factory=list)

    def snapshot(self) -> tuple[list[tuple[float, dict[str, Position]]], dict[str, float]]:
        """Return the books' (cash, positions) and the last prices, as they are now (copies)."""
        return [(b.cash, dict(b.positions)) for b in self.books], dict(self.last_price)

    def restore(self, snap: tuple[list[tuple[float, dict[str, Position]]], dict[str, float]]) -> None:
        """Put the books back into a snapshot's state."""
        books, prices = snap
        for book, (cash, positions) in zip(self.books, books, strict=True):
            book.cash, book.positions = cash, dict(positions)
        self.last_price = dict(prices)


@dataclass(frozen=True)
class WindowPlan:
    """A window's decisions, made once per run: its winners (in rank order) and their weights."""

    window: Window
    selection: SelectionContext
    allocation: AllocationContext


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
    wfo: dict[str, Any] | None = None
    """task=wfo: the per-window choices (``frame``), the grid's per-window returns and rules."""


def _ffill_rows(a: np.ndarray) -> np.ndarray:
    """Row index of the last finite value at or before each row, per column (0 if none)."""
    idx = np.where(np.isfinite(a), np.arange(a.shape[0])[:, None], 0)
    return np.maximum.accumulate(idx, axis=0)


def _orders_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Return a book's orders of all windows as concatenated columns (simulation order)."""
    if not parts:
        return {
            "window": np.empty(0, dtype=np.int64),
            "timestamp": np.empty(0, dtype=np.int64),
            "symbol": np.empty(0, dtype=object),
            "side": np.empty(0, dtype=np.int64),
            "size": np.empty(0),
            "price": np.empty(0),
            "fees": np.empty(0),
            "reason": np.empty(0, dtype=np.int64),
            "ambiguous": np.empty(0, dtype=np.bool_),
        }
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _orders_frame(cols: dict[str, np.ndarray]) -> pl.DataFrame:
    """Return a book's orders as one polars frame (built once, at the end)."""
    return pl.DataFrame(
        {
            "window": cols["window"],
            "timestamp": pl.Series(cols["timestamp"], dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            "symbol": pl.Series(cols["symbol"].tolist(), dtype=pl.String),
            "side": pl.Series(ORDER_SIDES, dtype=pl.String).gather(cols["side"]),
            "size": cols["size"],
            "price": cols["price"],
            "fees": cols["fees"],
            "reason": pl.Series(ORDER_REASONS, dtype=pl.String).gather(cols["reason"]),
            "ambiguous": cols["ambiguous"],
        },
        schema=ORDER_SCHEMA,
    )


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
        self.base = cfg.backtest.interval
        """Base bar of ranking and rebalancing (``backtest.interval``)."""
        self.base_ms = interval_ms(self.base)
        self.interval = self._sim_interval()
        self.signals: dict[str, dict[str, np.ndarray]] = {}

    # ---- preparation -------------------------------------------------------------------------

    def _sim_interval(self) -> str:
        """Return the finest loaded interval: stops and fills run on it."""
        tfs = self.cfg.backtest.timeframes
        if not tfs:
            return self.base
        for tf in tfs:
            self.ingestion.interval_check(tf, self.base)
        return min(tfs, key=interval_ms)

    def _timed(self, name: str, start: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def data_prepare(self) -> None:
        """Make sure the universe's base bars are in the lakehouse (generated on first use if synthetic)."""
        t0 = time.perf_counter()
        data = self.cfg.data
        if data.source == "synthetic":
            from engine.data.sources.synthetic import SyntheticSource

            src = cast(SyntheticSource, self.source)  # the source of a synthetic config
            self.ingestion.fetch_universe(src.symbols(), src.start_ms, src.end_ms, self.base)
        elif data.source == "files":  # local files: imported (or re-imported if changed) here
            from engine.data.ingest import universe_ingest

            universe_ingest(self.ingestion, self.cfg, strict=True)
        elif not self.lakehouse.symbols("bars", self.base):
            msg = (
                f"no {'daily' if self.base == '1d' else self.base} bars for this data ({self.source.identity()}) in "
                f"{self.lakehouse.url()}: ingest "
                f"them first with the same data settings, e.g. `python -m engine task=ingest data={data.source}"
                + ("" if self.base == "1d" else f" backtest.interval={self.base}")
                + "`"
            )
            raise DataError(msg)
        self._timed("data", t0)

    def ranks_prepare(self) -> None:
        """Coverage (DuckDB), windows and the ranks of every window (one polars collect)."""
        t0 = time.perf_counter()
        cov = pl.from_arrow(sql_arrow("coverage", {"glob": self.lakehouse.glob("bars", self.base)}))
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
        end = max(b for _, b in self.coverage.values()) + self.base_ms
        self.windows = windows_build(first, end, self.cfg.backtest, self.cfg.ranking)
        self._timed("data", t0)
        t0 = time.perf_counter()
        self.ranks = ranks_compute(
            self.lakehouse.scan("bars", self.base),
            [w.rank_ms for w in self.windows],
            self.cfg.ranking,
            self.cfg.portfolio,
            universe,
            self.base,
        )
        top = self.ranks.filter(pl.col("rank") <= self.cfg.ranking.top_n)
        self.selected = top.partition_by("rank_ms", as_dict=True)
        self._timed("ranking", t0)
        t0 = time.perf_counter()
        symbols = sorted(set(top.get_column("symbol").to_list()))
        history = 0 if self.cfg.signals is None else (self.cfg.signals.trend_days + 2) * DAY_MS + self._warmup_ms()
        self.base_bars = panel_load(
            self.lakehouse, "bars", self.base, symbols, self.windows[0].start_ms - history, self.windows[-1].end_ms
        )
        self._timed("windows", t0)
        self.mtf: dict[str, Panel] = {}
        spans = self._mtf_prefetch(symbols) if self.cfg.backtest.timeframes else {}
        self._plans_build()
        if self.cfg.signals is not None:
            t0 = time.perf_counter()
            self._signals_prepare(spans)
            self._timed("signals", t0)

    def _mtf_prefetch(self, symbols: list[str]) -> dict[str, list[tuple[int, int]]]:
        """Fetch the finer bars of every window's winners, then read them per interval.

        Only the winners' bars, only in their windows, only what is missing are fetched; they are
        read with one DuckDB winner-slice query per interval.

        Winners do not depend on the simulation, so the fetches of all windows can be merged per
        symbol; ``_run_window_step`` still asks for its window's bars, which are then covered.
        Returns the spans (window plus warm-up) of each symbol's windows as winner.
        """
        t0 = time.perf_counter()
        warm = self._warmup_ms()
        spans: dict[str, list[tuple[int, int]]] = {}
        for w in self.windows:
            for s in self.selected.get((w.rank_ms,), pl.DataFrame(schema=self.ranks.schema)).get_column("symbol"):
                spans.setdefault(s, []).append((w.start_ms - warm, w.end_ms))
        tfs = self.cfg.backtest.timeframes
        for s in progress_iter(sorted(spans), "fetch MTF bars of the winners", quiet=self.cfg.quiet):
            for a, b in ranges_merge(spans[s]):
                self.ingestion.fetch_mtf_for_candidates([s], tfs, a, b)
        lo, hi = self.windows[0].start_ms - warm, self.windows[-1].end_ms
        self.mtf = {tf: panel_load(self.lakehouse, "mtf", tf, symbols, lo, hi) for tf in tfs}
        self._timed("mtf", t0)
        return spans

    def _plans_build(self) -> None:
        """Every window's winners and weights, decided once for all passes.

        A winner without a bar at the window's first open cannot be bought there: it is skipped,
        with one warning per window.
        """
        t0 = time.perf_counter()
        exit_rules = self.cfg.exit_rules
        self.plans: list[WindowPlan] = []
        empty = pl.DataFrame(schema=self.ranks.schema)
        for w in self.windows:
            top = self.selected.get((w.rank_ms,), empty)
            start_row = self.base_bars.rows(w.start_ms, w.end_ms).start
            tradable = [
                s
                for s in top.get_column("symbol").to_list()
                if start_row < self.base_bars.ts_ms.size
                and np.isfinite(self.base_bars.open[start_row, self.base_bars.col(s)])
            ]
            skipped = sorted(set(top.get_column("symbol").to_list()) - set(tradable))
            if skipped:
                log.warning("window %d: %s have no bar at %s; skipped", w.index, skipped, w.as_dict()["start"])
            chosen = top.filter(pl.col("symbol").is_in(tradable))
            weights = weights_compute(chosen, self.cfg.portfolio)
            selection = SelectionContext(
                window=w.index,
                winners=tradable,
                scores=dict(zip(chosen.get_column("symbol"), chosen.get_column("score"), strict=True)),
                exit_rules=exit_rules,
            )
            self.plans.append(WindowPlan(w, selection, AllocationContext(weights=weights, exit_rules=exit_rules)))
        self.empty_windows = sum(not p.selection.winners for p in self.plans)
        if self.empty_windows == len(self.plans):
            why = eligibility_diagnose(
                self.lakehouse.scan("bars", self.base),
                [w.rank_ms for w in self.windows],
                self.cfg.ranking,
                self.cfg.portfolio,
                self.cfg.universe,
                self.base,
            )
            msg = f"every one of the {len(self.plans)} walk-forward windows has no winner: {why}"
            raise NoWinnersError(msg)
        if self.empty_windows:
            log.warning(
                "%d of %d windows have no winner (held in cash); metrics.json counts them in empty_windows",
                self.empty_windows,
                len(self.plans),
            )
        self._timed("windows", t0)

    def _signals_prepare(self, spans: dict[str, list[tuple[int, int]]]) -> None:
        """Compute the trend-in-trend signals of every winner, once per run on its finer bars.

        A symbol's finer bars are loaded per merged span of the windows it won (each with the EMA
        warm-up before it); each span is one series, so the EMA and the trigger state run on
        without restarting inside a span and no span sees another's bars across a gap of unloaded
        data. The daily trend comes from the symbol's whole daily series. Kept per symbol: the time
        each signal acts (its bar's close) and the entry / trend-exit flags.
        """
        p = self.cfg.signals
        assert p is not None
        step = interval_ms(self.cfg.backtest.timeframes[0])
        fine, daily = self.mtf[self.cfg.backtest.timeframes[0]], self.base_bars
        fines, days = [], []
        for s in sorted(spans):
            d = daily.col(s)
            ok_d = np.isfinite(daily.close[:, d])
            for k, (a, b) in enumerate(ranges_merge(spans[s])):
                key = f"{s}#{k}"
                rows = fine.rows(a, b)
                close = fine.close[rows, fine.col(s)]
                ok = np.isfinite(close)
                fines.append(pl.DataFrame({"symbol": key, "timestamp": fine.ts_ms[rows][ok], "close": close[ok]}))
                days.append(
                    pl.DataFrame({"symbol": key, "timestamp": daily.ts_ms[ok_d], "close": daily.close[ok_d, d]})
                )
        if not fines:
            return
        sig = signals_compute(pl.concat(fines).lazy(), pl.concat(days).lazy(), p, step)
        sig = sig.with_columns(pl.col("symbol").str.replace(r"#\d+$", "")).sort("symbol", "timestamp")
        for (s,), g in sig.partition_by("symbol", as_dict=True, maintain_order=True).items():
            self.signals[str(s)] = {
                "act_ms": g.get_column("timestamp").to_numpy().astype(np.int64) + step,
                "entry": g.get_column("entry").to_numpy(),
                "exit": g.get_column("exit_trend").to_numpy(),
            }

    # ---- walk-forward ------------------------------------------------------------------------

    def _fold(
        self,
        spec: PassSpec,
        rules: list[ExitRules | None],
        resume: PassState | None = None,
        schedules: list[list[ExitRules | None] | None] | None = None,
    ) -> PassState:
        """Run one pass: fold the windows over a fresh state.

        A light pass folds over the state of ``resume`` at its first window with an ambiguous exit
        instead, as earlier windows cannot differ. ``schedules`` (one per book, None = fixed rules)
        gives a book's exit rules per window (``task=wfo``): they are switched at the window's
        start, before its first bar; the book's cash and positions (quantity, cost basis, peak,
        opening time) carry as they are.
        """
        state = PassState(spec, [BookState(r, self.cfg.backtest.init_cash) for r in rules])
        first = 0
        if resume is not None:
            first = min((w for b in resume.books for w in b.out.ambiguous_windows[:1]), default=len(self.plans))
            first = min(first, len(self.plans) - 1)
            state.restore(resume.snapshots[first])
        for i, plan in enumerate(
            progress_iter(
                self.plans[first:], f"walk-forward ({spec.ambiguity}, {spec.interval})", quiet=self.cfg.quiet
            ),
            start=first,
        ):
            if not spec.light:
                state.snapshots.append(state.snapshot())
            if schedules is not None:
                for book, schedule in zip(state.books, schedules, strict=True):
                    if schedule is not None and schedule[i] is not book.rules:
                        book.rules_set(schedule[i])
            self._run_window_step(state, plan)
        return state

    def _run_window_step(self, state: PassState, plan: WindowPlan) -> None:
        """Fetch the window's winners' finer bars (lazily: only what is missing), then simulate."""
        winners = plan.selection.winners
        if self.cfg.backtest.timeframes and winners:
            t0 = time.perf_counter()
            start = plan.window.start_ms - self._warmup_ms()
            self.ingestion.fetch_mtf_for_candidates(winners, self.cfg.backtest.timeframes, start, plan.window.end_ms)
            self._timed("mtf", t0)
        self._run_simulation(state, plan)

    def _warmup_ms(self) -> int:
        """History of fine bars loaded before a window so the signal's EMA has settled."""
        if self.cfg.signals is None:
            return 0
        return 3 * self.cfg.signals.ema_bars * interval_ms(self.cfg.backtest.timeframes[0])

    def _signal_weights(
        self, winners: list[str], ts: np.ndarray, targets: dict[str, float], interval: str
    ) -> np.ndarray:
        """Return the entries and trend exits of the precomputed signals on the simulation grid.

        The result is a (n_bars, n_winners) weight array (NaN = no order), the same for every book
        of the window.

        A signal of the bar opened at T (signal interval) acts at the open of the grid bar that
        opens at T + interval (exactly on a grid as fine as the signal's, at the first bar at or
        after it on a coarser one): the target weight on an entry, 0 when the daily trend is lost.
        """
        step = interval_ms(self.cfg.backtest.timeframes[0])
        exact = interval_ms(interval) <= step
        n = ts.size
        w = np.full((n, len(winners)), np.nan)
        for j, s in enumerate(winners):
            sig = self.signals.get(s)
            if sig is None:
                continue
            act = sig["act_ms"]
            lo, hi = np.searchsorted(act, [ts[0] if exact else ts[0] - interval_ms(interval) + 1, ts[-1] + 1])
            act, entry, exit_ = act[lo:hi], sig["entry"][lo:hi], sig["exit"][lo:hi]
            first = np.searchsorted(ts, act)
            rows = np.minimum(first, n - 1)
            on = (ts[rows] == act) if exact else (first < n)
            w[rows[on & exit_], j] = 0.0
            w[rows[on & entry], j] = targets[s]
        return w

    def _window_block(
        self, w: Window, winners: list[str], carried: list[str], interval: str, last_price: dict[str, float]
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """OHLC of the window's columns on the simulation grid, gaps filled flat, plus a delist mask."""
        if interval == self.base:
            rows = self.base_bars.rows(w.start_ms, w.end_ms)
            ts = self.base_bars.ts_ms[rows]
            cols = [self.base_bars.col(s) for s in winners]
            raw = {f: getattr(self.base_bars, f)[rows][:, cols] for f in ("open", "high", "low", "close")}
        else:
            panel = self.mtf[interval]
            rows = panel.rows(w.start_ms, w.end_ms)
            cols = [panel.col(s) for s in winners]
            ts, raw = panel.ts_ms[rows], {f: getattr(panel, f)[rows][:, cols] for f in ("open", "high", "low", "close")}
            missing = [s for j, s in enumerate(winners) if not np.isfinite(raw["open"][0, j])]
            if missing:
                msg = f"{interval} bars of {missing} do not start at {w.as_dict()['start']}: the lakehouse's mtf data is incomplete; delete lakehouse/mtf/interval={interval} to refetch"
                raise DataError(msg)
        n = ts.size
        flat = np.empty((n, len(carried)))
        start_row = self.base_bars.rows(w.start_ms, w.end_ms).start
        for j, s in enumerate(carried):
            p = (
                self.base_bars.open[start_row, self.base_bars.col(s)]
                if s in self.base_bars.symbols and start_row < self.base_bars.ts_ms.size
                else np.nan
            )
            flat[:, j] = p if np.isfinite(p) else last_price[s]
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
            if valid.size and valid[-1] < n - 1 and last_ms + self.base_ms <= int(ts[-1]):
                delist[valid[-1] + 1, j] = True
        return ts, block, delist

    def _run_simulation(self, state: PassState, plan: WindowPlan) -> None:
        """Simulate one window for every book of the pass (one vectorbt call).

        The simulation starts from the state the pass carries and leaves the new state: cash, and
        per symbol held the quantity and the risk state (cost basis, trailing peak, opening time)
        the stops go on from next window.
        """
        t0 = time.perf_counter()
        w, selection, allocation = plan.window, plan.selection, plan.allocation
        spec = state.spec
        winners = list(allocation.weights)
        held = {s for b in state.books for s in b.positions}
        carried = sorted(held - set(winners))
        columns = winners + carried
        if not columns:
            ts = self.base_bars.ts_ms[self.base_bars.rows(w.start_ms, w.end_ms)]
            if ts.size:
                state.last_bar_ms = int(ts[-1])
            for book in state.books:
                book.out.final_equity = book.cash
                if not spec.light:
                    self._collect_flat(book, ts + self.base_ms, self._audit(w, selection, allocation, book))
            self._timed("simulation", t0)
            return
        ts, block, delist = self._window_block(w, winners, carried, spec.interval, state.last_price)
        prices = PriceBlock(
            open=block["open"],
            high=block["high"],
            low=block["low"],
            close=block["close"],
            index=ts.astype("datetime64[ms]").astype("datetime64[ns]"),
            columns=tuple(columns),
        )
        signals = self.cfg.signals is not None
        placed = self._signal_weights(winners, ts, allocation.weights, spec.interval) if signals else None
        shared = None
        if not signals:  # the rebalance orders are the same for every book
            shared = np.full(block["close"].shape, np.nan)
            shared[0, :] = [allocation.weights.get(s, 0.0) for s in columns]
            shared[delist] = 0.0
        # every book marks the window's columns alike, so the carry prices are common too
        carry_price = np.array([state.last_price.get(s, block["open"][0, j]) for j, s in enumerate(columns)])
        books = []
        for book in state.books:
            weights = shared
            if weights is None:
                weights = np.full(block["close"].shape, np.nan)
                # held winners are re-weighted at the rebalance; new winners wait for their entry
                # signal; positions that left the winners are closed
                weights[0, :] = [
                    (allocation.weights[s] if s in book.positions else np.nan) if s in allocation.weights else 0.0
                    for s in columns
                ]
                assert placed is not None
                mine = weights[:, : len(winners)]
                mine[np.isfinite(placed)] = placed[np.isfinite(placed)]
                weights[delist] = 0.0
            pos = [book.positions.get(s) for s in columns]
            carry = np.array([0.0 if p is None else p.qty for p in pos])
            risk = StopState(
                np.array([np.nan if p is None else p.basis for p in pos]),
                np.array([np.nan if p is None else p.peak for p in pos]),
                np.array([0 if p is None else p.opened_ms * MS_NS for p in pos], dtype=np.int64),
            )
            books.append(GridBook(book.rules, weights, max(book.cash, 0.0), carry, risk))
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
            carry_state=books[0].carry_state,
            ambiguity=spec.ambiguity,
            held_reweights="first_bar" if signals else "all",
        )
        # the normal run is one book; an exit-rule grid runs every book in the same vectorbt call
        results = [self.stage.execute(ctx)] if len(books) == 1 else self.stage.execute_grid(ctx, books)
        for book, res in zip(state.books, results, strict=True):
            book.cash = float(res.cash_end)
            book.positions = _positions_after(columns, res)
            book.out.final_equity = float(res.equity[-1])
            if res.stop_exits is not None and len(res.stop_exits):
                book.out.stop_exits += np.bincount(res.stop_exits.kind, minlength=len(TRADE_KINDS))
            if res.n_ambiguous:
                book.out.ambiguous_windows.append(w.index)
        state.last_price.update({s: float(block["close"][-1, j]) for j, s in enumerate(columns)})
        state.last_bar_ms = int(ts[-1])
        if not spec.light:
            self._collect(state, plan, ts, interval_ms(spec.interval), columns, delist, results)
        self._timed("simulation", t0)

    def _audit(
        self, w: Window, selection: SelectionContext, allocation: AllocationContext, book: BookState
    ) -> dict[str, Any]:
        """Return the window's audit line of a book (its exits are added by the result assembler)."""
        return {
            **w.as_dict(),
            "winners": selection.winners,
            "weights": allocation.weights,
            "signals": None if self.cfg.signals is None else "trend_in_trend",
            "interval": self.interval,
            **book.audit_rules,
        }

    def _collect_flat(self, book: BookState, close_ts: np.ndarray, audit: dict[str, Any]) -> None:
        book.out.equity_ts.append(close_ts)
        book.out.equity.append(np.full(close_ts.size, book.cash))
        book.out.exposure.append(np.zeros(close_ts.size))
        audit["ambiguous"] = 0
        book.out.audit.append(audit)

    def _collect(
        self,
        state: PassState,
        plan: WindowPlan,
        ts: np.ndarray,
        step: int,
        columns: list[str],
        delist: np.ndarray,
        results: list[SimResult],
    ) -> None:
        """Append the window's equity, orders and audit line to every book's output.

        Orders keep the simulator's reasons, except that a rebalance-mode order is relabelled
        ``signal`` when a signal placed it (after the window's first bar) and ``delisted`` when it
        sells a symbol whose bars ended.
        """
        names = np.asarray(columns, dtype=object)
        signals = self.cfg.signals is not None
        for book, res in zip(state.books, results, strict=True):
            out = book.out
            out.equity_ts.append(ts + step)
            out.equity.append(np.asarray(res.equity, dtype=np.float64))
            invested = res.equity - res.cash
            out.exposure.append(np.clip(invested / np.asarray(res.equity), 0.0, None))
            rec, bar = res.order_records, res.order_bar
            if len(rec):
                reason = res.order_reason.astype(np.int64)
                plain = reason == 0
                if signals:
                    reason[plain & (bar > 0)] = SIGNAL
                gone = plain & delist[bar, rec["col"]]
                reason[gone] = DELISTED
                # sold at the last close of a symbol whose bars ended: stamped with its last bar
                # (the bar before the delist row), like a position marked at the end of the data
                stamp = np.where(gone, ts[np.maximum(bar - 1, 0)], ts[bar])
                out.orders.append(
                    {
                        "window": np.full(len(rec), plan.window.index, dtype=np.int64),
                        "timestamp": stamp,
                        "symbol": names[rec["col"]],
                        "side": rec["side"].astype(np.int64),
                        "size": rec["size"],
                        "price": rec["price"],
                        "fees": rec["fees"],
                        "reason": reason,
                        "ambiguous": res.order_ambiguous,
                    }
                )
            out.n_ambiguous += int(res.n_ambiguous)
            audit = self._audit(plan.window, plan.selection, plan.allocation, book)
            audit["ambiguous"] = int(res.n_ambiguous)
            out.audit.append(audit)

    def _base_comparison(self, main: BookOutput, base: BookOutput) -> dict[str, Any]:
        """Return the same winners and rules with stops on the base bars only: what they misstate.

        Kept under ``base_bars`` in metrics.json (its ``interval`` says which bars: daily by default).
        """
        ts, eq = np.concatenate(base.equity_ts), np.concatenate(base.equity)
        m = equity_metrics(eq[(ts % self.base_ms) == 0], self.cfg.backtest.init_cash, *self._span(ts))
        return {
            "interval": self.base,
            "total_return": m["total_return"],
            "max_drawdown": m["max_drawdown"],
            "n_stop_exits": int(sum(base.stop_exits[TRADE_KINDS.index(k)] for k in STOP_KINDS)),
            "n_ambiguous_exits": base.n_ambiguous,
            "ambiguous_resolved_by_finer_bars": max(base.n_ambiguous - main.n_ambiguous, 0),
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
        result = self._walk(self.rules)[1]
        assert result is not None
        return result

    def _walk(
        self,
        rules: list[ExitRules | None],
        schedules: list[list[ExitRules | None] | None] | None = None,
        assemble: bool = True,
    ) -> tuple[PassState, BacktestResult | None]:
        """Run the passes over the planned windows for ``rules``, one book each.

        ``schedules`` gives a book's rules per window. Sets the metrics of every book
        (``self.book_metrics``) and returns the pass state with the first book's result
        (None unless ``assemble``).
        """
        main = self._fold(PassSpec("pessimistic", self.interval), rules, schedules=schedules)
        every: list[ExitRules | None] = []
        for i, r0 in enumerate(rules):
            schedule = schedules[i] if schedules else None
            every.extend(schedule if schedule is not None else [r0])
        active = any(r is not None for r in every)
        # the optimistic (take-profit-first) pass runs only the books that met an ambiguous bar,
        # from the first window with one; the others would repeat their pessimistic pass exactly
        ambiguous = [i for i, b in enumerate(main.books) if b.out.n_ambiguous]
        optimistic: dict[int, BookOutput] = {}
        if active and ambiguous:
            resume = PassState(main.spec, [main.books[i] for i in ambiguous], snapshots=[])
            resume.snapshots = [([snap[0][i] for i in ambiguous], snap[1]) for snap in main.snapshots]
            alt = self._fold(
                PassSpec("optimistic", self.interval, light=True),
                [rules[i] for i in ambiguous],
                resume,
                None if schedules is None else [schedules[i] for i in ambiguous],
            )
            optimistic = {i: b.out for i, b in zip(ambiguous, alt.books, strict=True)}
        on_base = None  # the same books with stops on the base bars only, to compare with the finer bars
        if active and self.interval != self.base:
            on_base = self._fold(PassSpec("pessimistic", self.base), rules, schedules=schedules)
        t0 = time.perf_counter()
        self.book_metrics = []
        first: tuple[pl.DataFrame, dict[str, np.ndarray]] | None = None
        for i, (rules_i, book) in enumerate(zip(rules, main.books, strict=True)):
            sched = schedules[i] if schedules is not None else None
            book_active = rules_i is not None if sched is None else any(r is not None for r in sched)
            orders = _orders_columns(book.out.orders)
            trades = trades_from_orders(orders, main.last_price, main.last_bar_ms, self.windows[-1].index)
            extra: dict[str, Any] = {"mode": "exit_rules" if book_active else "rebalance", "base_bars": None}
            if book_active:
                final = optimistic[i].final_equity if i in optimistic else book.out.final_equity
                extra["total_return_optimistic"] = float(final / self.cfg.backtest.init_cash - 1.0)
                if on_base is not None:
                    extra["base_bars"] = self._base_comparison(book.out, on_base.books[i].out)
            else:
                extra["total_return_optimistic"] = None
            self.book_metrics.append(self._pass_metrics(book.out, orders, trades, extra))
            if NO_ORDERS in self.book_metrics[-1].get("warnings", ()) and i == 0:
                log.warning("%s", NO_ORDERS)
            if i == 0:
                first = (_orders_frame(orders), trades)
        assert first is not None
        result = self._result(main.books[0].out, first[0], first[1], self.book_metrics[0]) if assemble else None
        self._timed("metrics", t0)
        return main, result

    def windows_from(self, k0: int) -> None:
        """Keep the windows from ``k0`` on, renumbered from 0, with their plans.

        The engine then walks forward exactly as a run with ``backtest.start`` = window ``k0``'s
        ranking date.
        """
        from dataclasses import replace

        windows, plans = [], []
        for i, plan in enumerate(self.plans[k0:]):
            w = replace(plan.window, index=i)
            windows.append(w)
            plans.append(WindowPlan(w, plan.selection.model_copy(update={"window": i}), plan.allocation))
        self.windows, self.plans = windows, plans

    def run_wfo(self, choose: Any, windows_check: Any = None) -> tuple[BacktestResult, dict[str, Any]]:
        """Run a walk-forward optimisation of the books of ``self.rules``.

        Every book walks forward in one pass (as ``task=grid``), ``choose(returns)`` maps their
        (windows x books) matrix of per-window returns to one chosen book per window (-1: a
        training window), then one out-of-sample book walks the windows from the first choice, its
        exit rules switched at each window start to the chosen book's (cash and positions carry).
        Returns the out-of-sample book's
        result and the grid's part: ``returns``, ``choices``, ``grid_metrics``, ``windows``
        (every window of the grid, before the out-of-sample cut) and ``oos_returns``.
        ``windows_check(n_windows)`` may refuse the run once the windows are known (before any
        simulation).
        """
        gc.freeze()
        try:
            self.data_prepare()
            self.ranks_prepare()
            if windows_check is not None:
                windows_check(len(self.windows))
            grid, _ = self._walk(self.rules, assemble=False)
            grid_metrics = self.book_metrics
            returns = np.column_stack([window_returns(b.out, self.cfg.backtest.init_cash) for b in grid.books])
            choices = np.asarray(choose(returns), dtype=np.int64)
            chosen = np.flatnonzero(choices >= 0)
            all_windows = list(self.windows)
            if not chosen.size:
                msg = "no window is left to trade after the training windows"
                raise EngineError(msg)
            k0 = int(chosen[0])
            schedule = [self.rules[int(c)] for c in choices[k0:]]
            del grid
            self.windows_from(k0)
            oos_state, result = self._walk([schedule[0]], [schedule])
            assert result is not None
            oos = window_returns(oos_state.books[0].out, self.cfg.backtest.init_cash)
        finally:
            gc.unfreeze()
        return result, {
            "returns": returns,
            "choices": choices,
            "grid_metrics": grid_metrics,
            "windows": all_windows,
            "oos_returns": oos,
        }

    def _pass_metrics(
        self, out: BookOutput, orders: dict[str, np.ndarray], trades: dict[str, np.ndarray], extra: dict[str, Any]
    ) -> dict[str, Any]:
        ts, equity, exposure = np.concatenate(out.equity_ts), np.concatenate(out.equity), np.concatenate(out.exposure)
        marks = (ts % self.base_ms) == 0  # the base bars' closes
        n_days, per_year = self._span(ts)
        traded = float(np.sum(orders["size"] * orders["price"]))
        by_kind = kind_counts(trades["exit_kind"])
        metrics = {
            **equity_metrics(equity[marks], self.cfg.backtest.init_cash, n_days, per_year),
            **trading_metrics(
                len(orders["size"]), traded, trades["return"], by_kind, equity[marks], exposure[marks], n_days
            ),
            "final_equity": float(equity[-1]),
            "n_windows": len(self.windows),
            "empty_windows": self.empty_windows,
            "start": self.windows[0].as_dict()["start"],
            "end": self.windows[-1].as_dict()["end"],
            "interval": self.interval,
            "base_interval": self.base,
            "periods_per_year": per_year,
            "n_ambiguous_exits": out.n_ambiguous,
            "n_stop_exits": sum(by_kind[k] for k in STOP_KINDS),
            **extra,
        }
        if not len(orders["size"]):  # only then: an ordinary run's metrics.json keeps its keys
            metrics["warnings"] = [NO_ORDERS]
        return metrics

    def _span(self, close_ts: np.ndarray) -> tuple[float, float]:
        """Days from the first window's start to the last equity mark, and base bars per year (365 days)."""
        return (int(close_ts[-1]) - self.windows[0].start_ms) / DAY_MS, YEAR_DAYS * DAY_MS / self.base_ms

    def _result(
        self, out: BookOutput, orders: pl.DataFrame, trades: dict[str, np.ndarray], metrics: dict[str, Any]
    ) -> BacktestResult:
        ts, equity, exposure = (
            np.concatenate(out.equity_ts),
            np.concatenate(out.equity),
            np.concatenate(out.exposure),
        )
        # each window's audit line counts the trades that ended in it, by exit kind
        ended: dict[int, dict[str, int]] = {}
        for wi, k in zip(trades["exit_window"].tolist(), trades["exit_kind"].tolist(), strict=True):
            kinds = ended.setdefault(wi, {})
            kinds[TRADE_KINDS[k]] = kinds.get(TRADE_KINDS[k], 0) + 1
        for a in out.audit:
            a["exits"] = ended.get(a["window"], {})
        trades_df = trades_frame(trades)
        equity_df = pl.DataFrame({"timestamp": ts, "equity": equity, "exposure": exposure}).with_columns(
            pl.col("timestamp").cast(pl.Datetime("ms", "UTC"))
        )
        winners = (
            self.ranks.join(
                pl.DataFrame(
                    {"rank_ms": [w.rank_ms for w in self.windows], "window": [w.index for w in self.windows]},
                    schema={"rank_ms": pl.Int64, "window": pl.Int64},
                ),
                on="rank_ms",
            )
            .with_columns(
                (pl.col("rank") <= self.cfg.ranking.top_n).alias("selected"),
                pl.col("rank_ms").cast(pl.Datetime("ms", "UTC")).alias("rank_time"),
            )
            .drop("rank_ms")
        )
        weights = pl.DataFrame(
            [{"window": a["window"], "symbol": s, "weight": x} for a in out.audit for s, x in a["weights"].items()],
            schema={"window": pl.Int64, "symbol": pl.String, "weight": pl.Float64},
        )
        winners = (
            winners.join(weights, on=["window", "symbol"], how="left")
            .sort(["window", "rank"])
            .select("rank_date", "rank_time", pl.exclude("rank_date", "rank_time"))
        )
        traded = {f"symbol={s.replace('/', '_')}" for s in set(trades_df.get_column("symbol").to_list())}
        fine = {f"interval={tf}" for tf in self.cfg.backtest.timeframes}  # other runs' finer bars were not read
        files = sorted(
            str(p.relative_to(self.lakehouse.root.parent))  # namespace/bars/...: relative to paths.lakehouse_dir
            for kind in ("bars", "mtf")
            for p in self.lakehouse.data_files(kind)
            if (kind == "bars" and p.parent.parent.name == f"interval={self.base}")
            or (kind == "mtf" and p.parent.parent.name in fine and p.parent.name in traded)
        )
        return BacktestResult(
            metrics, equity_df, orders, trades_df, winners, out.audit, dict(self.timings), files, self._benchmark()
        )

    def _benchmark(self) -> pl.DataFrame:
        """Equal-weight universe (rebalanced every base bar) and BTC buy-and-hold, marked at the base bars' closes."""
        start, end = self.windows[0].start_ms, self.windows[-1].end_ms
        init = self.cfg.backtest.init_cash
        rets = (
            self.lakehouse.scan("bars", self.base)
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
        return ew.with_columns(pl.col("timestamp") + pl.duration(milliseconds=self.base_ms)).sort("timestamp")


def _positions_after(columns: list[str], res: SimResult) -> dict[str, Position]:
    """Return the positions a window leaves: quantity from the simulation, risk state from the stops."""
    q = res.shares_end
    held = np.flatnonzero(q)
    end = res.end_state
    if end is None:
        return {columns[j]: Position(float(q[j]), np.nan, np.nan, 0) for j in held}
    basis, peak, opened = end.basis.tolist(), end.peak.tolist(), (end.opened_ns // MS_NS).tolist()
    out = {}
    for j in held.tolist():
        if basis[j] == basis[j]:  # not NaN: the stops track it
            out[columns[j]] = Position(float(q[j]), basis[j], peak[j], opened[j])
        else:
            out[columns[j]] = Position(float(q[j]), np.nan, np.nan, 0)
    return out


def window_returns(out: BookOutput, init_cash: float) -> np.ndarray:
    """Return a book's return in each window.

    Its equity at the window's last close over the one before (the carry row moves positions at
    the previous close without costs, so a window starts at the equity the last one ended with).
    """
    ends, last = np.empty(len(out.equity)), init_cash
    for i, e in enumerate(out.equity):  # a window without bars keeps the equity it started with
        last = float(e[-1]) if e.size else last
        ends[i] = last
    starts = np.concatenate(([init_cash], ends[:-1]))
    return ends / starts - 1.0
