"""The walk-forward as a fold: ``state = step(state, window)`` over the planned windows.

A step takes a window's plan (winners and target weights, decided by the strategy side in
:mod:`engine.run.plan`) and the books' state, builds the window's price block and orders, hands
them to the execution side (``RunPlan.stage``: targets in, fills and the new positions out) and
returns the new state with each book's output of the window. It changes nothing it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from engine.config.exit_rules import ExitRules
from engine.core.errors import DataError
from engine.core.progress import progress_iter
from engine.core.units import MS_NS, interval_ms
from engine.run.delisting import columns_short, delisting_haircut
from engine.run.frictions import frictions_build, market_execute, order_columns, pending_after, pending_in
from engine.run.funding import funding_records
from engine.run.plan import RunPlan, WindowPlan
from engine.run.state import Book, BookOutput, FoldState, Pass, PassSpec, Position, WindowOutput
from engine.run.trades import TRADE_KINDS
from engine.simulation.stage import GridBook, MarketStage, SimulationContext
from engine.simulation.stops import StopState
from engine.simulation.vbt import ORDER_REASONS, PriceBlock, SimResult
from engine.strategy.windows import Window

SIGNAL = ORDER_REASONS.index("signal")
DELISTED = ORDER_REASONS.index("delisted")
Schedule = list[ExitRules | None]
"""A book's exit rules per window (``task=wfo``)."""


def books_new(plan: RunPlan, rules: list[ExitRules | None], capitals: list[float] | None = None) -> FoldState:
    """Return the state before the first window: one book per rule set, all in cash.

    ``capitals`` (one per book; a capacity curve) replaces ``backtest.init_cash`` as the books' cash.
    """
    cash = capitals if capitals is not None else [plan.cfg.backtest.init_cash] * len(rules)
    return FoldState(tuple(Book(r, c) for r, c in zip(rules, cash, strict=True)))


def fold(
    plan: RunPlan,
    spec: PassSpec,
    state: FoldState,
    schedules: list[Schedule | None] | None = None,
    first: int = 0,
) -> Pass:
    """Fold the windows from ``first`` on over ``state``: one pass.

    ``schedules`` (one per book, None = fixed rules) gives a book's exit rules per window
    (``task=wfo``): they are switched at the window's start, before its first bar; the book's cash
    and positions (quantity, cost basis, peak, opening time) carry as they are.
    """
    outputs = tuple(BookOutput() for _ in state.books)
    starts: list[FoldState] = []
    label = f"walk-forward ({spec.ambiguity}, {spec.interval})"
    for i, wp in enumerate(progress_iter(plan.plans[first:], label, quiet=plan.cfg.quiet), start=first):
        if not spec.light:
            starts.append(state)
        if schedules is not None:
            state = _rules_switch(state, schedules, i)
        state, outs = step(plan, spec, state, wp)
        for out, w in zip(outputs, outs, strict=True):
            out.add(wp.window.index, w)
    return Pass(spec, state, outputs, tuple(starts))


def _rules_switch(state: FoldState, schedules: list[Schedule | None], i: int) -> FoldState:
    books = tuple(
        b if s is None or s[i] is b.rules else Book(s[i], b.cash, b.positions, b.pending)
        for b, s in zip(state.books, schedules, strict=True)
    )
    return FoldState(books, state.last_price, state.last_bar_ms)


def step(plan: RunPlan, spec: PassSpec, state: FoldState, wp: WindowPlan) -> tuple[FoldState, list[WindowOutput]]:
    """Simulate one window for every book of the pass (one simulation call): the new state and outputs.

    The simulation starts from the books' cash and positions (with their risk state: cost basis,
    trailing peak, opening time) and leaves the new ones the stops go on from next window.
    """
    with plan.timings.timed("mtf"):
        _mtf_fetch(plan, wp)
    with plan.timings.timed("simulation"):
        w, allocation = wp.window, wp.allocation
        winners = list(allocation.weights)
        held = {s for b in state.books for s in (*b.positions, *b.pending)}
        carried = sorted(held - set(winners))
        if not winners and not carried:
            return _flat_step(plan, spec, state, wp)
        columns = winners + carried
        short = columns_short(columns, allocation.weights, state)  # a short's delisting haircut is a higher price
        ts, block, delist = window_block(plan, w, winners, carried, spec.interval, state.last_price, short)
        results = _simulate(plan, spec, state, wp, ts, block, delist, columns)
        books = tuple(
            Book(b.rules, float(res.cash_end), positions_after(columns, res), pending_after(columns, res))
            for b, res in zip(state.books, results, strict=True)
        )
        last = dict(state.last_price)
        last.update({s: float(block["close"][-1, j]) for j, s in enumerate(columns)})
        new = FoldState(books, last, int(ts[-1]))
        outs = [
            _output(plan, spec, wp, book, res, ts, columns, delist)
            for book, res in zip(state.books, results, strict=True)
        ]
    return new, outs


