"""The survivorship audit: the same run ranked only on the symbols still listed at the data's end.

A backtest on today's exchange list never meets a coin that was delisted: it ranks only the
survivors. The honest run ranks every symbol that was trading at each ranking bar, the ones
delisted later included. The audit walks the same book a second time over a survivors-only plan
and reports the difference (metrics.json ``survivorship``, a report section; docs/SURVIVORSHIP.md).

A *survivor* is a symbol of the universe whose base bars reach the data's last bar (the last bar
of any symbol in the store); every other symbol of the universe counts as delisted (for files: a
pair whose bars end before the data's end). The survivors-only plan is :func:`plan_ranked` on the
run's own ranking restricted to the survivors (:func:`engine.strategy.ranking.ranks_restrict`):
equal to a run with the delisted symbols in ``universe.exclude``, without ranking the universe
again. Everything after the ranking (winners' bars, finer bars, weights, signals) is built as for
any run, and the book is folded and assembled by the same steps.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping

import numpy as np

from engine.config.book import is_sided
from engine.core.jsontypes import Record
from engine.data.panel import Panel
from engine.run.metrics import Metrics
from engine.run.plan import RunPlan, Timings, plan_ranked
from engine.simulation.vbt import ORDER_REASONS
from engine.strategy.ranking import ranks_restrict

PREFIX = "survivorship audit (survivors-only universe): "
"""Said before every log line the audit's own plan and walk write, so none reads as the run's."""
_LOGGERS = ("engine.run.plan", "engine.run.result", "engine.strategy.ranking")
DELISTED = ORDER_REASONS.index("delisted")


def universe_symbols(plan: RunPlan) -> list[str]:
    """Return the symbols of the run's universe (``universe.symbols`` or the whole store, less ``exclude``)."""
    universe = plan.cfg.universe
    return sorted(s for s in (universe.symbols or plan.coverage) if s not in universe.exclude)


def data_end_ms(coverage: Mapping[str, tuple[int, int]]) -> int:
    """Return the open time (ms) of the data's last base bar: the last bar of any symbol in the store."""
    return max(b for _, b in coverage.values())


def delisted_symbols(plan: RunPlan) -> list[str]:
    """Return the universe's symbols whose base bars end before the data's last bar, sorted."""
    end = data_end_ms(plan.coverage)
    return [s for s in universe_symbols(plan) if plan.coverage[s][1] < end]


class _Prefix(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = PREFIX + str(record.msg)
        return True


@contextlib.contextmanager
def audit_logs() -> Iterator[None]:
    """Prefix the log lines of the audit's plan and walk with :data:`PREFIX` while the block runs."""
    loggers, prefix = [logging.getLogger(n) for n in _LOGGERS], _Prefix()
    for lg in loggers:
        lg.addFilter(prefix)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(prefix)


def survivors_plan(plan: RunPlan) -> RunPlan | None:
    """Return the plan of the same run on the survivors only; None when no symbol of the universe was delisted.

    Raises :class:`NoWinnersError` when no survivor is ever a winner (the audit then reports a
    survivors-only run that held cash throughout).
    """
    gone = set(delisted_symbols(plan))
    if not gone:
        return None
    keep = [s for s in universe_symbols(plan) if s not in gone]
    cfg = plan.cfg
    # only the winners are read; a book with a short leg reads the bottom of the ranking too
    ranks = ranks_restrict(plan.ranks, keep, cfg.ranking, None if is_sided(cfg) else cfg.ranking.top_n)
    return plan_ranked(
        cfg,
        plan.lakehouse,
        plan.ingestion,
        plan.interval,
        plan.coverage,
        plan.windows,
        ranks,
        Timings(),
        plan.risk_memo,
        _widest_panel(plan),
    )


def _widest_panel(plan: RunPlan) -> Panel:
    """Return the run's bars over its widest span: the base bars, or the market stage's from further back."""
    held = [plan.base_bars] if plan.market is None else [plan.base_bars, plan.market.panel]
    return max(held, key=lambda p: p.ts_ms.size)


def _held_delisted(orders: Mapping[str, np.ndarray], gone: set[str]) -> tuple[list[str], int]:
    """Return the delisted symbols the run traded, and how many of its orders were delisting exits."""
    traded = sorted({str(s) for s in orders["symbol"].tolist()} & gone)
    return traded, int(np.count_nonzero(orders["reason"] == DELISTED))


def survivorship_block(
    plan: RunPlan,
    run: Metrics,
    survivors: Metrics | None,
    orders: Mapping[str, np.ndarray],
    scope: str,
) -> Record:
    """Return metrics.json's ``survivorship`` block.

    Parameters
    ----------
    plan : RunPlan
        The run's plan (its universe, coverage and settings).
    run, survivors : Mapping
        The audited book's metrics and the same book's on the survivors-only plan (None: no
        survivor was ever a winner, so the survivors-only run held its cash: return 0).
    orders : Mapping[str, np.ndarray]
        The audited book's orders (``symbol``, ``reason``).
    scope : str
        Which book was audited, in words.

    Returns
    -------
    dict
        ``total_return``, ``sharpe`` and ``max_drawdown`` of the survivors-only run;
        ``inflation`` = its total return minus the run's (> 0: ranking only today's survivors
        makes the strategy look better than it was); ``sharpe_inflation`` likewise; the
        universe's counts (``n_symbols``, ``n_survivors``, ``n_delisted``), the delisted symbols
        the run traded and its delisting exits, the haircut, the data's last bar (open time) and the scope.
    """
    gone = set(delisted_symbols(plan))
    n_symbols = len(universe_symbols(plan))
    s: Record = dict(survivors) if survivors is not None else {"total_return": 0.0, "sharpe": None, "max_drawdown": 0.0}
    traded, exits = _held_delisted(orders, gone)
    sharpe_run, sharpe_s = run.get("sharpe"), s.get("sharpe")
    return {
        "total_return": s["total_return"],
        "sharpe": sharpe_s,
        "max_drawdown": s["max_drawdown"],
        "inflation": float(s["total_return"] - run["total_return"]),
        "sharpe_inflation": None if sharpe_run is None or sharpe_s is None else float(sharpe_s - sharpe_run),
        "n_symbols": n_symbols,
        "n_survivors": n_symbols - len(gone),
        "n_delisted": len(gone),
        "n_delisted_traded": len(traded),
        "delisted_traded": traded,
        "delisting_exits": exits,
        "delisting_haircut": plan.cfg.execution.delisting_haircut,
        "data_end": str(np.datetime64(data_end_ms(plan.coverage), "ms")),
        "scope": scope
        if survivors is not None
        else scope + "; no survivor was ever a winner: the survivors-only run held cash",
    }
