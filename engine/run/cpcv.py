"""Combinatorial purged cross-validation (López de Prado, 2018, ch. 12).

The splits and paths of T windows, and the distribution of out-of-sample Sharpe ratios of a
selection rule over them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.core.best import best_index
from engine.run.objective import (
    IDENTICAL_COMBINATIONS,
    ONE_COMBINATION,
    Objective,
    distinct_columns,
    returns_matrix,
    sharpe_columns,
)


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
    r = returns_matrix(returns)
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
