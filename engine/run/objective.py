"""The objective of a walk-forward choice and the shape of its input.

Per-window Sharpe ratios of a ``(windows × combinations)`` return matrix, and which combinations
are one trial (identical returns).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Objective = Callable[[np.ndarray], np.ndarray]
"""Maps a ``(rows × combinations)`` block of per-window returns to one value per combination
(higher is better; NaN = undefined, ranked last)."""

ONE_COMBINATION = "one combination: there is no choice between combinations to validate, so the statistic is undefined"
IDENTICAL_COMBINATIONS = (
    "{m} combinations with identical returns in every window are one trial: there is no choice between "
    "combinations to validate, so the statistic is undefined"
)


def sharpe_columns(returns: np.ndarray) -> np.ndarray:
    """Per-period Sharpe ratio ``mean / std (ddof=1)`` of each column of ``returns``.

    NaN (undefined, ranked last by every selection here) where a column has fewer than two rows, a
    non-finite value, or zero variance — a combination that never traded has all-zero returns.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    out = np.full(r.shape[1], np.nan)
    if r.shape[0] < 2:
        return out
    ok = np.isfinite(r).all(axis=0)
    if not ok.any():
        return out
    rr = r[:, ok]
    mean = rr.mean(axis=0)
    std = rr.std(axis=0, ddof=1)
    # a zero-variance column (e.g. all zeros) can show a tiny std from rounding: treat that as zero
    scale = np.maximum(np.abs(mean), np.abs(rr).max(axis=0))
    tiny = std <= 1e-12 * np.where(scale > 0, scale, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = np.where(tiny, np.nan, mean / np.where(tiny, 1.0, std))
    out[ok] = sr
    return out


def returns_matrix(returns: np.ndarray) -> np.ndarray:
    """Return ``returns`` as a float (windows × combinations) matrix; ValueError when it is not one."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"returns must be a (windows × combinations) matrix, got shape {r.shape}")
    if r.shape[1] < 1:
        raise ValueError("returns has no combination (0 columns)")
    return r


def first_identical(returns: np.ndarray) -> np.ndarray:
    """Return, for each column of a (T × M) matrix, the index of the first column identical to it.

    Two combinations whose per-window returns are exactly equal in every window (NaN equal to NaN,
    -0.0 to 0.0) are one trial, e.g. a grid that varies a setting the trading never reads, or the
    same entry twice: PBO, the CPCV distribution and the deflated Sharpe ratio count them once.
    """
    r = returns_matrix(returns)
    seen: dict[bytes, int] = {}
    out = np.empty(r.shape[1], dtype=np.int64)
    for j in range(r.shape[1]):
        col = r[:, j]
        out[j] = seen.setdefault((np.where(np.isnan(col), np.nan, col) + 0.0).tobytes(), j)
    return out


def distinct_columns(returns: np.ndarray) -> np.ndarray:
    """Return the indices of the distinct columns: the first of each group of identical ones (:func:`first_identical`)."""
    return np.unique(first_identical(returns))
