"""Passes and the result: a run's books walked forward, then turned into artefact frames and metrics.

:func:`walk` folds the plan's windows for a set of books: the pessimistic pass (the result), the
optimistic take-profit-first pass (only the books that met an ambiguous bar, resumed from the
state at the first window with one) and, with finer bars, the same books with stops on the base
bars. :func:`assemble` turns a walk into every book's metrics and the first book's
:class:`BacktestResult`: orders, round-trip trades (:mod:`engine.run.trades`), equity, winners, audit.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.config import RunConfig
from engine.config.exit_rules import ExitRules
from engine.core.errors import EngineError, NoWinnersError
from engine.core.jsontypes import Record
from engine.core.units import DAY_MS
from engine.data.sources.base import DataSource
from engine.run.benchmark import benchmark_frame
from engine.run.fold import Schedule, books_new, fold
from engine.run.frictions import ORDER_COLUMNS, costs_block
from engine.run.funding import funding_columns
from engine.run.metrics import (
    YEAR_DAYS,
    BaseBarsBlock,
    CapacityTable,
    Metrics,
    equity_metrics,
    metrics_record,
    trading_metrics,
)
from engine.run.plan import RunPlan, plan_from, run_plan
from engine.run.state import BookOutput, Pass, PassSpec
from engine.run.survivorship import audit_logs, survivors_plan, survivorship_block
from engine.run.trades import STOP_KINDS, TRADE_KINDS, kind_counts, trades_frame, trades_from_orders
from engine.run.winners import winners_frame
from engine.simulation.vbt import ORDER_REASONS, ORDER_SIDES
from engine.strategy.windows import Window

log = logging.getLogger(__name__)

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


@dataclass
class BacktestResult:
    """Everything a run produced, before it is written to disk."""

    metrics: Metrics
    equity: pl.DataFrame
    orders: pl.DataFrame
    trades: pl.DataFrame
    winners: pl.DataFrame
    audit: list[Record]
    timings: dict[str, float]
    data_files: list[str]
    benchmark: pl.DataFrame
    wfo: Record | None = None
    """task=wfo: the per-window choices (``frame``), the grid's per-window returns and rules."""
    capacity: CapacityTable | None = None
    """A capacity curve (``execution.capacity`` or task=capacity): :func:`engine.run.capacity.capacity_table`."""
    funding: pl.DataFrame | None = None
    """A perpetual run's funding payments (``timestamp``, ``symbol``, ``amount``: paid, received < 0)."""


@dataclass(frozen=True)
class Walk:
    """The passes of one set of books over a plan."""

    rules: list[ExitRules | None]
    schedules: list[Schedule | None] | None
    main: Pass
    optimistic: dict[int, BookOutput]
    """The take-profit-first outputs of the books that met an ambiguous bar, by book."""
    on_base: Pass | None
    """The same books with stops on the base bars (with finer bars loaded and exit rules on)."""

    def active(self, i: int) -> bool:
        """Whether book ``i`` ever trades with exit rules."""
        schedule = self.schedules[i] if self.schedules is not None else None
        return self.rules[i] is not None if schedule is None else any(r is not None for r in schedule)


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Freeze the objects alive now (modules, config, data panels) for the duration of a walk.

    Frozen, the cyclic GC stops rescanning them in every full collection the walk-forward's many
    small allocations trigger (~0.1-0.2 s each once vectorbt is imported).
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def walk(
    plan: RunPlan,
    rules: list[ExitRules | None],
    schedules: list[Schedule | None] | None = None,
    capitals: list[float] | None = None,
) -> Walk:
    """Run the passes over the plan's windows for ``rules``, one book each (``schedules``: rules per window).

    ``capitals``: each book's starting cash (a capacity curve; default ``backtest.init_cash``).
    """
    main = fold(plan, PassSpec("pessimistic", plan.interval), books_new(plan, rules, capitals), schedules)
    every: list[ExitRules | None] = []
    for i, r0 in enumerate(rules):
        schedule = schedules[i] if schedules else None
        every.extend(schedule if schedule is not None else [r0])
    active = any(r is not None for r in every)
    # the optimistic (take-profit-first) pass runs only the books that met an ambiguous bar, from
    # the first window with one; the others would repeat their pessimistic pass exactly
    ambiguous = [i for i, out in enumerate(main.outputs) if out.n_ambiguous]
    optimistic: dict[int, BookOutput] = {}
    if active and ambiguous:
        n = len(plan.plans)
        first = min(min((w for i in ambiguous for w in main.outputs[i].ambiguous_windows[:1]), default=n), n - 1)
        alt = fold(
            plan,
            PassSpec("optimistic", plan.interval, light=True),
            main.starts[first].subset(ambiguous),
            None if schedules is None else [schedules[i] for i in ambiguous],
            first=first,
        )
        optimistic = dict(zip(ambiguous, alt.outputs, strict=True))
    on_base = None
    if active and plan.interval != plan.base:
        on_base = fold(plan, PassSpec("pessimistic", plan.base), books_new(plan, rules, capitals), schedules)
    return Walk(list(rules), schedules, main, optimistic, on_base)


