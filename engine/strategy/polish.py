"""Refine skfolio's interior-point solutions to the optimality conditions (docs/PORTFOLIO.md).

skfolio solves equal risk contribution and minimum variance with CLARABEL, an interior-point
solver: its weights meet the optimality conditions to ~1e-4 (relative spread of the risk
contributions) at the default tolerances. Both problems have conditions that can be checked and
met exactly, so the solver's answer is the starting point of a refinement:

- equal risk contribution: Newton's method on ``f(y) = y' C y / 2 - sum(log y) / n`` (Spinu
  2013) from ``y = w / sqrt(w' C w)``; at its minimum every ``y_i (C y)_i = 1 / n``, so the
  weights ``y / sum(y)`` have equal risk contributions ``w_i (C w)_i``;
- minimum variance (long only, fully invested): on the support skfolio found, the closed form
  ``w_S = C_SS^-1 1 / (1' C_SS^-1 1)``, kept when it satisfies the KKT conditions (every
  ``w_S > 0`` and ``(C w)_j >= w' C w`` off the support); otherwise skfolio's weights stay.
"""

from __future__ import annotations

import numpy as np


def erc_polish(w: np.ndarray, cov: np.ndarray, iters: int = 50) -> np.ndarray:
    """Equal-risk-contribution weights refined by Newton's method from skfolio's ``w``."""
    n = w.size
    b = 1.0 / n
    y = np.where(w > 0, w, 1.0 / n)
    y = y / np.sqrt(float(y @ cov @ y))
    for _ in range(iters):
        grad = cov @ y - b / y
        if np.abs(grad * y).max() < 1e-15:
            break
        step = np.linalg.solve(cov + np.diag(b / y**2), grad)
        t = 1.0
        while np.any(y - t * step <= 0):  # stay inside y > 0
            t *= 0.5
        y = y - t * step
    return np.asarray(y / y.sum(), dtype=np.float64)


def min_variance_polish(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Long-only minimum-variance weights: an active-set search from skfolio's support, to the KKT conditions.

    On a support ``S`` the optimum is ``C_SS^-1 1`` normalised; a negative weight leaves ``S``, an
    asset off ``S`` whose marginal variance ``(C w)_j`` is below ``w' C w`` joins it. skfolio's
    weights stay when the search does not settle within ``2 n`` steps.
    """
    n = w.size
    support = w > 1e-4 * w.max()
    for _ in range(2 * n + 2):
        idx = np.flatnonzero(support)
        try:
            x = np.linalg.solve(cov[np.ix_(idx, idx)], np.ones(idx.size))
        except np.linalg.LinAlgError:
            return w
        if x.sum() <= 0:
            return w
        x /= x.sum()
        if np.any(x <= 0):
            support[idx[int(np.argmin(x))]] = False
            continue
        out = np.zeros(n)
        out[idx] = x
        grad = cov @ out
        var = float(out @ grad)
        gap = np.where(support, np.inf, grad - var * (1.0 - 1e-12))
        if gap.min() >= 0:
            return out
        support[int(np.argmin(gap))] = True
    return w