def _mtf_fetch(plan: RunPlan, wp: WindowPlan) -> None:
    """Fetch the window's winners' finer bars (lazily: only what is missing; the plan's prefetch covers them)."""
    winners = wp.selection.winners
    if plan.cfg.backtest.timeframes and winners:
        start = wp.window.start_ms - plan.warmup_ms()
        plan.ingestion.fetch_mtf_for_candidates(winners, plan.cfg.backtest.timeframes, start, wp.window.end_ms)


def _flat_step(plan: RunPlan, spec: PassSpec, state: FoldState, wp: WindowPlan) -> tuple[FoldState, list[WindowOutput]]:
    """Step a window with nothing to hold or trade: every book stays in cash."""
    w = wp.window
    ts = plan.base_bars.ts_ms[plan.base_bars.rows(w.start_ms, w.end_ms)]
    new = FoldState(state.books, state.last_price, int(ts[-1]) if ts.size else state.last_bar_ms)
    outs = []
    for book in state.books:
        if spec.light:
            outs.append(WindowOutput(book.cash, 0, None))
            continue
        close_ts = ts + plan.base_ms
        audit = {**audit_line(plan, wp, book), "ambiguous": 0}
        equity, exposure = np.full(close_ts.size, book.cash), np.zeros(close_ts.size)
        outs.append(WindowOutput(book.cash, 0, None, close_ts, equity, exposure, None, audit))
    return new, outs


def _ffill_rows(a: np.ndarray) -> np.ndarray:
    """Row index of the last finite value at or before each row, per column (0 if none)."""
    idx = np.where(np.isfinite(a), np.arange(a.shape[0])[:, None], 0)
    return np.maximum.accumulate(idx, axis=0)


