"""engine.testing: the shared cross-check fixture is light to import and its SMA is exact."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from engine.testing import sma, sma_cross


def _tick_btc(seed: int = 1) -> np.ndarray:
    """BTC-like closes on a 0.01 tick: falls in random steps, each followed by 40 equal closes."""
    rng = np.random.default_rng(seed)
    parts, p = [], 43251.37
    for _ in range(40):
        seg = np.round(p + np.cumsum(rng.integers(-3000, 2000, 40) * 0.01), 2)
        p = float(seg[-1])
        parts += [seg, np.full(40, p)]
    return np.concatenate(parts)


def test_sma_of_equal_closes_is_that_close_exactly() -> None:
    close = _tick_btc()
    flat = np.array([i >= 29 and bool(np.all(close[i - 29 : i + 1] == close[i])) for i in range(len(close))])
    assert flat.sum() > 100
    for n in (10, 30):
        assert np.array_equal(sma(close, n)[flat], close[flat])


def test_close_equal_to_sma_is_no_strict_crossover() -> None:
    """With a running (cumulative) sum the two SMAs of a flat stretch differ by ~1e-12 and a bar of
    this series became a false SMA(10) > SMA(30) crossover."""
    close = _tick_btc()
    flat = np.array([i >= 29 and bool(np.all(close[i - 29 : i + 1] == close[i])) for i in range(len(close))])
    signals = sma_cross(close)
    assert len(signals) > 0
    assert not flat[signals].any()


def test_sma_matches_a_plain_mean() -> None:
    x = np.random.default_rng(0).lognormal(10, 0.5, 500)
    got = sma(x, 7)
    assert np.isnan(got[:6]).all()
    want = np.array([np.mean(x[i - 6 : i + 1]) for i in range(6, len(x))])
    np.testing.assert_allclose(got[6:], want, rtol=1e-14)
    assert np.isnan(sma(x[:3], 7)).all()


def test_engine_testing_imports_nothing_heavy() -> None:
    code = "import sys, engine.testing; print(sorted(m for m in ('pandas', 'vectorbt', 'numba', 'polars') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
