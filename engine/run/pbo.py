"""Probability of backtest overfitting by combinatorially symmetric cross-validation.

CSCV: Bailey, Borwein, López de Prado & Zhu, 2015/2017.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from engine.core.best import best_indices, rank_key
from engine.run.objective import (
    IDENTICAL_COMBINATIONS,
    ONE_COMBINATION,
    Objective,
    distinct_columns,
    returns_matrix,
    sharpe_columns,
)


@dataclass(frozen=True)
class PBOResult:
    """Probability of backtest overfitting by CSCV and what it was computed from.

    Attributes
    ----------
    pbo : float | None
        Share of the C(S, S/2) splits whose logit is <= 0 (the in-sample best ranks in the bottom
        half out of sample); None for one combination (see ``reason``).
    logits : np.ndarray
        (C(S, S/2),) ``λ = ln(ω / (1 - ω))`` per split, ω the relative out-of-sample rank of the
        in-sample best.
    reason : str | None
        Why ``pbo`` is None.
    n_submatrices : int
        S.
    n_dropped : int
        The oldest ``T mod S`` windows, left out so that the S submatrices have equal size.
    is_best : np.ndarray
        (C(S, S/2),) the in-sample best combination of each split.
    is_perf, oos_perf : np.ndarray
        (C(S, S/2),) that combination's objective in sample and out of sample (NaN = undefined):
        their regression is the paper's "performance degradation".
    n_duplicates : int
        Combinations folded into an identical earlier one (:func:`distinct_columns`): M is the
        number of columns minus this.
    """

    pbo: float | None
    logits: np.ndarray
    reason: str | None
    n_submatrices: int
    n_dropped: int
    is_best: np.ndarray
    is_perf: np.ndarray
    oos_perf: np.ndarray
    n_duplicates: int = 0

    @property
    def prob_oos_loss(self) -> float | None:
        """Share of splits whose in-sample best has an out-of-sample objective < 0 (undefined counts as a loss)."""
        if self.pbo is None:
            return None
        return float(np.mean(~(self.oos_perf >= 0)))


def relative_rank(values: np.ndarray, index: int) -> float:
    """ω = rank of ``values[index]`` among ``values`` / (M + 1), ranks 1 (worst) … M (best).

    Undefined values (NaN) rank below every defined one; ties get their average rank.
    """
    from scipy.stats import rankdata  # here, not at the top: a run without validation never loads scipy.stats

    ranks = rankdata(rank_key(values), method="average")
    return float(ranks[index] / (len(values) + 1))


def _sharpe_of_block_unions(r: np.ndarray, s: int, member: np.ndarray) -> np.ndarray:
    """:func:`sharpe_columns` of the rows of every union of submatrices, without copying rows.

    ``r`` is cut into ``s`` equal consecutive blocks; ``member`` (U, s) says which blocks each of
    the U unions holds. Sums of the returns centred on their column mean (so that the variance
    does not lose precision) and of their squares are added block by block; a union holding a
    non-finite value, or whose variance is zero up to rounding, is NaN as in :func:`sharpe_columns`.
    """
    b = r.reshape(s, -1, r.shape[1])  # (s, rows per block, M)
    finite_block = np.isfinite(b).all(axis=1)  # (s, M)
    safe = np.where(np.isfinite(b), b, 0.0)
    mu = safe.reshape(-1, r.shape[1]).mean(axis=0)
    c = safe - mu
    w = member.astype(np.float64)
    n = w.sum(axis=1, keepdims=True) * b.shape[1]  # rows in each union
    s1 = w @ c.sum(axis=1)  # (U, M)
    s2 = w @ (c**2).sum(axis=1)
    absmax = np.where(member[:, :, None], np.abs(safe).max(axis=1)[None], 0.0).max(axis=1)
    ok = (w @ (~finite_block).astype(np.float64)) == 0
    mean = s1 / n + mu
    var = np.maximum(s2 - s1**2 / n, 0.0) / np.maximum(n - 1, 1)
    std = np.sqrt(var)
    scale = np.maximum(np.abs(mean), absmax)
    tiny = std <= 1e-12 * np.where(scale > 0, scale, 1.0)
    out = np.full(s1.shape, np.nan)
    good = ok & ~tiny & (n >= 2)
    out[good] = mean[good] / std[good]
    return out


def pbo_cscv(returns: np.ndarray, n_submatrices: int = 16, objective: Objective = sharpe_columns) -> PBOResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation.

    Bailey, Borwein, López de Prado & Zhu, "The Probability of Backtest Overfitting", *Journal of
    Computational Finance* 20(4), 2017 (SSRN 2326253, 2015). The T rows of the (T × M) matrix are
    cut into S equal, consecutive submatrices (the oldest ``T mod S`` rows are dropped). For each of
    the C(S, S/2) ways to pick S/2 of them as the in-sample set J (the rest, J̄, out of sample):

    1. ``n* = argmax_m objective(J)`` (undefined ranks last; ties to the lowest index);
    2. ``ω = rank of objective(J̄)[n*] among the M out-of-sample values / (M + 1)``;
    3. ``λ = ln(ω / (1 - ω))``.

    ``PBO = #{λ <= 0} / C(S, S/2)``: how often the in-sample best is no better than the median out of
    sample. The rows keep their time order inside J and J̄ (the order does not matter to the Sharpe
    ratio). Combinations identical in every window are one trial (:func:`distinct_columns`): M counts
    each group once, otherwise a copy of the best would tie with it and pull ω down to the median.

    Parameters
    ----------
    returns : np.ndarray
        (T, M) per-window returns.
    n_submatrices : int
        S, even, 2 <= S <= T.
    objective : Objective
        Performance of each combination over a block of rows, higher is better.

    Returns
    -------
    PBOResult
        ``pbo`` None with a ``reason`` when M = 1, or when every combination is identical (ω is
        always 1/2: the statistic is meaningless). ``is_best`` indexes the columns of ``returns``.
    """
    r = returns_matrix(returns)
    m_given = r.shape[1]
    keep = distinct_columns(r)
    r = r[:, keep]
    s = int(n_submatrices)
    if s < 2 or s % 2:
        raise ValueError(f"n_submatrices must be even and >= 2, got {s}")
    if r.shape[0] < s:
        raise ValueError(f"{r.shape[0]} windows cannot be cut into {s} submatrices: use at most {r.shape[0]}")
    dropped = r.shape[0] % s
    r = r[dropped:]
    blocks = np.arange(r.shape[0]).reshape(s, -1)
    combos = list(itertools.combinations(range(s), s // 2))
    in_j = np.zeros((len(combos), s), dtype=bool)
    for c, chosen in enumerate(combos):
        in_j[c, list(chosen)] = True
    if objective is sharpe_columns:  # the default: every split at once from per-submatrix sums
        perf_is, perf_oos = _sharpe_of_block_unions(r, s, in_j), _sharpe_of_block_unions(r, s, ~in_j)
    else:
        perf_is, perf_oos = np.empty((len(combos), r.shape[1])), np.empty((len(combos), r.shape[1]))
        for c in range(len(combos)):
            perf_is[c] = objective(r[blocks[in_j[c]].ravel()])
            perf_oos[c] = objective(r[blocks[~in_j[c]].ravel()])
    m = r.shape[1]
    is_best = best_indices(perf_is, axis=1)  # engine.core.best: ties go to the lowest index
    rows = np.arange(len(combos))
    from scipy.stats import rankdata

    rank = rankdata(rank_key(perf_oos), method="average", axis=1)[rows, is_best]
    # ln(ω / (1 - ω)) with ω = rank / (M + 1), written so that ω = 1/2 gives exactly 0
    logits = np.log(rank) - np.log(m + 1 - rank)
    is_perf, oos_perf = perf_is[rows, is_best], perf_oos[rows, is_best]
    is_perf[~np.isfinite(is_perf)] = np.nan
    oos_perf[~np.isfinite(oos_perf)] = np.nan
    is_best = keep[is_best]
    folded = m_given - m
    if m == 1:
        why = ONE_COMBINATION if m_given == 1 else IDENTICAL_COMBINATIONS.format(m=m_given)
        return PBOResult(None, logits, why, s, dropped, is_best, is_perf, oos_perf, folded)
    pbo = float(np.mean(logits <= 0.0))
    return PBOResult(pbo, logits, None, s, dropped, is_best, is_perf, oos_perf, folded)
