"""The run plan: everything a walk-forward decides before it simulates, as one frozen value.

:func:`run_plan` makes sure the universe's base bars are in the store, builds the windows, ranks
every window (one polars collect), loads the winners' base bars and finer bars (fetched lazily,
only for the winners), decides every window's winners and target weights (:class:`WindowPlan`)
and, with ``signals``, computes the signal table. Every pass of every book then folds over the
same plan (:mod:`engine.run.fold`); a walk-forward optimisation trades a suffix of its windows
(:func:`plan_from`) without building it again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from engine.config import RunConfig
from engine.config.book import is_long_only, is_sided
from engine.core.errors import DataError, EngineError, NoWinnersError
from engine.core.jsontypes import JSON
from engine.core.progress import progress_iter
from engine.core.units import interval_ms
from engine.data.ingest import IngestionService
from engine.data.lakehouse import Lakehouse, ranges_merge, scan_batches, store_open
from engine.data.panel import Panel, panel_load, panels_load
from engine.data.sources.base import DataSource
from engine.run.frictions import MarketData, market_prepare, market_stage
from engine.simulation.stage import AllocationContext, MarketStage, SelectionContext, SimulationStage
from engine.strategy.ranking import eligibility_diagnose, ranks_compute, weights_compute
from engine.strategy.sided_risk import sided_allocator_new
from engine.strategy.sides import side_rows, side_weights, universe_check
from engine.strategy.signals import signals_compute
from engine.strategy.weights import Allocator, RiskMemo, allocator_new, returns_history_ms
from engine.strategy.windows import DAY_MS, Window, windows_build

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowPlan:
    """A window's decisions, made once per run: its winners (in rank order) and their weights."""

    window: Window
    selection: SelectionContext
    allocation: AllocationContext


@dataclass(frozen=True)
class Signals:
    """A symbol's precomputed signals: the time each acts (its bar's close) and its entry / trend-exit flags."""

    act_ms: np.ndarray
    entry: np.ndarray
    exit: np.ndarray


@dataclass
class Timings:
    """Seconds spent per stage of a run (instrumentation: it never changes a result)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the time the ``with`` block takes to stage ``name``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


@dataclass(frozen=True)
class RunPlan:
    """Everything decided before the simulation, shared by every pass and every book.

    Attributes
    ----------
    cfg : RunConfig
        The validated configuration.
    lakehouse, ingestion, stage
        The store of this data identity, the lazy fetcher of finer bars, the simulation stage.
    base, base_ms : str, int
        The base bar of ranking and rebalancing.
    interval : str
        The finest loaded interval: stops and fills run on it.
    coverage : Mapping[str, tuple[int, int]]
        First and last base bar (open, ms) per symbol of the store.
    windows, plans : tuple
        The walk-forward windows and each one's winners and weights.
    ranks : pl.DataFrame
        Every window's full ranking (``rank_ms``, ``symbol``, ``rank``, ``score``, ...).
    base_bars, mtf : Panel, Mapping[str, Panel]
        The winners' base bars and finer bars (by interval).
    signals : Mapping[str, Signals]
        The trend-in-trend signals per winner (empty without ``signals``).
    empty_windows : int
        Windows without a winner (held in cash).
    """

    cfg: RunConfig
    lakehouse: Lakehouse
    ingestion: IngestionService
    stage: SimulationStage | MarketStage
    base: str
    base_ms: int
    interval: str
    coverage: Mapping[str, tuple[int, int]]
    windows: tuple[Window, ...]
    plans: tuple[WindowPlan, ...]
    ranks: pl.DataFrame
    base_bars: Panel
    mtf: Mapping[str, Panel]
    signals: Mapping[str, Signals]
    empty_windows: int
    timings: Timings
    market: MarketData | None = None
    """What the frictions read (None: every ``execution`` friction off, the vectorbt stage)."""
    portfolio: Mapping[int, dict[str, JSON]] = field(default_factory=dict)
    """Per ranking bar (ms): the portfolio construction's gross, ex-ante volatility, turnover (docs/PORTFOLIO.md)."""
    risk_memo: RiskMemo = field(default_factory=dict, repr=False, compare=False)
    """The run's covariance and risk-weight estimates keyed on their exact inputs (the audit's plan reuses them)."""

    def warmup_ms(self) -> int:
        """History of fine bars loaded before a window so the signal's EMA has settled."""
        return warmup_ms(self.cfg)


