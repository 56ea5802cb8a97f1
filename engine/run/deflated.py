"""The deflated Sharpe ratio (Bailey & López de Prado, 2014), with the number of trials given.

The one definition: :mod:`engine.tasks.sweep` and ``task=wfo`` use it.
"""

from __future__ import annotations

import math

import numpy as np

EULER_GAMMA = 0.5772156649015329
"""Euler–Mascheroni constant of the expected-maximum approximation."""


def expected_max_sharpe(n_trials: int, var_sr: float) -> float:
    """Return the expected maximum Sharpe ratio of ``n_trials`` unskilled trials (Bailey & López de Prado, 2014).

    ``SR0 = sqrt(V[SR]) * ((1 - γ) * Z^-1(1 - 1/N) + γ * Z^-1(1 - 1/(N e)))`` with γ the
    Euler–Mascheroni constant and Z^-1 the standard normal quantile.

    Parameters
    ----------
    n_trials : int
        N, the number of trials.
    var_sr : float
        V[SR], the variance of the trials' Sharpe ratios (in the units of the returned SR0).

    Returns
    -------
    float
        SR0. With a single trial there is no selection to correct for and the approximation is
        undefined (Z^-1(0) = -inf), so SR0 is defined as 0: the DSR is then the probabilistic Sharpe
        ratio against zero.
    """
    if n_trials <= 1:
        return 0.0
    from scipy.stats import norm  # here, not at the top: a run without validation never loads scipy.stats

    n = float(n_trials)
    z = (1.0 - EULER_GAMMA) * norm.ppf(1.0 - 1.0 / n) + EULER_GAMMA * norm.ppf(1.0 - 1.0 / (n * math.e))
    return math.sqrt(var_sr) * float(z)


def deflated_sharpe_ratio(
    sr: np.ndarray, sr0: float, n_returns: np.ndarray, skew: np.ndarray, kurt: np.ndarray
) -> np.ndarray:
    """Probability that each trial's true Sharpe ratio exceeds the benchmark ``sr0``.

    ``DSR = Φ((SR - SR0) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurt - 1) / 4 * SR²))``

    Parameters
    ----------
    sr : np.ndarray
        Per-period (daily, not annualised) Sharpe ratios.
    sr0 : float
        Benchmark per-period Sharpe ratio, :func:`expected_max_sharpe` of the trials.
    n_returns : np.ndarray
        T, the number of returns each SR was estimated from.
    skew, kurt : np.ndarray
        Skewness and non-excess kurtosis (3 for a normal) of each trial's returns.

    Returns
    -------
    np.ndarray
        DSR in [0, 1]; NaN where an input is missing, T < 2, or the variance term is not positive
        (only possible for extreme skew: the estimator's variance is then undefined).
    """
    sr, t = np.asarray(sr, dtype=np.float64), np.asarray(n_returns, dtype=np.float64)
    skew, kurt = np.asarray(skew, dtype=np.float64), np.asarray(kurt, dtype=np.float64)
    var_term = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    ok = np.isfinite(sr) & np.isfinite(t) & (t >= 2) & np.isfinite(var_term) & (var_term > 0)
    out = np.full(np.broadcast(sr, t, var_term).shape, np.nan)
    b = np.broadcast_arrays(sr, t, var_term, ok)
    srb, tb, vb, okb = b
    from scipy.stats import norm

    out[okb] = norm.cdf((srb[okb] - sr0) * np.sqrt(tb[okb] - 1.0) / np.sqrt(vb[okb]))
    return out


def deflated_sharpe(
    sr: np.ndarray | float,
    n_trials: int,
    var_sr: float,
    n_returns: np.ndarray | int,
    skew: np.ndarray | float,
    kurt: np.ndarray | float,
) -> np.ndarray:
    """Deflated Sharpe ratio against ``n_trials`` trials whose Sharpe ratios have variance ``var_sr``.

    ``n_trials`` is explicit so that it can be the count of every trial ever run on the same data
    (the ledger's ``n_trials(fingerprint)``), not only those of the current sweep; ``var_sr`` is
    the variance (ddof=1) of the per-period Sharpe ratios of the trials at hand. All Sharpe figures
    are per period (daily). Returns :func:`deflated_sharpe_ratio` against
    ``SR0 = expected_max_sharpe(n_trials, var_sr)``.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    sr0 = expected_max_sharpe(int(n_trials), float(var_sr))
    return deflated_sharpe_ratio(np.asarray(sr), sr0, np.asarray(n_returns), np.asarray(skew), np.asarray(kurt))
