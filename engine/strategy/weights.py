"""Portfolio construction of each window: a weighting, the gross (or a volatility target), the limits.

Per window, on the strategy side and point in time (docs/PORTFOLIO.md):

1. unit weights ``u`` (summing to 1) of the tradable winners: ``equal`` / ``inverse_vol``
   (:func:`engine.strategy.ranking.weights_compute`), or ``erc`` / ``hrp`` / ``min_variance`` from
   the covariance of their returns over ``portfolio.cov_window`` base bars up to the ranking bar's
   close (:mod:`engine.strategy.covariance`); a covariance that cannot be estimated gives equal
   weights and a warning line;
2. the gross ``g``: ``min(gross_exposure, max_gross)``, or with ``target_vol``
   ``min(target_vol / sigma(u), max_gross)`` with ``sigma(u) = sqrt(u' C u * bars per year)``;
3. the target ``t = cap(g u, max_weight)``: weights above the cap are cut to it and the excess is
   spread over the others pro rata, repeatedly (what no one can take stays in cash);
4. with ``max_turnover``: the held book ``h`` is the previous targets drifted by the base bars
   from the previous window's first open to this ranking bar's close (cash stays cash); held
   weights above ``max_weight`` are first cut to it (``h'``), then the book moves from ``h'``
   towards ``t`` by ``lambda = min(1, (max_turnover - |h - h'|) / |t - h'|)``, so
   ``sum |w - h| <= max_turnover`` and ``w <= max_weight`` both hold. A symbol that left the
   winners keeps ``(1 - lambda) h'``. Symbols without a bar at the window's first open (delisted)
   are sold by the simulation and left out of the sum ("stops and delistings aside").

Weights are long-only (``>= 0``); the functions on arrays take signed weights where the
formula does (absolute turnover, ``|w|`` caps): :mod:`engine.strategy.sided_risk` reuses them for
long-short and leveraged books.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from engine.config import PortfolioConfig, RunConfig
from engine.core.choices import RISK_WEIGHTINGS
from engine.core.jsontypes import JSON
from engine.core.units import DAY_MS, interval_ms
from engine.data.panel import Panel
from engine.strategy.book_nb import growth_nb, window_returns_nb
from engine.strategy.covariance import Moments, covariance_of, hrp_weights, moments, skfolio_weights
from engine.strategy.polish import erc_polish, min_variance_polish
from engine.strategy.ranking import weights_compute
from engine.strategy.windows import Window

log = logging.getLogger(__name__)
YEAR_MS = 365 * DAY_MS
RiskMemo = dict[tuple[str, str, tuple[int, ...], bytes], tuple[np.ndarray | None, np.ndarray | None, str | None]]
"""The estimates of a run's windows keyed on exactly their inputs (weighting, estimator, the returns' shape
and bytes): the covariance, the risk weights (None: none) and why not. The survivorship audit's plan
reuses the run's where its winners and returns coincide (docs/PORTFOLIO.md, "Speed")."""


def cap_weights(w: np.ndarray, cap: float | None) -> np.ndarray:
    """Cut weights above ``cap`` to it and spread the excess pro rata over the others, until none is above.

    The sum is kept unless every positive weight reaches the cap (the rest stays in cash); zero
    weights stay zero. Signed weights are capped on their absolute value.
    """
    out = np.abs(w).astype(np.float64)
    if cap is None:
        return np.asarray(out * np.sign(w), dtype=np.float64)
    free = out > 0
    while True:
        over = free & (out > cap)
        if not over.any():
            break
        excess = float((out[over] - cap).sum())
        out[over] = cap
        free &= ~over
        base = float(out[free].sum())
        if not free.any() or base <= 0:
            break
        out[free] += excess * out[free] / base
    return np.asarray(out * np.sign(w), dtype=np.float64)