def orders_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
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


def orders_frame(cols: dict[str, np.ndarray]) -> pl.DataFrame:
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
            # the market stage's columns of each fill (engine/run/frictions.py), only when it ran
            **{c: pl.Series(c, cols[c], dtype=pl.Float64) for c in ORDER_COLUMNS if c in cols},
        },
        schema={**ORDER_SCHEMA, **{c: pl.Float64 for c in ORDER_COLUMNS if c in cols}},
    )


def _span(plan: RunPlan, close_ts: np.ndarray) -> tuple[float, float]:
    """Days from the first window's start to the last equity mark, and base bars per year (365 days)."""
    return (int(close_ts[-1]) - plan.windows[0].start_ms) / DAY_MS, YEAR_DAYS * DAY_MS / plan.base_ms


def _base_comparison(plan: RunPlan, main: BookOutput, base: BookOutput) -> BaseBarsBlock:
    """Return the same winners and rules with stops on the base bars only: what they misstate.

    Kept under ``base_bars`` in metrics.json (its ``interval`` says which bars: daily by default).
    """
    ts, eq = np.concatenate(base.equity_ts), np.concatenate(base.equity)
    m = equity_metrics(eq[(ts % plan.base_ms) == 0], plan.cfg.backtest.init_cash, *_span(plan, ts))
    return {
        "interval": plan.base,
        "total_return": m["total_return"],
        "max_drawdown": m["max_drawdown"],
        "n_stop_exits": int(sum(base.stop_exits[TRADE_KINDS.index(k)] for k in STOP_KINDS)),
        "n_ambiguous_exits": base.n_ambiguous,
        "ambiguous_resolved_by_finer_bars": max(base.n_ambiguous - main.n_ambiguous, 0),
    }


def _book_metrics(
    plan: RunPlan, out: BookOutput, orders: dict[str, np.ndarray], trades: dict[str, np.ndarray], extra: Metrics
) -> Metrics:
    ts, equity, exposure = np.concatenate(out.equity_ts), np.concatenate(out.equity), np.concatenate(out.exposure)
    marks = (ts % plan.base_ms) == 0  # the base bars' closes
    n_days, per_year = _span(plan, ts)
    traded = float(np.sum(orders["size"] * orders["price"]))
    by_kind = kind_counts(trades["exit_kind"])
    metrics = metrics_record(
        {
            **equity_metrics(equity[marks], plan.cfg.backtest.init_cash, n_days, per_year),
            **trading_metrics(
                len(orders["size"]), traded, trades["return"], by_kind, equity[marks], exposure[marks], n_days
            ),
            "final_equity": float(equity[-1]),
            "n_windows": len(plan.windows),
            "empty_windows": plan.empty_windows,
            "start": plan.windows[0].as_dict()["start"],
            "end": plan.windows[-1].as_dict()["end"],
            "interval": plan.interval,
            "base_interval": plan.base,
            "periods_per_year": per_year,
            "n_ambiguous_exits": out.n_ambiguous,
            "n_stop_exits": sum(by_kind[k] for k in STOP_KINDS),
            **extra,
        }
    )
    if not len(orders["size"]):  # only then: an ordinary run's metrics.json keeps its keys
        metrics["warnings"] = [NO_ORDERS]
    return metrics


@dataclass
class Assembled:
    """Every book's metrics, and the first book's full result (None when not asked for)."""

    book_metrics: list[Metrics]
    result: BacktestResult | None


