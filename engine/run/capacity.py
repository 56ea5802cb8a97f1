"""A capacity curve: the same walk-forward at several starting capitals, as books of one pass.

The books differ only in their starting cash (``books_new(..., capitals)``): every window is one
call of the execution stage for all of them, like an exit-rule grid. Without frictions every
capital earns the same return (fills are fractional and costs proportional); with a participation
cap, impact or exchange limits, larger books fill less, later and dearer. The run's own book
(``backtest.init_cash``) is book 0 and gives the run's artefacts; a capital of the list equal to it
is that same book, not a second one.
"""

from __future__ import annotations

import math

import numpy as np

from engine.config import RunConfig
from engine.config.exit_rules import ExitRules
from engine.data.sources.base import DataSource
from engine.run.metrics import CapacityRow, CapacityTable, equity_metrics
from engine.run.plan import RunPlan, run_plan
from engine.run.result import Assembled, Walk, _span, assemble_audited, gc_frozen, walk
from engine.run.state import BookOutput, Pass

HALF = 0.5
"""The capacity capital is the first one whose Sharpe ratio is at most HALF of the smallest capital's."""


def capacity_books(init_cash: float, capitals: list[float]) -> tuple[list[float], list[int]]:
    """Return the books' capitals (the run's own first) and the book of each capital of the list."""
    books = [init_cash] + [c for c in capitals if c != init_cash]
    return books, [books.index(c) for c in capitals]


def _first_book(w: Walk) -> Walk:
    """Return the walk of book 0 alone (the run's own artefacts)."""

    def one(p: Pass) -> Pass:
        return Pass(p.spec, p.state.subset([0]), p.outputs[:1], ())

    optimistic = {0: w.optimistic[0]} if 0 in w.optimistic else {}
    return Walk(w.rules[:1], None, one(w.main), optimistic, None if w.on_base is None else one(w.on_base))


def _row(plan: RunPlan, capital: float, out: BookOutput) -> CapacityRow:
    ts, equity = np.concatenate(out.equity_ts), np.concatenate(out.equity)
    marks = (ts % plan.base_ms) == 0  # the base bars' closes, as the run's metrics
    m = equity_metrics(equity[marks], capital, *_span(plan, ts))
    n_orders = sum(len(o["size"]) for o in out.orders)
    traded = float(sum(np.sum(o["size"] * o["price"]) for o in out.orders))
    return {
        "capital": capital,
        "final_equity": float(equity[-1]),
        "total_return": m["total_return"],
        "sharpe": m["sharpe"],
        "max_drawdown": m["max_drawdown"],
        "n_orders": n_orders,
        "turnover": traded / capital,
        **{f"cost_{k}": float(v) for k, v in (out.costs or {}).items()},
    }


def half_sharpe_capital(capitals: list[float], sharpes: list[float | None]) -> tuple[float | None, str]:
    """Return the first capital whose Sharpe is at most half the smallest capital's, and why when None."""
    s0 = sharpes[0]
    if s0 is None or not math.isfinite(s0) or s0 <= 0:
        return None, "the smallest capital's Sharpe ratio is not positive: there is no half of it to fall to"
    for c, s in zip(capitals[1:], sharpes[1:], strict=True):
        if s is None or not math.isfinite(s) or s <= HALF * s0:
            return (
                c,
                f"the first capital of the list whose Sharpe ratio is at most half of {capitals[0]:g}'s ({s0:.2f})",
            )
    return None, f"the Sharpe ratio stays above half of {capitals[0]:g}'s ({s0:.2f}) at every capital of the list"


def capacity_table(plan: RunPlan, w: Walk, capitals: list[float], books: list[int]) -> CapacityTable:
    """Return the capacity curve: one row per capital (return, Sharpe, drawdown, costs) and the half-Sharpe capital."""
    rows = [_row(plan, c, w.main.outputs[b]) for c, b in zip(capitals, books, strict=True)]
    capital, why = half_sharpe_capital(capitals, [r["sharpe"] for r in rows])
    return {
        "rows": rows,
        "half_sharpe_capital": capital,
        "note": why,
        "frictionless": plan.market is None,
    }


def capacity_walk(plan: RunPlan, rules: ExitRules | None, capitals: list[float]) -> tuple[Walk, CapacityTable]:
    """Walk the run's book and one book per capital in one pass; return the run's walk and the curve."""
    cash, books = capacity_books(plan.cfg.backtest.init_cash, capitals)
    w = walk(plan, [rules] * len(cash), capitals=cash)
    return _first_book(w), capacity_table(plan, w, capitals, books)


def capacity_run(cfg: RunConfig, source: DataSource | None = None) -> Assembled:
    """Plan, walk the run's book with the capacity books, assemble the run's result with its curve."""
    with gc_frozen():
        plan = run_plan(cfg, source)
        w, table = capacity_walk(plan, cfg.exit_rules, cfg.execution.capitals())
        assembled = assemble_audited(plan, w, "the run's book")  # the run's own book, as a plain run
    assert assembled.result is not None
    assembled.result.capacity = table
    return assembled