def limits_apply(
    target: np.ndarray, held: np.ndarray, max_weight: float | None, max_turnover: float | None
) -> tuple[np.ndarray, float]:
    """Return the book after the turnover limit, and its turnover ``sum |w - held|``.

    ``target`` already respects ``max_weight``. Held weights above the cap are cut first (that
    much turnover is spent whatever the limit: when it alone exceeds ``max_turnover`` the cap
    wins and a warning says so); the rest of the budget moves the book towards the target.
    """
    trimmed = held if max_weight is None else np.sign(held) * np.minimum(np.abs(held), max_weight)
    if max_turnover is None:
        w = target
    else:
        budget = max_turnover - float(np.abs(held - trimmed).sum())
        if budget < 0:
            log.warning(
                "portfolio.max_turnover=%g: cutting the held weights to portfolio.max_weight=%g alone trades %.6g; "
                "the cap wins",
                max_turnover,
                max_weight,
                max_turnover - budget,
            )
            budget = 0.0
        need = float(np.abs(target - trimmed).sum())
        lam = 1.0 if need <= budget else budget / need
        w = trimmed + lam * (target - trimmed)
        if max_weight is not None:
            w = np.clip(w, -max_weight, max_weight)
    return w, float(np.abs(w - held).sum())


@dataclass(frozen=True)
class BookRecord:
    """What portfolio construction decided in one window (the report and the tests read it)."""

    window: int
    rank_ms: int
    gross: float
    vol: float
    """Annualised ex-ante volatility of the unit book over the covariance window (NaN: none)."""
    turnover: float
    """``sum |w - held|`` against the drifted held book (the first window: against cash)."""
    held: dict[str, float]
    kept: list[str]
    """Symbols that left the winners and keep a weight (the turnover limit)."""
    fallback: str | None


