"""Risk-based weights of one window from its winners' past returns (docs/PORTFOLIO.md).

The covariance is Ledoit-Wolf's shrinkage towards a scaled identity (the formula of scikit-learn's
``ledoit_wolf``, which skfolio's ``LedoitWolf`` wraps) or the sample covariance (``ddof=1``,
skfolio's ``EmpiricalCovariance``). Hierarchical risk parity is restated here in numpy and numba
(skfolio's ``HierarchicalRiskParity`` costs ~40 ms and a 3 s import per run; this ~0.2 ms of CPU at
50 winners, the covariance included): Pearson angular distance, scipy's Ward linkage, scipy's optimal
leaf ordering and the recursive bisection with inverse-variance cluster weights as numba kernels
(:mod:`engine.strategy.hrp_nb`) with numpy's and scipy's numbers; the covariance and the correlation
share one window's :class:`Moments` (the Gram matrix of the centred returns). Equal risk contribution and minimum variance are convex programs solved by
skfolio itself (``RiskBudgeting``, ``MeanRisk``), imported only when one of them is used.
tests/test_portfolio_weights.py holds every one to skfolio's estimators on the same returns.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from engine.strategy.hrp_nb import bisection_nb, optimal_order_nb, pearson_distance_nb, ward_children_nb

log = logging.getLogger(__name__)


def returns_of(closes: np.ndarray) -> np.ndarray:
    """Return the simple returns of a (bars, symbols) close block; rows with a missing return in any column dropped."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = closes[1:] / closes[:-1] - 1.0
    return np.asarray(r[np.isfinite(r).all(axis=1)], dtype=np.float64)


@dataclass(frozen=True)
class Moments:
    """What the estimates of one window share, each computed once: the centred returns and their products.

    Each is what numpy gives for the same expression, so every estimate built on them equals the
    one computed from the returns alone, bit for bit.
    """

    xc: np.ndarray
    """The returns less their column means (``x - x.mean(axis=0)``)."""
    x2: np.ndarray
    """``xc ** 2``."""
    var: np.ndarray
    """The biased variance of each column, ``x2.sum(axis=0) / n``: ``x.var(axis=0)``'s numbers."""
    gram: np.ndarray
    """``xc' xc``: ``n`` times the biased covariance, ``n - 1`` times ``np.cov``'s (the same product)."""


def moments(x: np.ndarray) -> Moments:
    """Return the :class:`Moments` of returns ``x`` (observations x assets, at least one row)."""
    xc = x - x.mean(axis=0)
    x2 = xc**2
    return Moments(xc, x2, x2.sum(axis=0) / x.shape[0], xc.T @ xc)


def ledoit_wolf(x: np.ndarray, m: Moments | None = None) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf covariance of returns ``x`` (observations x assets) and its shrinkage.

    ``(1 - s) S + s mu I`` with ``S`` the biased sample covariance of the centred returns and
    ``mu = trace(S) / p``; ``s = min(b2, d2) / d2`` with ``d2 = ||S - mu I||^2 / p`` and
    ``b2 = (sum_k ||x_k x_k' - S||^2 / n) / (n p)`` (Ledoit & Wolf 2004, as scikit-learn computes it).
    ``m``: the :class:`Moments` of ``x`` when the caller has them.
    """
    n, p = x.shape
    m = moments(x) if m is None else m
    s = m.gram / n
    trace = m.var.sum()  # the trace of S
    mu = trace / p
    beta_ = float(np.sum(m.x2.T @ m.x2))
    delta_ = float(np.sum(s**2))  # = sum((X'X)^2) / n^2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * trace + p * mu**2) / p
    beta = min(beta, delta)
    shrink = 0.0 if beta == 0 else beta / delta
    cov = (1.0 - shrink) * s
    cov.flat[:: p + 1] += shrink * mu
    return cov, float(shrink)


def covariance_of(x: np.ndarray, estimator: str, m: Moments | None = None) -> np.ndarray:
    """Covariance of returns ``x`` by ``portfolio.covariance`` (``ledoit_wolf`` or ``empirical``); ``m``: its moments."""
    if estimator == "ledoit_wolf":
        return ledoit_wolf(x, m)[0]
    return np.atleast_2d(np.cov(x, rowvar=False, ddof=1))


def hrp_order(x: np.ndarray, m: Moments | None = None) -> np.ndarray:
    """Leaf order of the winners: Ward linkage of ``sqrt(0.5 (1 - corr))``, optimal leaf ordering.

    Three numba kernels (:mod:`engine.strategy.hrp_nb`), each scipy's or numpy's numbers: the
    distances from the returns' Gram matrix (``np.corrcoef``'s correlation, bit for bit), scipy's
    Ward linkage (``linkage(method="ward")``'s merges) and its optimal leaf ordering. ``m``: the
    :class:`Moments` of ``x`` when the caller has them.
    """
    m = moments(x) if m is None else m
    dist = pearson_distance_nb(m.gram, x.shape[0] - 1)
    if not np.isfinite(dist).all():  # as scipy's linkage says it
        msg = "The condensed distance matrix must contain only finite values."
        raise ValueError(msg)
    return optimal_order_nb(ward_children_nb(dist), dist)


def hrp_weights(x: np.ndarray, cov: np.ndarray, m: Moments | None = None) -> np.ndarray:
    """Hierarchical risk parity weights (summing to 1) of returns ``x`` with covariance ``cov``.

    The ordered winners are split in halves, recursively; each half's variance is that of its
    inverse-variance book, ``v = w' C w``, and the left half gets ``1 - v_l / (v_l + v_r)`` of
    its parent's weight (López de Prado 2016). ``m``: the :class:`Moments` of ``x`` when the caller has them.
    """
    order = hrp_order(x, m)
    return np.asarray(bisection_nb(np.ascontiguousarray(cov, dtype=np.float64), order), dtype=np.float64)


def skfolio_weights(x: np.ndarray, weighting: str, estimator: str) -> np.ndarray:
    """Equal-risk-contribution or long-only minimum-variance weights by skfolio (lazily imported).

    Parameters
    ----------
    x
        Returns, observations x assets.
    weighting
        ``erc`` (``RiskBudgeting``, variance, equal budgets) or ``min_variance`` (``MeanRisk``,
        ``MINIMIZE_RISK``, variance).
    estimator
        The covariance estimator of skfolio's ``EmpiricalPrior``: ``ledoit_wolf`` or ``empirical``.
    """
    from skfolio.moments import EmpiricalCovariance, LedoitWolf
    from skfolio.optimization import MeanRisk, ObjectiveFunction, RiskBudgeting
    from skfolio.prior import EmpiricalPrior

    prior = EmpiricalPrior(covariance_estimator=LedoitWolf() if estimator == "ledoit_wolf" else EmpiricalCovariance())
    if weighting == "erc":
        model = RiskBudgeting(prior_estimator=prior)
    else:
        model = MeanRisk(objective_function=ObjectiveFunction.MINIMIZE_RISK, prior_estimator=prior)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x)
    for w in caught:
        log.warning("skfolio (%s): %s", weighting, w.message)
    return np.asarray(model.weights_, dtype=np.float64)