def assemble(plan: RunPlan, w: Walk, first_result: bool = True, frames: bool = True) -> Assembled:
    """Turn a walk into every book's metrics and (``first_result``) the first book's artefact frames.

    ``frames=False``: the winners frame and the benchmark are left empty (:func:`assemble_audited` makes them last).
    """
    with plan.timings.timed("metrics"):
        init = plan.cfg.backtest.init_cash
        state = w.main.state
        metrics: list[Metrics] = []
        first: tuple[pl.DataFrame, dict[str, np.ndarray]] | None = None
        for i, out in enumerate(w.main.outputs):
            orders = orders_columns(out.orders)
            funding = (
                funding_columns(out.funding) if plan.market is not None and plan.market.funding is not None else None
            )
            trades = trades_from_orders(
                orders, dict(state.last_price), state.last_bar_ms, plan.windows[-1].index, funding
            )
            extra: Metrics = {"mode": "exit_rules" if w.active(i) else "rebalance", "base_bars": None}
            if w.active(i):
                final = w.optimistic[i].final_equity if i in w.optimistic else out.final_equity
                extra["total_return_optimistic"] = float(final / init - 1.0)
                if w.on_base is not None:
                    extra["base_bars"] = _base_comparison(plan, out, w.on_base.outputs[i])
            else:
                extra["total_return_optimistic"] = None
            if plan.market is not None:  # the market stage only: what each friction took
                extra["costs"] = costs_block(out.costs or {})
            if funding is not None:  # a perpetual run: the funding the book paid (received: < 0)
                extra["funding_paid"] = float(funding["amount"].sum())
            metrics.append(_book_metrics(plan, out, orders, trades, extra))
            if i == 0 and NO_ORDERS in metrics[-1].get("warnings", ()):
                log.warning("%s", NO_ORDERS)
            if i == 0:
                first = (orders_frame(orders), trades)
        assert first is not None
        result = _result(plan, w.main.outputs[0], first[0], first[1], metrics[0], frames) if first_result else None
    if result is not None:
        result.timings = dict(plan.timings.seconds)
        if plan.market is not None and plan.market.funding is not None:  # a perpetual run's funding over time
            f = funding_columns(w.main.outputs[0].funding)
            result.funding = pl.DataFrame(
                {"timestamp": f["timestamp"], "symbol": f["symbol"].tolist(), "amount": f["amount"]},
                schema={"timestamp": pl.Int64, "symbol": pl.String, "amount": pl.Float64},
            ).with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC")))
    return Assembled(metrics, result)


def _data_files(plan: RunPlan, traded_symbols: set[str]) -> list[str]:
    """Return the store files the run read: the base bars, and the finer bars of the symbols it traded."""
    traded = {f"symbol={s.replace('/', '_')}" for s in traded_symbols}
    fine = {f"interval={tf}" for tf in plan.cfg.backtest.timeframes}  # other runs' finer bars were not read
    return sorted(
        str(p.relative_to(plan.lakehouse.root.parent))  # namespace/bars/...: relative to paths.lakehouse_dir
        for kind in ("bars", "mtf")
        for p in plan.lakehouse.data_files(kind)
        if (kind == "bars" and p.parent.parent.name == f"interval={plan.base}")
        or (kind == "mtf" and p.parent.parent.name in fine and p.parent.name in traded)
    )


def _result(
    plan: RunPlan, out: BookOutput, orders: pl.DataFrame, trades: dict[str, np.ndarray], metrics: Metrics, frames: bool
) -> BacktestResult:
    ts, equity, exposure = np.concatenate(out.equity_ts), np.concatenate(out.equity), np.concatenate(out.exposure)
    # each window's audit line counts the trades that ended in it, by exit kind
    ended: dict[int, dict[str, int]] = {}
    for wi, k in zip(trades["exit_window"].tolist(), trades["exit_kind"].tolist(), strict=True):
        kinds = ended.setdefault(wi, {})
        kinds[TRADE_KINDS[k]] = kinds.get(TRADE_KINDS[k], 0) + 1
    for a in out.audit:
        a["exits"] = ended.get(a["window"], {})
        if plan.portfolio:  # portfolio construction: the window's gross, ex-ante volatility, turnover
            a["portfolio"] = plan.portfolio.get(plan.windows[a["window"]].rank_ms)
    trades_df = trades_frame(trades)
    equity_df = pl.DataFrame({"timestamp": ts, "equity": equity, "exposure": exposure}).with_columns(
        pl.col("timestamp").cast(pl.Datetime("ms", "UTC"))
    )
    files = _data_files(plan, set(trades_df.get_column("symbol").to_list()))
    winners, benchmark = (
        (winners_frame(plan, out), benchmark_frame(plan)) if frames else (pl.DataFrame(), pl.DataFrame())
    )
    return BacktestResult(metrics, equity_df, orders, trades_df, winners, out.audit, {}, files, benchmark)


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


def survivorship_audit(plan: RunPlan, w: Walk, run: Assembled, scope: str, k0: int = 0) -> None:
    """Add the ``survivorship`` block to the first book's result metrics (``survivorship.audit``).

    The first book (its rules, or its schedule) is folded again over the survivors-only plan
    (:func:`engine.run.survivorship.survivors_plan`; from window ``k0`` on, task=wfo's cut) and
    assembled like any book: its pessimistic pass only (the block reports its total return,
    Sharpe and drawdown). With no delisted symbol the survivors-only run is the run itself.
    """
    if not plan.cfg.survivorship.audit or run.result is None:
        return
    t0 = time.perf_counter()
    metrics: Metrics | None = run.book_metrics[0]
    with audit_logs():
        try:
            sp = survivors_plan(plan)
        except NoWinnersError:
            sp, metrics = None, None
        if sp is not None:
            sp = sp if k0 == 0 else plan_from(sp, k0)
            sched = None if w.schedules is None else w.schedules[:1]
            main = fold(sp, PassSpec("pessimistic", sp.interval), books_new(sp, w.rules[:1]), sched)
            metrics = assemble(sp, Walk(w.rules[:1], sched, main, {}, None), first_result=False).book_metrics[0]
    block = survivorship_block(plan, run.book_metrics[0], metrics, orders_columns(w.main.outputs[0].orders), scope)
    run.result.metrics = {**run.result.metrics, "survivorship": block}
    run.result.timings["survivorship"] = time.perf_counter() - t0