@dataclass
class Allocator:
    """Weights every window in turn (the turnover limit needs the previous window's).

    ``closes`` holds the winners' base bars from ``cov_window`` bars before the first ranking bar
    (None when no return is needed); ``bars`` the base bars the simulation trades on.
    """

    p: PortfolioConfig
    interval: str
    bars: Panel
    closes: Panel | None
    records: list[BookRecord] = field(default_factory=list)
    _prev: tuple[Window, dict[str, float]] | None = None
    memo: RiskMemo = field(default_factory=dict)

    def window(self, w: Window, chosen: pl.DataFrame, tradable: list[str]) -> dict[str, float]:
        """Return window ``w``'s weights: the tradable winners' (rank order), then held symbols kept by the limit.

        ``chosen`` holds the tradable winners' ranking rows (``symbol``, ``weight_vol``).
        """
        unit, cov, why = self._unit(w, chosen)
        gross, vol = self._gross(w, unit, cov)
        target = cap_weights(gross * unit, self.p.max_weight)
        held = self._held(w)
        winners = set(tradable)
        names = tradable + sorted(self._with_open([s for s in held if s not in winners], w.start_ms))
        t = np.zeros(len(names))
        t[: len(tradable)] = target
        h = np.fromiter(map(held.get, names, itertools.repeat(0.0)), np.float64, len(names))
        book, turnover = limits_apply(t, h, self.p.max_weight, self.p.max_turnover)
        out = {s: x for s, x in zip(names, book.tolist(), strict=True) if s in winners or x > 0}
        kept = [s for s in out if s not in winners]
        self.records.append(BookRecord(w.index, w.rank_ms, gross, vol, turnover, held, kept, why))
        self._prev = (w, out)
        return out

    @functools.cached_property
    def _cov_bars(self) -> int:
        return self.p.cov_bars(self.interval)

    @functools.cached_property
    def _bars_per_year(self) -> float:
        return YEAR_MS / interval_ms(self.interval)

    def kept(self) -> dict[int, list[str]]:
        """Per window, the symbols the turnover limit kept after they left the winners."""
        return {r.window: r.kept for r in self.records if r.kept}

    def audit(self) -> dict[int, dict[str, JSON]]:
        """Per ranking bar (ms), what the audit line of its window says of the construction (strict JSON)."""
        return {
            r.rank_ms: {
                "gross": r.gross,
                "ex_ante_vol": r.vol if math.isfinite(r.vol) else None,
                "turnover": r.turnover,
                "kept": r.kept,
                "fallback": r.fallback,
            }
            for r in self.records
        }

    def _unit(self, w: Window, chosen: pl.DataFrame) -> tuple[np.ndarray, np.ndarray | None, str | None]:
        """Return the unit weights (summing to 1) of the winners, their covariance (None: not needed) and any fallback."""
        n = chosen.height
        if n == 0:
            return np.zeros(0), None, None
        cov = risk = why = None
        if self.p.needs_returns(self.p.weighting):
            x = self._returns(w, chosen.get_column("symbol").to_list())
            key = (self.p.weighting, self.p.covariance, x.shape, x.tobytes())
            if key not in self.memo:  # the same inputs give the same estimates: computed once per run
                self.memo[key] = _estimates(self.p.weighting, x, self.p.covariance)
            cov, risk, why = self.memo[key]
        if self.p.weighting not in RISK_WEIGHTINGS:
            raw = weights_compute(chosen, self.p.model_copy(update={"gross_exposure": 1.0}))
            u = np.array([raw[s] for s in chosen.get_column("symbol").to_list()])
        elif n == 1:
            u = np.ones(1)
        else:
            u = np.full(n, 1.0 / n) if risk is None else risk
        if why is not None and self.p.weighting in RISK_WEIGHTINGS and n > 1:
            log.warning("window %d: %s weights: %s; equal weights used", w.index, self.p.weighting, why)
        return u / u.sum(), cov, why

    def _returns(self, w: Window, symbols: list[str]) -> np.ndarray:
        """Return the winners' returns over ``cov_window`` base bars up to the ranking bar's close (rows with a gap dropped)."""
        assert self.closes is not None
        n = self._cov_bars
        r = int(np.searchsorted(self.closes.ts_ms, w.rank_ms, side="right"))  # rows up to the ranking bar
        cols = self.closes.cols(symbols)
        # = returns_of(self.closes.close[max(r - n - 1, 0) : r][:, cols]), in one pass (engine/strategy/book_nb.py)
        return window_returns_nb(self.closes.close, max(r - n - 1, 0), r, cols)

    def _gross(self, w: Window, unit: np.ndarray, cov: np.ndarray | None) -> tuple[float, float]:
        """Return the book's gross exposure and the unit book's annualised ex-ante volatility."""
        p = self.p
        vol = math.nan
        if cov is not None and unit.size:
            vol = math.sqrt(max(float(unit @ cov @ unit), 0.0) * self._bars_per_year)
        if p.target_vol is None or not unit.size:
            return min(p.gross_exposure, p.max_gross), vol
        if not math.isfinite(vol):
            log.warning(
                "window %d: portfolio.target_vol: no volatility estimate over portfolio.cov_window=%s; gross %g used",
                w.index,
                p.cov_window,
                min(p.gross_exposure, p.max_gross),
            )
            return min(p.gross_exposure, p.max_gross), vol
        if vol == 0:
            log.warning(
                "window %d: portfolio.target_vol: the book's volatility is 0; gross capped at max_gross", w.index
            )
            return p.max_gross, vol
        return min(p.target_vol / vol, p.max_gross), vol

    def _held(self, w: Window) -> dict[str, float]:
        """Return the previous window's weights drifted to this ranking bar's close (fractions of the book's value).

        Signed: a short leg's weights stay negative, the cash holding their proceeds.
        """
        if self._prev is None:
            return {}
        pw, weights = self._prev
        if not weights:
            return {}
        bars = self.bars
        start = int(np.searchsorted(bars.ts_ms, pw.start_ms))  # the previous window's first bar
        end = int(np.searchsorted(bars.ts_ms, w.rank_ms, side="right"))
        names = list(weights)
        cols = bars.cols(names)
        growth = growth_nb(bars.close, bars.open, start, end, cols)  # last close over the first open (1: no close)
        values = np.fromiter(weights.values(), np.float64, len(names)) * growth  # shorts < 0 (SidedAllocator)
        total = float(values.sum()) + 1.0 - sum(weights.values())
        if not total > 0:
            return {}
        keep = (values != 0) & np.isfinite(values)
        return dict(zip(itertools.compress(names, keep.tolist()), (values[keep] / total).tolist(), strict=True))

    def _with_open(self, symbols: list[str], start_ms: int) -> list[str]:
        """Return the ``symbols`` that have a bar at ``start_ms`` (the window's first open)."""
        if not symbols:
            return []
        row = int(np.searchsorted(self.bars.ts_ms, start_ms))
        if row >= self.bars.ts_ms.size:
            return []
        ok = np.isfinite(self.bars.open[row, self.bars.cols(symbols)])
        return [s for s, o in zip(symbols, ok.tolist(), strict=True) if o]


