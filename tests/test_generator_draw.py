"""The generator's draw, written in place, gives the bits of its formula as first written (the stores' bytes)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from engine.core.units import HOUR_MS
from engine.data.sources.synthetic import _MAJORS, SymbolPath, SyntheticSource, _regimes, _student_t


def reference_draw(src: SyntheticSource, i: int, rng: np.random.Generator) -> SymbolPath:
    """``SyntheticSource._draw`` as it was first written: one new array per operation."""
    n, n_days = src.n_hours, src.n_days
    beta = rng.uniform(0.6, 1.4) if i else 1.0
    base_vol = (0.004 if i == 0 else rng.uniform(0.005, 0.011)) * np.exp(-0.125)
    regime = _regimes(rng, n_days, mean_days=60.0)
    n_seg = regime.max() + 1
    trending = rng.random(n_seg) < (0.6 if rng.random() < 0.5 else 0.35)
    seg_drift = np.where(trending, rng.normal(0.0, 0.004, n_seg), 0.0)
    drift = np.repeat(seg_drift[regime] / 24.0, 24)
    mr = np.repeat((~trending)[regime].astype(np.float64), 24)
    logvol = lfilter([1.0], [1.0, -0.995], rng.normal(0.0, 0.04, n))
    sigma = base_vol * np.exp(logvol)
    shock = sigma * _student_t(rng, n)
    walk = np.cumsum(beta * src._market + drift + (1.0 - mr) * shock)
    revert = lfilter([1.0], [1.0, -0.97], mr * shock * 2.0)
    p0 = 30_000.0 if i == 0 else float(np.exp(rng.uniform(np.log(0.05), np.log(2_000.0))))
    close = p0 * np.exp(walk + revert)
    open_ = np.concatenate(([p0], close[:-1]))
    wick = 0.6 * sigma
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 1.0, n)) * wick)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 1.0, n)) * wick)
    ret = np.abs(np.diff(np.log(close), prepend=np.log(p0)))
    dollar = np.exp(rng.uniform(np.log(2e5), np.log(5e8))) / 24.0
    volume = dollar * np.exp(0.5 * logvol + rng.normal(0.0, 0.3, n)) * (1.0 + 30.0 * ret) / close
    first_day, last_day = 0, n_days
    if i >= len(_MAJORS):
        u = rng.random()
        if u < 0.10:
            first_day = int(rng.uniform(0.1, 0.7) * n_days)
        elif u < 0.17:
            last_day = int(rng.uniform(0.4, 0.95) * n_days)
    life = slice(first_day * 24, last_day * 24)
    ts = src.start_ms + np.arange(n, dtype=np.int64) * HOUR_MS
    return SymbolPath(ts[life], open_[life], high[life], low[life], close[life], volume[life])


@pytest.mark.parametrize(("seed", "start", "end"), [(7, "2021-01-01", "2024-12-31"), (3, "2018-01-01", "2018-03-31")])
def test_the_draw_keeps_its_bits(seed: int, start: str, end: str) -> None:
    src = SyntheticSource(seed, 300, start, end)
    for i in [*range(8), *range(100, 300, 7)]:  # the majors, then listings, delistings and whole lives
        got = src._draw(i, np.random.default_rng([seed, i]))
        want = reference_draw(src, i, np.random.default_rng([seed, i]))
        for name in ("timestamp_ms", "open", "high", "low", "close", "volume"):
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == b.dtype
            assert a.tobytes() == b.tobytes(), (i, name)