def _raw_block(plan: RunPlan, w: Window, winners: list[str], interval: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Return the winners' OHLC over the window on the bars of ``interval`` (NaN where a bar is missing)."""
    fields = ("open", "high", "low", "close")
    panel = plan.base_bars if interval == plan.base else plan.mtf[interval]
    rows = panel.rows(w.start_ms, w.end_ms)
    cols = [panel.col(s) for s in winners]
    ts, raw = panel.ts_ms[rows], {f: getattr(panel, f)[rows][:, cols] for f in fields}
    if interval != plan.base:
        missing = [s for j, s in enumerate(winners) if not np.isfinite(raw["open"][0, j])]
        if missing:
            msg = f"{interval} bars of {missing} do not start at {w.as_dict()['start']}: the lakehouse's mtf data is incomplete; delete lakehouse/mtf/interval={interval} to refetch"
            raise DataError(msg)
    return ts, raw


def window_block(
    plan: RunPlan,
    w: Window,
    winners: list[str],
    carried: list[str],
    interval: str,
    last_price: Mapping[str, float],
    short: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """OHLC of the window's columns on the simulation grid, gaps filled flat, plus a delist mask.

    Columns are the winners, then the positions carried from earlier windows; a carried symbol is
    held flat at its base bar's open at the window start (or its last close where it has none).
    The delist mask marks the bar after a winner's last one when its bars end inside the window,
    and the first bar of a carried symbol whose bars ended before the window; from there the
    block holds the last close, cut by ``execution.delisting_haircut`` (:func:`delisting_haircut`;
    ``short``: the columns held short, whose cover pays the haircut above the last close).
    """
    ts, raw = _raw_block(plan, w, winners, interval)
    bars = plan.base_bars
    n = ts.size
    flat = np.empty((n, len(carried)))
    start_row = bars.rows(w.start_ms, w.end_ms).start
    for j, s in enumerate(carried):
        p = bars.open[start_row, bars.col(s)] if s in bars.symbols and start_row < bars.ts_ms.size else np.nan
        flat[:, j] = p if np.isfinite(p) else last_price[s]
    held = {f: flat for f in ("open", "high", "low", "close")}
    if plan.market is not None and carried:  # a capped sale can last: the carried symbols' own prices
        held = _carried_bars(plan, w, carried, ts, interval, flat)
    close = np.hstack([raw["close"], held["close"]])
    prev = _ffill_rows(close)
    cidx = np.arange(close.shape[1])
    close_ff = close[prev, cidx]
    gap = ~np.isfinite(close)
    block = {"close": close_ff}
    for f in ("open", "high", "low"):
        a = np.hstack([raw[f], held[f]])
        block[f] = np.where(gap, close_ff, a)
    delist = np.zeros(close.shape, dtype=bool)
    for j, s in enumerate(winners):
        valid = np.flatnonzero(np.isfinite(raw["close"][:, j]))
        last_ms = plan.coverage[s][1]
        if valid.size and valid[-1] < n - 1 and last_ms + plan.base_ms <= int(ts[-1]):
            delist[valid[-1] + 1, j] = True
    for j, s in enumerate(carried):  # held, and its bars ended before the window: sold at its first bar
        if n and plan.coverage[s][1] + plan.base_ms <= int(ts[0]):
            delist[0, len(winners) + j] = True
    delisting_haircut(block, delist, plan.cfg.execution.delisting_haircut, short)
    return ts, block, delist


def _carried_bars(
    plan: RunPlan, w: Window, carried: list[str], ts: np.ndarray, interval: str, flat: np.ndarray
) -> dict[str, np.ndarray]:
    """Return the carried symbols' own base bars over the window on the simulation grid (market stage).

    Under a participation cap a carried position's sale can take several bars, so it must see each
    bar's price, not the window start's. On the base grid a row is its base bar; on a finer grid a
    row holds its base bar's open (flat: the finer bars of a symbol that no longer wins are not
    loaded). A missing bar is NaN (filled flat by the caller); a first row without a bar holds
    ``flat`` (the window start's price, as without the market stage).
    """
    bars = plan.base_bars
    rows = bars.rows(w.start_ms, w.end_ms)
    at = np.searchsorted(bars.ts_ms[rows], ts, side="right") - 1
    out = {f: flat.copy() for f in ("open", "high", "low", "close")}
    for j, s in enumerate(carried):
        if s not in bars.symbols or not at.size or at[0] < 0:
            continue
        c = bars.col(s)
        for f in out:
            src = f if interval == plan.base else "open"
            out[f][:, j] = getattr(bars, src)[rows, c][at]
        if not np.isfinite(out["close"][0, j]):
            for f in out:
                out[f][0, j] = flat[0, j]
    return out


def signal_weights(
    plan: RunPlan, winners: list[str], ts: np.ndarray, targets: dict[str, float], interval: str
) -> np.ndarray:
    """Return the entries and trend exits of the precomputed signals on the simulation grid.

    The result is a (n_bars, n_winners) weight array (NaN = no order), the same for every book
    of the window.

    A signal of the bar opened at T (signal interval) acts at the open of the grid bar that
    opens at T + interval (exactly on a grid as fine as the signal's, at the first bar at or
    after it on a coarser one): the target weight on an entry, 0 when the daily trend is lost.
    """
    step_ms = interval_ms(plan.cfg.backtest.timeframes[0])
    exact = interval_ms(interval) <= step_ms
    n = ts.size
    w = np.full((n, len(winners)), np.nan)
    for j, s in enumerate(winners):
        sig = plan.signals.get(s)
        if sig is None:
            continue
        lo, hi = np.searchsorted(sig.act_ms, [ts[0] if exact else ts[0] - interval_ms(interval) + 1, ts[-1] + 1])
        act, entry, exit_ = sig.act_ms[lo:hi], sig.entry[lo:hi], sig.exit[lo:hi]
        first = np.searchsorted(ts, act)
        rows = np.minimum(first, n - 1)
        on = (ts[rows] == act) if exact else (first < n)
        w[rows[on & exit_], j] = 0.0
        w[rows[on & entry], j] = targets[s]
    return w


def _book_weights(
    book: Book, targets: dict[str, float], columns: list[str], placed: np.ndarray, delist: np.ndarray
) -> np.ndarray:
    """Return a signal book's orders in the window.

    Held winners are re-weighted at the rebalance, new winners wait for their entry signal,
    positions that left the winners are closed.
    """
    weights = np.full(delist.shape, np.nan)
    weights[0, :] = [(targets[s] if s in book.positions else np.nan) if s in targets else 0.0 for s in columns]
    mine = weights[:, : placed.shape[1]]
    mine[np.isfinite(placed)] = placed[np.isfinite(placed)]
    weights[delist] = 0.0
    return weights


def _grid_book(
    book: Book, columns: list[str], weights: np.ndarray, market: bool = False, margin: bool = False
) -> GridBook:
    pos = [book.positions.get(s) for s in columns]
    carry = np.array([0.0 if p is None else p.qty for p in pos])
    risk = StopState(
        np.array([np.nan if p is None else p.basis for p in pos]),
        np.array([np.nan if p is None else p.peak for p in pos]),
        np.array([0 if p is None else p.opened_ms * MS_NS for p in pos], dtype=np.int64),
    )
    if market:  # the market stage: the remainders left unfilled by the last window go on (a margin book's
        # cash may be below zero: the notional it borrowed)
        cash = book.cash if margin else max(book.cash, 0.0)
        return GridBook(book.rules, weights, cash, carry, risk, pending_in(book.pending, columns))
    return GridBook(book.rules, weights, max(book.cash, 0.0), carry, risk)


def _simulate(
    plan: RunPlan,
    spec: PassSpec,
    state: FoldState,
    wp: WindowPlan,
    ts: np.ndarray,
    block: dict[str, np.ndarray],
    delist: np.ndarray,
    columns: list[str],
) -> list[SimResult]:
    """Targets to fills: every book's orders of the window, executed in one call of the execution stage."""
    selection, allocation = wp.selection, wp.allocation
    winners = columns[: len(allocation.weights)]
    prices = PriceBlock(
        open=block["open"],
        high=block["high"],
        low=block["low"],
        close=block["close"],
        index=ts.astype("datetime64[ms]").astype("datetime64[ns]"),
        columns=tuple(columns),
    )
    signals = plan.cfg.signals is not None
    market = plan.market is not None
    margin = _margin(plan)
    if signals:
        placed = signal_weights(plan, winners, ts, allocation.weights, spec.interval)
        books = [
            _grid_book(b, columns, _book_weights(b, allocation.weights, columns, placed, delist), market)
            for b in state.books
        ]
    else:  # the rebalance orders are the same for every book
        shared = np.full(block["close"].shape, np.nan)
        shared[0, :] = [allocation.weights.get(s, 0.0) for s in columns]
        shared[delist] = 0.0
        books = [_grid_book(b, columns, shared, market, margin) for b in state.books]
    # every book marks the window's columns alike, so the carry prices are common too
    carry_price = np.array([state.last_price.get(s, block["open"][0, j]) for j, s in enumerate(columns)])
    # one validated context per window, with the first book's rules (the run's own in a normal run);
    # the other books of a grid differ only in rules, weights and carried state
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
        init_cash=max(books[0].init_cash, 0.0),  # a margin book's own cash (below 0: borrowed) is its GridBook's
        carry_shares=books[0].carry_shares,
        carry_price=carry_price,
        carry_state=books[0].carry_state,
        ambiguity=spec.ambiguity,
        held_reweights="first_bar" if signals else "all",
    )
    if plan.market is not None:  # a friction is on: the market stage, with the window's market facts
        fine = plan.base_bars if spec.interval == plan.base else plan.mtf[spec.interval]
        carried = columns[len(winners) :]
        fr = frictions_build(plan.cfg, plan.market, fine, wp.window, winners, carried, ts, delist)
        index = plan.market.funding_index  # a perpetual: the funding of the window's bars (engine/run/funding.py)
        if index is not None:
            fr = replace(fr, funding=index.grid(fine, columns, ts, interval_ms(spec.interval)))
        assert isinstance(plan.stage, MarketStage)
        return market_execute(plan.cfg, plan.stage, ctx, books, fr)
    # the normal run is one book; an exit-rule grid runs every book in the same call
    return [plan.stage.execute(ctx)] if len(books) == 1 else plan.stage.execute_grid(ctx, books)


def _margin(plan: RunPlan) -> bool:
    """Whether the run's book is on a margin market (not long-only spot): shorts, borrowed cash, signed exposure."""
    return isinstance(plan.stage, MarketStage) and plan.stage.margin is not None


def positions_after(columns: list[str], res: SimResult) -> dict[str, Position]:
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


def audit_line(plan: RunPlan, wp: WindowPlan, book: Book) -> dict[str, object]:
    """Return the window's audit line of a book (its exits are added by the result assembler)."""
    rules = book.rules
    return {
        **wp.window.as_dict(),
        "winners": wp.selection.winners,
        "weights": wp.allocation.weights,
        "signals": None if plan.cfg.signals is None else "trend_in_trend",
        "interval": plan.interval,
        "mode": "rebalance" if rules is None else "exit_rules",
        "exit_rules": None if rules is None else rules.model_dump(),
    }


def _output(
    plan: RunPlan,
    spec: PassSpec,
    wp: WindowPlan,
    book: Book,
    res: SimResult,
    ts: np.ndarray,
    columns: list[str],
    delist: np.ndarray,
) -> WindowOutput:
    """Return a book's output of the window: equity, orders and audit line (a light pass: the counts only).

    Orders keep the simulator's reasons, except that a rebalance-mode order is relabelled
    ``signal`` when a signal placed it (after the window's first bar) and ``delisted`` when it
    sells a symbol whose bars ended.
    """
    stops = None
    if res.stop_exits is not None and len(res.stop_exits):
        stops = np.bincount(res.stop_exits.kind, minlength=len(TRADE_KINDS))
    n_amb = int(res.n_ambiguous)
    if spec.light:
        return WindowOutput(float(res.equity[-1]), n_amb, stops)
    equity = np.asarray(res.equity, dtype=np.float64)
    exposure = (res.equity - res.cash) / np.asarray(res.equity)  # a long-short book's net exposure (signed)
    if not _margin(plan):
        exposure = np.clip(exposure, 0.0, None)
    audit = {**audit_line(plan, wp, book), "ambiguous": n_amb}
    close_ts = ts + interval_ms(spec.interval)
    orders = _orders(plan, wp, res, ts, columns, delist, spec.interval)
    if orders is not None and plan.market is not None:
        orders.update(order_columns(res))
        orders["idx"] = res.order_records["idx"].astype(np.int64)  # 2 x bar + row: where funding falls
    funding = None if res.funding is None else funding_records(res.funding, wp.window.index, ts, columns)
    return WindowOutput(
        float(res.equity[-1]), n_amb, stops, close_ts, equity, exposure, orders, audit, res.costs, funding
    )  # fmt: skip


def _last_bar_ms(plan: RunPlan, interval: str, symbol: str, before_ms: int) -> int:
    """Return the open time of ``symbol``'s last bar of ``interval`` before ``before_ms`` (its base coverage if unloaded)."""
    panel = plan.base_bars if interval == plan.base else plan.mtf[interval]
    if symbol in panel.symbols:
        valid = np.flatnonzero(np.isfinite(panel.close[: panel.rows(0, before_ms).stop, panel.col(symbol)]))
        if valid.size:
            return int(panel.ts_ms[valid[-1]])
    return plan.coverage[symbol][1]


def _orders(
    plan: RunPlan,
    wp: WindowPlan,
    res: SimResult,
    ts: np.ndarray,
    columns: list[str],
    delist: np.ndarray,
    interval: str,
) -> dict[str, np.ndarray] | None:
    rec, bar = res.order_records, res.order_bar
    if not len(rec):
        return None
    reason = res.order_reason.astype(np.int64)
    plain = reason == 0
    if plan.cfg.signals is not None:
        reason[plain & (bar > 0)] = SIGNAL
    gone = plain & delist[bar, rec["col"]]
    reason[gone] = DELISTED
    # sold at the last close of a symbol whose bars ended: stamped with its last bar (the bar
    # before the delist row), like a position marked at the end of the data
    stamp = np.where(gone, ts[np.maximum(bar - 1, 0)], ts[bar])
    for k in np.flatnonzero(gone & (bar == 0)).tolist():  # carried in after its bars ended: its last bar
        stamp[k] = _last_bar_ms(plan, interval, str(columns[rec["col"][k]]), int(ts[0]))
    return {
        "window": np.full(len(rec), wp.window.index, dtype=np.int64),
        "timestamp": stamp,
        "symbol": np.asarray(columns, dtype=object)[rec["col"]],
        "side": rec["side"].astype(np.int64),
        "size": rec["size"],
        "price": rec["price"],
        "fees": rec["fees"],
        "reason": reason,
        "ambiguous": res.order_ambiguous,
    }