def warmup_ms(cfg: RunConfig) -> int:
    """History of fine bars loaded before a window so the signal's EMA has settled."""
    if cfg.signals is None:
        return 0
    return 3 * cfg.signals.ema_bars * interval_ms(cfg.backtest.timeframes[0])


def sim_interval(cfg: RunConfig, ingestion: IngestionService) -> str:
    """Return the finest loaded interval (stops and fills run on it), each checked against the base bar."""
    tfs = cfg.backtest.timeframes
    if not tfs:
        return cfg.backtest.interval
    for tf in tfs:
        ingestion.interval_check(tf, cfg.backtest.interval)
    return min(tfs, key=interval_ms)


def data_prepare(cfg: RunConfig, source: DataSource, lakehouse: Lakehouse, ingestion: IngestionService) -> None:
    """Make sure the universe's base bars are in the store: generated or imported here, as the source says.

    ``source.run_ingest``: ``all`` (the generated universe, whole), ``universe`` (the user's files:
    imported, or re-imported if changed) or ``none`` (an exchange: ``task=ingest`` first).
    """
    base = cfg.backtest.interval
    if source.run_ingest != "none":
        from engine.data.ingest import universe_ingest

        universe_ingest(ingestion, cfg, strict=True, symbols=source.symbols() if source.run_ingest == "all" else None)
    elif not lakehouse.symbols("bars", base):
        msg = (
            f"no {'daily' if base == '1d' else base} bars for this data ({source.identity()}) in "
            f"{lakehouse.url()}: ingest "
            f"them first with the same data settings, e.g. `python -m engine task=ingest data={cfg.data.source}"
            + ("" if base == "1d" else f" backtest.interval={base}")
            + "`"
        )
        raise DataError(msg)
    if cfg.data.is_perp():  # perpetual futures: funding stored and checked (docs/PERPETUALS.md)
        from engine.data.funding import funding_prepare

        funding_prepare(cfg, source, lakehouse)


def coverage_read(cfg: RunConfig, lakehouse: Lakehouse) -> dict[str, tuple[int, int]]:
    """First and last base bar per symbol (DuckDB over the store), checked against the universe settings."""
    from engine.data.sql import sql_arrow

    coverage: dict[str, tuple[int, int]] = {}
    for files in lakehouse.file_batches("bars", cfg.backtest.interval):  # DuckDB's memory follows a batch
        cov = (
            sql_arrow("coverage", {"glob": files}, storage=lakehouse.storage)
            .select(["symbol", "first_ms", "last_ms"])
            .to_pydict()
        )
        coverage.update(zip(cov["symbol"], zip(cov["first_ms"], cov["last_ms"], strict=True), strict=True))
    universe = cfg.universe
    unknown = [s for s in universe.symbols if s not in coverage]
    if unknown:
        msg = f"unknown symbol(s) {unknown} in universe.symbols: the lakehouse has {len(coverage)} symbols, e.g. {sorted(coverage)[:3]}"
        raise EngineError(msg)
    n_universe = len([s for s in (universe.symbols or coverage) if s not in universe.exclude])
    if cfg.ranking.top_n > n_universe:
        msg = f"ranking.top_n={cfg.ranking.top_n} exceeds the universe of {n_universe} symbols: use 1 <= top_n <= {n_universe}"
        raise EngineError(msg)
    universe_check(cfg, n_universe)  # the short leg's symbols too (engine/strategy/sides.py)
    return coverage


