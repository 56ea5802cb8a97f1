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

Each lives in its own module (:mod:`engine.run.objective`, :mod:`engine.run.cpcv`,
:mod:`engine.run.pbo`, :mod:`engine.run.deflated`) and is re-exported here; :func:`oos_report` is
defined here.

Degenerate data never raises (invalid settings do, with a ValueError): a combination whose objective is undefined (no trades: all-zero
returns; zero variance; fewer than two returns; a NaN return) ranks last and is still counted; a
one-combination matrix has nothing to select, so PBO and the CPCV distribution are ``None`` with a
``reason`` string. Combinations identical in every window are one trial (:func:`distinct_columns`):
two copies of one combination are a one-combination matrix, not a choice between two.
"""

from __future__ import annotations

import math

import numpy as np

from engine.core.best import best_index as best_index
from engine.run.cpcv import CPCV, CPCVResult, cpcv, cpcv_oos_sharpe
from engine.run.deflated import EULER_GAMMA, deflated_sharpe, deflated_sharpe_ratio, expected_max_sharpe
from engine.run.objective import (
    IDENTICAL_COMBINATIONS,
    ONE_COMBINATION,
    Objective,
    distinct_columns,
    first_identical,
    returns_matrix,
    sharpe_columns,
)
from engine.run.pbo import PBOResult, pbo_cscv, relative_rank

__all__ = [
    "CPCV",
    "EULER_GAMMA",
    "IDENTICAL_COMBINATIONS",
    "ONE_COMBINATION",
    "CPCVResult",
    "Objective",
    "PBOResult",
    "cpcv",
    "cpcv_oos_sharpe",
    "deflated_sharpe",
    "deflated_sharpe_ratio",
    "distinct_columns",
    "expected_max_sharpe",
    "first_identical",
    "oos_report",
    "pbo_cscv",
    "relative_rank",
    "sharpe_columns",
]


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
    r = returns_matrix(returns)
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
