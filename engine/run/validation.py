"""Out-of-sample statistics of a walk-forward grid: CPCV paths, PBO by CSCV, deflated Sharpe ratio.

Everything here is numpy (and scipy.stats for Φ and ranks) on a ``(windows × combinations)``
matrix of per-window returns (row ``t`` is walk-forward window ``t`` in time order, column ``m`` one
combination of the grid). It knows nothing of the engine: the caller builds the matrix from the
per-window books. See
docs/VALIDATION.md for the meaning of each statistic, its formulas and the papers.

- :func:`cpcv` — combinatorial purged cross-validation over T windows (López de Prado, *Advances
  in Financial Machine Learning*, 2018, ch. 12): N groups of consecutive windows, every choice of
  k test groups is one split, training windows next to a test block are purged / embargoed, and
  the ``φ = k/N · C(N, k)`` backtest paths are assembled from the splits' test groups.
- :func:`cpcv_oos_sharpe` — in each split, choose the combination with the best in-sample
  objective over the train windows and record its returns on the test windows; each path's
  out-of-sample Sharpe ratio gives a distribution, not one number.
- :func:`pbo_cscv` — probability of backtest overfitting by combinatorially symmetric
  cross-validation (Bailey, Borwein, López de Prado & Zhu, 2015/2017).
- :func:`expected_max_sharpe`, :func:`deflated_sharpe_ratio`, :func:`deflated_sharpe` — the deflated
  Sharpe ratio (Bailey & López de Prado, 2014), with the number of trials passed explicitly (e.g.
  from the trial ledger, :mod:`engine.outputs.ledger`). This is the one definition; :mod:`engine.tasks.sweep`
  uses it.
- :func:`oos_report` — PBO and the CPCV distribution as JSON values, for metrics.json and the report.

Degenerate data never raises (invalid settings do, with a ValueError): a combination whose objective is undefined (no trades: all-zero
returns; zero variance; fewer than two returns; a NaN return) ranks last and is still counted; a
one-combination matrix has nothing to select, so PBO and the CPCV distribution are ``None`` with a
``reason`` string. Combinations identical in every window are one trial (:func:`distinct_columns`):
two copies of one combination are a one-combination matrix, not a choice between two.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

from engine.core.best import best_index as best_index
from engine.core.best import best_indices, rank_key

EULER_GAMMA = 0.5772156649015329
"""Euler–Mascheroni constant of the expected-maximum approximation."""

Objective = Callable[[np.ndarray], np.ndarray]
"""Maps a ``(rows × combinations)`` block of per-window returns to one value per combination
(higher is better; NaN = undefined, ranked last)."""

ONE_COMBINATION = "one combination: there is no choice between combinations to validate, so the statistic is undefined"
IDENTICAL_COMBINATIONS = (
    "{m} combinations with identical returns in every window are one trial: there is no choice between "
    "combinations to validate, so the statistic is undefined"
)


# ---- objective ---------------------------------------------------------------------------------


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


# ---- combinatorial purged cross-validation ----------------------------------------------------


@dataclass(frozen=True)
class CPCV:
    """The splits and backtest paths of combinatorial purged cross-validation over windows.

    Attributes
    ----------
    n_windows, n_groups, n_test_groups, purge, embargo : int
        T, N, k, and the purge / embargo, all counted in windows.
    groups : np.ndarray
        (T,) group of each window: ``T // N`` consecutive windows per group, the last group takes
        the remainder (the convention of skfolio's ``CombinatorialPurgedCV``).
    test_groups : np.ndarray
        (C(N, k), k) the test groups of each split, in ``itertools.combinations`` order.
    splits : list[tuple[np.ndarray, np.ndarray]]
        (train windows, test windows) of each split, both sorted.
    paths : np.ndarray
        (N, φ) ``paths[g, p]`` is the split whose test set supplies group ``g`` on path ``p``: the
        j-th split (in order) that tests group g feeds path j (AFML ch. 12.4).
    """

    n_windows: int
    n_groups: int
    n_test_groups: int
    purge: int
    embargo: int
    groups: np.ndarray
    test_groups: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]
    paths: np.ndarray

    @property
    def n_splits(self) -> int:
        """C(N, k)."""
        return len(self.splits)

    @property
    def n_paths(self) -> int:
        """φ = k/N · C(N, k) = C(N-1, k-1)."""
        return int(self.paths.shape[1])

    def path_windows(self, p: int) -> list[tuple[int, np.ndarray]]:
        """(split, windows of its test set in group g) for every group g of path ``p``, in time order."""
        return [(int(self.paths[g, p]), np.flatnonzero(self.groups == g)) for g in range(self.n_groups)]


def cpcv(n_windows: int, n_groups: int, n_test_groups: int, purge: int = 0, embargo: int = 0) -> CPCV:
    """Split T walk-forward windows by combinatorial purged cross-validation.

    The windows are cut into N groups of consecutive windows; each of the C(N, k) choices of k test
    groups is a split whose train set is every other window, less:

    - **purge**: the ``purge`` windows just before each test block and the ``purge`` windows just
      after it (a position opened in the window before a test block is still held in it; its
      stops and the ranking lookback straddle the boundary);
    - **embargo**: the ``embargo`` further windows after each test block (serial correlation).

    A test block is a maximal run of adjacent test groups; two adjacent test groups are not purged
    from each other. This is the semantics of skfolio's ``CombinatorialPurgedCV`` with one
    observation per window (``purged_size=purge``, ``embargo_size=embargo``), which the tests check.

    Raises
    ------
    ValueError
        N < 2, k not in [1, N), T < N, a negative purge/embargo, or a split left without any train
        window.
    """
    t, n, k = int(n_windows), int(n_groups), int(n_test_groups)
    if n < 2:
        raise ValueError(f"n_groups must be at least 2, got {n}")
    if not 1 <= k < n:
        raise ValueError(f"n_test_groups must be in [1, n_groups), got {k} with n_groups={n}")
    if t < n:
        raise ValueError(f"{t} windows cannot be cut into {n} groups: use at most {t} groups")
    if purge < 0 or embargo < 0:
        raise ValueError(f"purge and embargo must be >= 0, got purge={purge}, embargo={embargo}")
    size = t // n
    groups = np.minimum(np.arange(t) // size, n - 1)
    test_groups = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
    splits: list[tuple[np.ndarray, np.ndarray]] = []
    for s, chosen in enumerate(test_groups):
        is_test = np.isin(groups, chosen)
        train = ~is_test
        starts = np.flatnonzero(is_test & ~np.concatenate(([False], is_test[:-1])))
        ends = np.flatnonzero(is_test & ~np.concatenate((is_test[1:], [False])))
        for a in starts:
            train[max(0, a - purge) : a] = False
        for b in ends:
            train[b + 1 : min(t, b + 1 + purge + embargo)] = False
        if not train.any():
            msg = (
                f"split {s} (test groups {tuple(int(g) for g in chosen)}) has no train window left with "
                f"purge={purge}, embargo={embargo}: use fewer test groups or a smaller purge/embargo"
            )
            raise ValueError(msg)
        splits.append((np.flatnonzero(train), np.flatnonzero(is_test)))
    # paths[g, p]: the p-th split (in split order) whose test groups include g
    paths = np.array([[s for s in range(len(test_groups)) if g in test_groups[s]] for g in range(n)], dtype=np.int64)
    assert paths.shape[1] == math.comb(n - 1, k - 1)
    return CPCV(t, n, k, int(purge), int(embargo), groups, test_groups, splits, paths)


@dataclass(frozen=True)
class CPCVResult:
    """Out-of-sample Sharpe ratios of the CPCV paths when each split picks its in-sample best.

    Attributes
    ----------
    cv : CPCV
        The splits and paths.
    chosen : np.ndarray
        (n_splits,) the combination picked in each split (best objective over its train windows).
    is_objective : np.ndarray
        (n_splits,) that combination's in-sample objective (NaN when undefined).
    path_returns : np.ndarray | None
        (T, φ) per-window out-of-sample returns of each path; None for one combination.
    path_sharpe : np.ndarray | None
        (φ,) per-window Sharpe ratio of each path (NaN when undefined); None for one combination.
        Multiply by ``sqrt(windows per year)`` to annualise.
    reason : str | None
        Why the distribution is None.
    """

    cv: CPCV
    chosen: np.ndarray
    is_objective: np.ndarray
    path_returns: np.ndarray | None
    path_sharpe: np.ndarray | None
    reason: str | None = None

    def summary(self) -> dict[str, float | int | None]:
        """n_paths and mean, std, median, 5 % / 95 % quantiles, share < 0 of the finite path Sharpes."""
        out: dict[str, float | int | None] = {"n_paths": self.cv.n_paths}
        sr = self.path_sharpe
        finite = sr[np.isfinite(sr)] if sr is not None else np.array([])
        stats: dict[str, Callable[[np.ndarray], float]] = {
            "mean": lambda x: float(np.mean(x)),
            "std": lambda x: float(np.std(x, ddof=1)) if x.size > 1 else math.nan,
            "median": lambda x: float(np.median(x)),
            "p05": lambda x: float(np.quantile(x, 0.05)),
            "p95": lambda x: float(np.quantile(x, 0.95)),
            "share_negative": lambda x: float(np.mean(x < 0)),
        }
        for name, f in stats.items():
            v = f(finite) if finite.size else math.nan
            out[name] = v if math.isfinite(v) else None
        return out


def _matrix(returns: np.ndarray) -> np.ndarray:
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
    r = _matrix(returns)
    seen: dict[bytes, int] = {}
    out = np.empty(r.shape[1], dtype=np.int64)
    for j in range(r.shape[1]):
        col = r[:, j]
        out[j] = seen.setdefault((np.where(np.isnan(col), np.nan, col) + 0.0).tobytes(), j)
    return out


def distinct_columns(returns: np.ndarray) -> np.ndarray:
    """Return the indices of the distinct columns: the first of each group of identical ones (:func:`first_identical`)."""
    return np.unique(first_identical(returns))


def cpcv_oos_sharpe(returns: np.ndarray, cv: CPCV, objective: Objective = sharpe_columns) -> CPCVResult:
    """Distribution of out-of-sample Sharpe ratios over the CPCV paths of a selection rule.

    In each split, the combination with the best ``objective`` over the split's train windows
    (default: the Sharpe ratio of its per-window returns; undefined ranks last, ties to the lowest
    index) is traded on the split's test windows. Path p concatenates, group by group, the test
    returns of the split ``cv.paths[g, p]``; its Sharpe ratio is ``mean / std (ddof=1)`` of those T
    per-window returns.

    Parameters
    ----------
    returns : np.ndarray
        (T, M) per-window returns, T = ``cv.n_windows``.
    cv : CPCV
        From :func:`cpcv`.
    objective : Objective
        In-sample objective of each combination, higher is better.

    Returns
    -------
    CPCVResult
        With ``path_sharpe`` None and a ``reason`` when M = 1, or when the M combinations are
        identical (:func:`distinct_columns`): nothing is selected, so the paths are all the one
        combination's own returns and say nothing about the selection.
    """
    r = _matrix(returns)
    if r.shape[0] != cv.n_windows:
        raise ValueError(f"returns has {r.shape[0]} windows, the CPCV was built for {cv.n_windows}")
    chosen = np.empty(cv.n_splits, dtype=np.int64)
    is_obj = np.empty(cv.n_splits)
    for s, (train, _test) in enumerate(cv.splits):
        values = np.asarray(objective(r[train]), dtype=np.float64)
        chosen[s] = best_index(values)
        is_obj[s] = values[chosen[s]] if np.isfinite(values[chosen[s]]) else np.nan
    if r.shape[1] == 1:
        return CPCVResult(cv, chosen, is_obj, None, None, ONE_COMBINATION)
    if distinct_columns(r).size == 1:
        return CPCVResult(cv, chosen, is_obj, None, None, IDENTICAL_COMBINATIONS.format(m=r.shape[1]))
    path_returns = np.empty((cv.n_windows, cv.n_paths))
    for p in range(cv.n_paths):
        for s, windows in cv.path_windows(p):
            path_returns[windows, p] = r[windows, chosen[s]]
    return CPCVResult(cv, chosen, is_obj, path_returns, sharpe_columns(path_returns))


# ---- probability of backtest overfitting (CSCV) ----------------------------------------------


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
    r = _matrix(returns)
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


# ---- one JSON-able summary for metrics.json / the report ------------------------------------


def _finite_or_none(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def oos_report(
    returns: np.ndarray,
    n_groups: int = 10,
    n_test_groups: int = 2,
    purge: int = 1,
    embargo: int = 0,
    n_submatrices: int = 16,
) -> dict[str, object]:
    """PBO and the CPCV out-of-sample Sharpe distribution of a (T × M) grid, as plain JSON values.

    What ``task=wfo`` / a grid report needs in one call, which never raises for a small or
    degenerate grid: N and S are lowered to what T allows (N <= T, S the largest even number <= T),
    and a statistic that cannot be computed is None with a ``*_reason``.

    Returns
    -------
    dict
        ``pbo``, ``pbo_reason``, ``pbo_logits`` (list), ``pbo_n_submatrices``, ``cpcv`` (the
        settings used and :meth:`CPCVResult.summary`), ``cpcv_path_sharpe`` (list, per window),
        ``cpcv_reason``. NaN values become None.
    """
    r = _matrix(returns)
    t = r.shape[0]
    out: dict[str, object] = {}
    s = min(int(n_submatrices), t - t % 2)
    if s < 2:
        out.update(pbo=None, pbo_reason=f"{t} window(s): PBO needs at least 2", pbo_logits=None, pbo_n_submatrices=None)
    else:
        pbo = pbo_cscv(r, s)
        out.update(
            pbo=pbo.pbo,
            pbo_reason=pbo.reason,
            pbo_logits=None if pbo.pbo is None else [float(x) for x in pbo.logits],
            pbo_n_submatrices=s,
        )
    n = min(int(n_groups), t)
    k = min(int(n_test_groups), n - 1)
    try:
        cv = cpcv(t, n, k, purge, embargo)
    except ValueError as exc:
        out.update(cpcv=None, cpcv_path_sharpe=None, cpcv_reason=str(exc))
        return out
    res = cpcv_oos_sharpe(r, cv)
    settings = {"n_groups": n, "n_test_groups": k, "purge": int(purge), "embargo": int(embargo)}
    out.update(
        cpcv={**settings, **res.summary()},
        cpcv_path_sharpe=None if res.path_sharpe is None else [_finite_or_none(x) for x in res.path_sharpe],
        cpcv_reason=res.reason,
    )
    return out


# ---- deflated Sharpe ratio ---------------------------------------------------------------------


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