def _selected(
    ranks: pl.DataFrame, top_n: int, windows: tuple[Window, ...], sided: RunConfig | None = None
) -> dict[int, pl.DataFrame]:
    """Each window's top-N rows of the ranking (an empty frame where none), by window index.

    ``sided``: the config of a book with a short leg or leverage, whose rows are its legs' (:func:`side_rows`).
    """
    top = ranks.filter(pl.col("rank") <= top_n) if sided is None else side_rows(ranks, sided)
    parts = top.partition_by("rank_ms", as_dict=True)
    empty = pl.DataFrame(schema=ranks.schema)
    return {w.index: parts.get((w.rank_ms,), empty) for w in windows}


def mtf_prefetch(
    cfg: RunConfig,
    lakehouse: Lakehouse,
    ingestion: IngestionService,
    windows: tuple[Window, ...],
    selected: dict[int, pl.DataFrame],
    symbols: list[str],
    kept: Mapping[int, list[str]] | None = None,
) -> tuple[dict[str, Panel], dict[str, list[tuple[int, int]]]]:
    """Fetch the finer bars of every window's winners, then read them per interval.

    Only the winners' bars, only in their windows, only what is missing are fetched; they are
    read with one DuckDB winner-slice query per interval. Winners do not depend on the
    simulation, so the fetches of all windows are merged per symbol. Returns the panels by
    interval and the spans (window plus warm-up) of each symbol's windows as winner. ``kept``:
    per window, the symbols a turnover limit keeps after they left the winners (fetched too).
    """
    warm = warmup_ms(cfg)
    spans: dict[str, list[tuple[int, int]]] = {}
    for w in windows:
        for s in [*selected[w.index].get_column("symbol"), *(kept or {}).get(w.index, [])]:
            spans.setdefault(s, []).append((w.start_ms - warm, w.end_ms))
    tfs = cfg.backtest.timeframes
    for s in progress_iter(sorted(spans), "fetch MTF bars of the winners", quiet=cfg.quiet):
        for a, b in ranges_merge(spans[s]):
            ingestion.fetch_mtf_for_candidates([s], tfs, a, b)
    lo, hi = windows[0].start_ms - warm, windows[-1].end_ms
    return {tf: panel_load(lakehouse, "mtf", tf, symbols, lo, hi) for tf in tfs}, spans


def plans_build(
    cfg: RunConfig,
    windows: tuple[Window, ...],
    selected: dict[int, pl.DataFrame],
    base_bars: Panel,
    allocator: Allocator | None = None,
) -> tuple[WindowPlan, ...]:
    """Every window's winners and weights, decided once for all passes.

    A winner without a bar at the window's first open cannot be bought there: it is skipped,
    with one warning per window. ``allocator``: the portfolio construction of docs/PORTFOLIO.md
    (None: ``weights_compute``'s equal or inverse-volatility weights).
    """
    exit_rules = cfg.exit_rules
    plans = []
    for w in windows:
        top = selected[w.index]
        start_row = base_bars.rows(w.start_ms, w.end_ms).start
        tradable = [
            s
            for s in top.get_column("symbol").to_list()
            if start_row < base_bars.ts_ms.size and np.isfinite(base_bars.open[start_row, base_bars.col(s)])
        ]
        skipped = sorted(set(top.get_column("symbol").to_list()) - set(tradable))
        if skipped:
            log.warning("window %d: %s have no bar at %s; skipped", w.index, skipped, w.as_dict()["start"])
        chosen = top.filter(pl.col("symbol").is_in(tradable))
        if is_sided(cfg) and allocator is None:  # the legs' signed weights (engine/strategy/sides.py)
            weights = side_weights(chosen, cfg, w.index)
        else:
            weights = (
                weights_compute(chosen, cfg.portfolio) if allocator is None else allocator.window(w, chosen, tradable)
            )
        selection = SelectionContext(
            window=w.index,
            winners=tradable,
            scores=dict(zip(chosen.get_column("symbol"), chosen.get_column("score"), strict=True)),
            exit_rules=exit_rules,
        )
        sided = is_sided(cfg)
        allocation = AllocationContext(
            weights=weights, exit_rules=exit_rules, signed=sided, leverage=cfg.portfolio.leverage if sided else 1.0
        )
        plans.append(WindowPlan(w, selection, allocation))
    return tuple(plans)