def assemble_audited(plan: RunPlan, w: Walk, scope: str, audit_plan: RunPlan | None = None, k0: int = 0) -> Assembled:
    """:func:`assemble` a walk and :func:`survivorship_audit` its first book (``audit_plan``, default ``plan``; ``k0``).

    The first book's winners frame and benchmark are made last, after the audit: they are the
    largest frames of a result (they grow with the universe) and the audit holds a second plan
    (its own bars and ranking) while it runs, so the two no longer add up (docs/PERFORMANCE.md).
    The same frames as :func:`assemble` makes, from the same plan and book.
    """
    run = assemble(plan, w, frames=False)
    survivorship_audit(plan if audit_plan is None else audit_plan, w, run, scope, k0)
    assert run.result is not None
    with plan.timings.timed("metrics"):
        run.result.benchmark = benchmark_frame(plan)  # first: its batches' pages serve the winners frame next
        run.result.winners = winners_frame(plan, w.main.outputs[0])
    run.result.timings["metrics"] = plan.timings.seconds["metrics"]
    return run


def backtest_run(
    cfg: RunConfig, rules: list[ExitRules | None] | None = None, source: DataSource | None = None
) -> Assembled:
    """Plan, walk and assemble a run: ``rules`` are its books (default: the run's own exit rules, one book).

    The first book is audited for survivorship (:func:`survivorship_audit`).
    """
    with gc_frozen():
        plan = run_plan(cfg, source)
        w = walk(plan, [cfg.exit_rules] if rules is None else rules)
        return assemble_audited(plan, w, "the run's book" if len(w.rules) == 1 else "the grid's combination 000")


@dataclass(frozen=True)
class ChosenWalk:
    """A walk-forward optimisation: the grid's walk, the choices made from it, and the chosen book's result."""

    result: BacktestResult
    returns: np.ndarray
    """(windows x books) per-window returns of the grid."""
    choices: np.ndarray
    """The book chosen per window (-1: a training window)."""
    grid_metrics: list[Metrics]
    windows: tuple[Window, ...]
    """Every window of the grid, before the out-of-sample cut."""
    oos_returns: np.ndarray


def walk_chosen(
    cfg: RunConfig,
    rules: list[ExitRules | None],
    choose: Callable[[np.ndarray], np.ndarray],
    windows_check: Callable[[int], None] | None = None,
    source: DataSource | None = None,
) -> ChosenWalk:
    """Walk every book of ``rules``, choose one per window from their returns, and trade the choices.

    Every book walks forward in one pass (as ``task=grid``); ``choose(returns)`` maps their
    (windows x books) per-window returns to one chosen book per window (-1: a training window);
    then one out-of-sample book walks the windows from the first choice over the same plan, its exit
    rules switched at each window start to the chosen book's (cash and positions carry).
    ``windows_check(n_windows)`` may refuse the run once the windows are known, before any simulation.
    """
    with gc_frozen():
        plan = run_plan(cfg, source)
        if windows_check is not None:
            windows_check(len(plan.windows))
        grid_walk = walk(plan, rules)
        grid = assemble(plan, grid_walk, first_result=False)
        init = cfg.backtest.init_cash
        returns = np.column_stack([window_returns(out, init) for out in grid_walk.main.outputs])
        del grid_walk  # the grid's states and outputs are not needed past its returns
        choices = np.asarray(choose(returns), dtype=np.int64)
        chosen = np.flatnonzero(choices >= 0)
        if not chosen.size:
            msg = "no window is left to trade after the training windows"
            raise EngineError(msg)
        k0 = int(chosen[0])
        schedule = [rules[int(c)] for c in choices[k0:]]
        oos_plan = plan_from(plan, k0)
        oos_walk = walk(oos_plan, [schedule[0]], [schedule])
        oos = assemble_audited(oos_plan, oos_walk, "the out-of-sample book, its per-window choices kept", plan, k0)
        assert oos.result is not None
        oos_returns = window_returns(oos_walk.main.outputs[0], init)
    return ChosenWalk(oos.result, returns, choices, grid.book_metrics, plan.windows, oos_returns)
