"""Portfolio construction of a book with a short leg or leverage (docs/LONG_SHORT.md, docs/PORTFOLIO.md).

The steps of :mod:`engine.strategy.weights` on signed weights, per window and point in time:

1. each leg's unit weights ``u_long``, ``u_short`` (each summing to 1) by ``portfolio.weighting`` on
   that leg's own winners and their own past returns: the same estimator, memo and fallback as a
   long-only book (:meth:`Allocator._unit`), so a leg's unit weights are what a long-only book of
   the leg's symbols alone would get;
2. the gross ``g``: ``gross_exposure``; with ``target_vol``
   ``min(target_vol / sigma(b), max_gross)`` with ``b = (1 + n)/2 u_long - (1 - n)/2 u_short`` the book
   at a gross of 1 (``n = net / gross``) and ``sigma(b) = sqrt(b' C b * bars per year)``, ``C`` the
   covariance of both legs' returns together; ``max_gross`` is at most the leverage (``book_check``);
3. the legs ``L = g (1 + n) / 2`` and ``S = g (1 - n) / 2`` (so ``sum |w| = g`` and ``sum w = n g``),
   the target ``t = cap(L u_long, max_weight) - cap(S u_short, max_weight)``: each leg capped on its
   own, the excess spread within the leg (so the net is kept unless a whole leg is at the cap);
4. with ``max_turnover``: the signed held book ``h`` (drifted, shorts negative) moves towards ``t`` as
   in :func:`engine.strategy.weights.limits_apply`, so ``sum |w - h| <= max_turnover`` and
   ``|w| <= max_weight``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.config import RunConfig
from engine.config.book import is_sided
from engine.core.choices import RISK_WEIGHTINGS
from engine.data.panel import Panel
from engine.strategy.weights import Allocator, BookRecord, RiskMemo, cap_weights, covariance_estimate, limits_apply
from engine.strategy.windows import Window

log = logging.getLogger(__name__)


def sided_constructs(cfg: RunConfig) -> bool:
    """Whether a sided book needs :class:`SidedAllocator` (a risk weighting, a volatility target or a limit)."""
    p = cfg.portfolio
    return bool(
        is_sided(cfg)
        and (p.weighting in RISK_WEIGHTINGS or any(x is not None for x in (p.target_vol, p.max_weight, p.max_turnover)))
    )


@dataclass
class SidedAllocator(Allocator):
    """:class:`Allocator` on the signed weights of a long-short, short or leveraged book (module docstring)."""

    side: str = "long_short"
    top_n: int = 1

    def window(self, w: Window, chosen: pl.DataFrame, tradable: list[str]) -> dict[str, float]:
        """Return window ``w``'s signed weights: the tradable winners' (row order), then held symbols kept by the limit.

        ``chosen`` holds the tradable rows of :func:`engine.strategy.sides.side_rows` (``symbol``,
        ``rank``, ``weight_vol``); a row with ``rank <= ranking.top_n`` (side other than ``short``) is long.
        """
        is_long = (pl.col("rank") <= self.top_n) if self.side != "short" else pl.lit(False)
        legs = (chosen.filter(is_long), chosen.filter(~is_long))
        estimates = [self._unit(w, leg) for leg in legs]
        units = [u for u, _, _ in estimates]
        why = next((y for _, _, y in estimates if y is not None), None)
        n = self._net_ratio()
        gross, vol = self._book_gross(w, legs, units, n)
        target: dict[str, float] = {}
        for leg, u, share, sign in zip(legs, units, ((1 + n) / 2, (1 - n) / 2), (1.0, -1.0), strict=True):
            if share * gross <= 0:
                continue
            if leg.height == 0:
                log.warning(
                    "window %d: the %s leg has no tradable symbol; its %g of the book stays in cash",
                    w.index,
                    "long" if sign > 0 else "short",
                    share * gross,
                )
                continue
            capped = cap_weights(share * gross * u, self.p.max_weight)
            target.update({s: sign * float(x) for s, x in zip(leg.get_column("symbol").to_list(), capped, strict=True)})
        held = self._held(w)
        winners = set(tradable)
        names = tradable + sorted(self._with_open([s for s in held if s not in winners], w.start_ms))
        t = np.array([target.get(s, 0.0) for s in names])
        h = np.array([held.get(s, 0.0) for s in names])
        book, turnover = limits_apply(t, h, self.p.max_weight, self.p.max_turnover)
        if float(np.abs(book).sum()) > self.p.leverage + 1e-12:  # the drifted held book is above the leverage
            book, turnover, why = self._within_leverage(w, t, h, book)
        out = {s: float(x) for s, x in zip(names, book, strict=True) if (s in target) or x != 0}
        kept = [s for s in out if s not in winners]
        self.records.append(BookRecord(w.index, w.rank_ms, gross, vol, turnover, held, kept, why))
        self._prev = (w, out)
        return out

    def _within_leverage(
        self, w: Window, t: np.ndarray, h: np.ndarray, book: np.ndarray
    ) -> tuple[np.ndarray, float, str]:
        """Move ``book`` on towards the target ``t`` until its gross is at most the leverage (the margin wins).

        The gross is convex along the segment and the target's is within the leverage, so the
        nearest point of the segment within it is found by bisection. The turnover then exceeds
        ``max_turnover``, and a warning and the audit line's fallback say so.
        """
        lev = self.p.leverage
        lo, hi = 0.0, 1.0
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if float(np.abs(book + mid * (t - book)).sum()) > lev else (lo, mid)
        out = book + hi * (t - book)
        why = (
            f"the held book's gross {float(np.abs(book).sum()):.6g} after the turnover limit is above "
            f"portfolio.leverage={lev:g}; the limit gave way"
        )
        log.warning("window %d: %s", w.index, why)
        return out, float(np.abs(out - h).sum()), why

    def _net_ratio(self) -> float:
        """Return ``net / gross`` of the configured book (the share the legs keep whatever the gross)."""
        p = self.p
        g = p.gross_exposure
        return p.net(g) / g

    def _book_gross(
        self, w: Window, legs: tuple[pl.DataFrame, pl.DataFrame], units: list[np.ndarray], n: float
    ) -> tuple[float, float]:
        """Return the book's gross and the annualised ex-ante volatility of the book at a gross of 1 (NaN: none)."""
        p = self.p
        if p.target_vol is None:
            return p.gross_exposure, math.nan
        symbols = [s for leg in legs for s in leg.get_column("symbol").to_list()]
        b = np.concatenate([(1 + n) / 2 * units[0], -(1 - n) / 2 * units[1]])
        if not symbols:
            return min(p.gross_exposure, p.max_gross), math.nan
        cov, _ = covariance_estimate(self._returns(w, symbols), p.covariance)
        return self._gross(w, b, cov)  # no estimate: gross_exposure (capped), with _gross's warning


def sided_allocator_new(cfg: RunConfig, bars: Panel, memo: RiskMemo | None = None) -> SidedAllocator | None:
    """Return the run's :class:`SidedAllocator`, or None when the sided book needs none (:func:`sided_constructs`)."""
    if not sided_constructs(cfg):
        return None
    p = cfg.portfolio
    closes = bars if p.needs_returns(p.weighting) else None
    sizes = (
        cfg.ranking.top_n if p.side != "short" else 0,
        (cfg.ranking.bottom_n or cfg.ranking.top_n) if p.side != "long" else 0,
    )
    for name, n, share in zip(("long", "short"), sizes, p.legs(p.gross_exposure), strict=True):
        if p.max_weight is not None and share > 0 and n * p.max_weight < share:
            log.warning(
                "portfolio.max_weight=%g x %d symbols < the %s leg's %g: at most %g of it is invested",
                p.max_weight, n, name, share, n * p.max_weight,
            )  # fmt: skip
    return SidedAllocator(
        p,
        cfg.backtest.interval,
        bars,
        closes,
        memo={} if memo is None else memo,
        side=p.side,
        top_n=cfg.ranking.top_n,
    )