def empty_windows_check(cfg: RunConfig, lakehouse: Lakehouse, plans: tuple[WindowPlan, ...]) -> int:
    """Count the windows without a winner; all of them is an error that says which filter emptied them."""
    empty = sum(not p.selection.winners for p in plans)
    if empty == len(plans):
        why = eligibility_diagnose(
            lakehouse.scan("bars", cfg.backtest.interval),
            [p.window.rank_ms for p in plans],
            cfg.ranking,
            cfg.portfolio,
            cfg.universe,
            cfg.backtest.interval,
        )
        msg = f"every one of the {len(plans)} walk-forward windows has no winner: {why}"
        raise NoWinnersError(msg)
    if empty:
        log.warning(
            "%d of %d windows have no winner (held in cash); metrics.json counts them in empty_windows",
            empty,
            len(plans),
        )
    return empty


def signals_prepare(
    cfg: RunConfig, fine: Panel, daily: Panel, spans: dict[str, list[tuple[int, int]]]
) -> dict[str, Signals]:
    """Compute the trend-in-trend signals of every winner, once per run on its finer bars.

    A symbol's finer bars are loaded per merged span of the windows it won (each with the EMA
    warm-up before it); each span is one series, so the EMA and the trigger state run on
    without restarting inside a span and no span sees another's bars across a gap of unloaded
    data. The daily trend comes from the symbol's whole daily series.
    """
    p = cfg.signals
    assert p is not None
    step = interval_ms(cfg.backtest.timeframes[0])
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
            days.append(pl.DataFrame({"symbol": key, "timestamp": daily.ts_ms[ok_d], "close": daily.close[ok_d, d]}))
    if not fines:
        return {}
    sig = signals_compute(pl.concat(fines).lazy(), pl.concat(days).lazy(), p, step)
    sig = sig.with_columns(pl.col("symbol").str.replace(r"#\d+$", "")).sort("symbol", "timestamp")
    return {
        str(s): Signals(
            g.get_column("timestamp").to_numpy().astype(np.int64) + step,
            g.get_column("entry").to_numpy(),
            g.get_column("exit_trend").to_numpy(),
        )
        for (s,), g in sig.partition_by("symbol", as_dict=True, maintain_order=True).items()
    }


def run_plan(cfg: RunConfig, source: DataSource | None = None) -> RunPlan:
    """Prepare the data and decide every window: the run's :class:`RunPlan`.

    ``source`` defaults to the one ``cfg.data`` names.
    """
    if source is None:
        from engine.data.sources.registry import source_from_config

        source = source_from_config(cfg.data)
    timings = Timings()
    base = cfg.backtest.interval
    base_ms = interval_ms(base)
    # the store of this data identity only (its own namespace under paths.lakehouse_dir)
    lakehouse = store_open(cfg.paths.lakehouse_dir, source.identity())
    ingestion = IngestionService(lakehouse, source, quiet=cfg.quiet)
    interval = sim_interval(cfg, ingestion)
    with timings.timed("data"):
        data_prepare(cfg, source, lakehouse, ingestion)
        coverage = coverage_read(cfg, lakehouse)
        first = min(a for a, _ in coverage.values())
        end = max(b for _, b in coverage.values()) + base_ms
        windows = tuple(windows_build(first, end, cfg.backtest, cfg.ranking))
    with timings.timed("ranking"):
        rank_times = [w.rank_ms for w in windows]
        batches = scan_batches(lakehouse, "bars", base)  # a batch of symbols at a time, never the panel
        ranks = ranks_compute(batches, rank_times, cfg.ranking, cfg.portfolio, cfg.universe, base)
    return plan_ranked(cfg, lakehouse, ingestion, interval, coverage, windows, ranks, timings)


