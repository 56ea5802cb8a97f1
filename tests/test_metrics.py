"""engine.run.metrics cross-checked against independent implementations: empyrical-reloaded (Sharpe,
Sortino, CAGR, Calmar, max drawdown, volatility) and scipy.stats (skewness, kurtosis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from engine.run.metrics import YEAR_DAYS, equity_metrics

empyrical = pytest.importorskip("empyrical", reason="pip install -e '.[test]' installs empyrical-reloaded")

INIT = 100_000.0


def _series() -> list[np.ndarray]:
    """Daily returns: a few random walks (different drift, volatility, fat tails) and a hand-made one."""
    rng = np.random.default_rng(42)
    out = [
        rng.normal(0.001, 0.02, 365),
        rng.normal(-0.0005, 0.04, 730),
        rng.standard_t(3, 500) * 0.01 + 0.0003,
        np.array([0.1, -0.05, 0.02, -0.2, 0.15, 0.0, 0.03, -0.01, 0.05, -0.07]),
    ]
    return out


@pytest.mark.parametrize("rets", _series(), ids=["walk", "losing", "fat_tails", "hand"])
def test_equity_metrics_match_empyrical_and_scipy(rets: np.ndarray) -> None:
    equity = INIT * np.cumprod(1.0 + rets)
    m = equity_metrics(equity, INIT, n_days=float(len(rets)))
    ann = dict(annualization=int(YEAR_DAYS))
    expect = {
        "total_return": empyrical.cum_returns_final(rets),
        "cagr": empyrical.cagr(rets, **ann),
        "annual_volatility": empyrical.annual_volatility(rets, **ann),
        "sharpe": empyrical.sharpe_ratio(rets, **ann),
        "sortino": empyrical.sortino_ratio(rets, **ann),
        "max_drawdown": empyrical.max_drawdown(rets),
        "calmar": empyrical.calmar_ratio(rets, **ann),
        "skewness": scipy.stats.skew(rets, bias=True),
        "kurtosis": scipy.stats.kurtosis(rets, fisher=False, bias=True),
    }
    for key, want in expect.items():
        assert m[key] == pytest.approx(float(want), rel=1e-9, abs=1e-12), key
    assert m["n_returns"] == len(rets)


def test_drawdown_counts_a_loss_on_the_first_day() -> None:
    # the initial cash is the first peak: a first-day loss is a drawdown
    m = equity_metrics(np.array([90.0, 95.0, 99.0]), 100.0, n_days=3.0)
    assert m["max_drawdown"] == pytest.approx(-0.1)
    assert m["max_drawdown"] == pytest.approx(empyrical.max_drawdown(np.array([-0.1, 95 / 90 - 1, 99 / 95 - 1])))


def test_flat_equity_has_no_ratio_and_no_nan() -> None:
    m = equity_metrics(np.full(30, INIT), INIT, n_days=30.0)
    assert m["total_return"] == 0.0 and m["max_drawdown"] == 0.0
    assert m["sharpe"] is None and m["sortino"] is None and m["calmar"] is None
    assert all(v is None or math.isfinite(v) for v in m.values())