def _covariance(x: np.ndarray, estimator: str, m: Moments | None = None) -> tuple[np.ndarray | None, str | None]:
    """Return the covariance of returns ``x``, or None and why it cannot be estimated (``m``: the moments of ``x``)."""
    if x.shape[0] < 2:
        return None, f"{x.shape[0]} complete return row(s) over portfolio.cov_window (at least 2 needed)"
    m = moments(x) if m is None else m
    if not np.all(m.var > 0):  # var is x.var(axis=0): > 0 exactly where the standard deviation is
        return None, "a winner's price did not move over portfolio.cov_window (zero variance)"
    cov = covariance_of(x, estimator, m)
    if not np.isfinite(cov).all():
        return None, "the covariance is not finite"
    return cov, None


covariance_estimate = _covariance
"""The covariance of returns ``x`` by ``estimator``, or None and why not (:mod:`engine.strategy.sided_risk`)."""


def _estimates(
    weighting: str, x: np.ndarray, estimator: str
) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """Return the covariance of returns ``x``, the risk weights of a risk weighting (None: none) and why not."""
    m = moments(x) if x.shape[0] >= 2 else None  # computed once for the covariance and HRP's correlation
    cov, why = _covariance(x, estimator, m)
    if weighting not in RISK_WEIGHTINGS or x.shape[1] < 2 or cov is None:
        return cov, None, why
    risk = _risk_weights(weighting, x, cov, estimator, m)
    return cov, risk, None if risk is not None else "the optimiser gave no finite long-only weights"


def _risk_weights(
    weighting: str, x: np.ndarray, cov: np.ndarray, estimator: str, m: Moments | None = None
) -> np.ndarray | None:
    """Return the unit weights of a risk weighting, or None when they are not finite, long-only and positive in sum."""
    if weighting == "hrp":
        u = hrp_weights(x, cov, m)
    else:
        try:
            raw = skfolio_weights(x, weighting, estimator)
        except Exception as exc:  # an optimiser failure: the caller falls back to equal weights and says so
            log.warning("skfolio (%s) failed: %s", weighting, exc)
            return None
        u = erc_polish(raw, cov) if weighting == "erc" else min_variance_polish(raw, cov)
    if not np.isfinite(u).all() or (u < -1e-12).any() or u.sum() <= 0:
        return None
    return np.asarray(np.maximum(u, 0.0), dtype=np.float64)


def returns_history_ms(cfg: RunConfig) -> int:
    """Return the base bars the returns need before the first window's start (0 when none is needed).

    ``cov_window`` bars before the first ranking bar, which is one bar before the first start.
    """
    p, base = cfg.portfolio, cfg.backtest.interval
    return (p.cov_bars(base) + 1) * interval_ms(base) if p.needs_returns(p.weighting) else 0


def allocator_new(cfg: RunConfig, bars: Panel, memo: RiskMemo | None = None) -> Allocator | None:
    """Return the run's :class:`Allocator`, or None when no portfolio-construction setting is on.

    With a risk weighting or a volatility target the returns come from ``bars``, loaded from
    :func:`returns_history_ms` before the first window. ``memo``: the run's estimates so far
    (:data:`RiskMemo`; the survivorship audit's plan shares the run's), filled in place.
    """
    p, base = cfg.portfolio, cfg.backtest.interval
    if not p.constructs(p.weighting, p.gross_exposure):
        return None
    closes = bars if p.needs_returns(p.weighting) else None
    if p.max_weight is not None and cfg.ranking.top_n * p.max_weight < min(p.gross_exposure, p.max_gross):
        log.warning(
            "portfolio.max_weight=%g x ranking.top_n=%d < the gross %g: at most %g of the book is invested",
            p.max_weight,
            cfg.ranking.top_n,
            min(p.gross_exposure, p.max_gross),
            cfg.ranking.top_n * p.max_weight,
        )
    return Allocator(p, base, bars, closes, memo={} if memo is None else memo)