def plan_ranked(
    cfg: RunConfig,
    lakehouse: Lakehouse,
    ingestion: IngestionService,
    interval: str,
    coverage: Mapping[str, tuple[int, int]],
    windows: tuple[Window, ...],
    ranks: pl.DataFrame,
    timings: Timings,
    risk_memo: RiskMemo | None = None,
    bars_held: Panel | None = None,
) -> RunPlan:
    """Decide every window from a ranking: the winners' bars, their finer bars, the plans, the signals.

    The second half of :func:`run_plan`; the survivorship audit (:mod:`engine.run.survivorship`)
    builds its survivors-only plan through it from the run's ranking restricted to the survivors,
    sharing the run's ``risk_memo`` (estimates keyed on their exact inputs, so none changes) and
    copying the run's widest panel of bars (``bars_held``) for the winners both plans share.
    """
    risk_memo = {} if risk_memo is None else risk_memo
    base = cfg.backtest.interval
    with timings.timed("ranking"):
        selected = _selected(ranks, cfg.ranking.top_n, windows, cfg if is_sided(cfg) else None)
    with timings.timed("windows"):
        symbols = sorted({s for top in selected.values() for s in top.get_column("symbol").to_list()})
        history = 0 if cfg.signals is None else (cfg.signals.trend_days + 2) * DAY_MS + warmup_ms(cfg)
        history = max(history, returns_history_ms(cfg))  # the covariance window of docs/PORTFOLIO.md
        # a friction is on, or a short leg, leverage or perpetual data: the market stage (engine/run/frictions.py),
        # whose bars (from its own history before the first window) come from the same read
        market_on = not cfg.execution.is_frictionless() or not is_long_only(cfg)
        starts = [windows[0].start_ms - history, windows[0].start_ms - cfg.execution.history_bars() * interval_ms(base)]
        base_bars, *market_bars = panels_load(
            lakehouse, "bars", base, symbols, starts if market_on else starts[:1], windows[-1].end_ms, bars_held
        )
    with timings.timed("windows"):
        allocator: Allocator | None = (
            sided_allocator_new(cfg, base_bars, risk_memo)
            if is_sided(cfg)
            else allocator_new(cfg, base_bars, risk_memo)
        )
        plans = plans_build(cfg, windows, selected, base_bars, allocator)
        empty = empty_windows_check(cfg, lakehouse, plans)
    mtf: dict[str, Panel] = {}
    spans: dict[str, list[tuple[int, int]]] = {}
    if cfg.backtest.timeframes:
        with timings.timed("mtf"):
            kept = None if allocator is None else allocator.kept()
            mtf, spans = mtf_prefetch(cfg, lakehouse, ingestion, windows, selected, symbols, kept)
    signals: dict[str, Signals] = {}
    if cfg.signals is not None:
        with timings.timed("signals"):
            signals = signals_prepare(cfg, mtf[cfg.backtest.timeframes[0]], base_bars, spans)
    stage: SimulationStage | MarketStage = SimulationStage(cfg.costs, cfg.backtest.vbt_engine)
    market = None
    if market_on:
        with timings.timed("market"):
            market = market_prepare(cfg, lakehouse, symbols, windows[0].start_ms, windows[-1].end_ms, market_bars[0])
            stage = market_stage(cfg, market)
    return RunPlan(
        cfg, lakehouse, ingestion, stage, base, interval_ms(base), interval, coverage, windows, plans, ranks,
        base_bars, mtf, signals, empty, timings, market, {} if allocator is None else allocator.audit(), risk_memo,
    )  # fmt: skip


def plan_from(plan: RunPlan, k0: int) -> RunPlan:
    """Return the plan of the windows from ``k0`` on, renumbered from 0.

    A walk-forward over it is exactly a run with ``backtest.start`` at window ``k0``'s ranking bar.
    """
    windows, plans = [], []
    for i, p in enumerate(plan.plans[k0:]):
        w = replace(p.window, index=i)
        windows.append(w)
        plans.append(WindowPlan(w, p.selection.model_copy(update={"window": i}), p.allocation))
    return replace(plan, windows=tuple(windows), plans=tuple(plans))
