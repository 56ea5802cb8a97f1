"""engine.strategy.spread: the EDGE spread equals the ``bidask`` package's ``edge`` (its authors' reference
implementation) on the same bars, recovers a known spread, and the per-window half-spreads read past bars only.

The bars are simulated as in the paper: an efficient log price walks in small steps inside each bar,
every trade is a buy at ``mid * (1 + S/2)`` or a sell at ``mid * (1 - S/2)`` with equal odds, and the
bar's open, high, low and close are the first, highest, lowest and last trade.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from bidask import edge
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.strategy.spread import edge_spread, edge_spreads, half_spreads

DAY = 86_400_000
START = 1_704_067_200_000  # 2024-01-01 UTC


def ohlc(seed: int, n: int, spread: float, sigma: float = 0.02, trades: int = 60) -> np.ndarray:
    """(4, n) open, high, low, close of ``n`` bars with ``trades`` trades each at a full spread ``spread``."""
    rng = np.random.default_rng(seed)
    mid = math.log(100.0) + np.cumsum(rng.normal(0.0, sigma / math.sqrt(trades), n * trades)).reshape(n, trades)
    side = rng.choice([-1.0, 1.0], size=(n, trades))
    px = np.exp(mid) * (1.0 + side * spread / 2.0)
    return np.stack([px[:, 0], px.max(axis=1), px.min(axis=1), px[:, -1]])


def flat_bars(bars: np.ndarray, seed: int, share: float) -> np.ndarray:
    """A ``share`` of bars without a trade: open = high = low = close = the previous close."""
    out = bars.copy()
    rng = np.random.default_rng(seed)
    for t in np.flatnonzero(rng.random(bars.shape[1]) < share):
        if t > 0:
            out[:, t] = out[3, t - 1]
    return out


def with_gaps(bars: np.ndarray, seed: int, share: float, whole: bool = True) -> np.ndarray:
    """NaN for a ``share`` of bars (whole bars, or single prices when ``whole`` is False)."""
    out = bars.copy()
    rng = np.random.default_rng(seed)
    if whole:
        out[:, rng.random(bars.shape[1]) < share] = np.nan
    else:
        out[rng.random(bars.shape) < share] = np.nan
    return out


def reference(bars: np.ndarray, sign: bool = False) -> float:
    return float(edge(bars[0], bars[1], bars[2], bars[3], sign=sign))


def same(got: float, want: float) -> bool:
    return (math.isnan(got) and math.isnan(want)) or abs(got - want) <= 1e-9


SERIES = {
    "gbm_1pct_250": ohlc(1, 250, 0.01),
    "gbm_5pct_60": ohlc(2, 60, 0.05, sigma=0.04),
    "gbm_10bp_1000": ohlc(3, 1000, 0.001, sigma=0.01),
    "gbm_no_spread_120": ohlc(4, 120, 0.0),
    "gbm_2pct_30": ohlc(5, 30, 0.02),
    "few_trades_200": ohlc(6, 200, 0.01, trades=3),
    "gaps_whole_bars": with_gaps(ohlc(7, 300, 0.01), 70, 0.15),
    "gaps_single_prices": with_gaps(ohlc(8, 300, 0.01), 80, 0.05, whole=False),
    "flat_bars_30pct": flat_bars(ohlc(9, 300, 0.01), 90, 0.3),
    "flat_and_gaps": with_gaps(flat_bars(ohlc(10, 300, 0.02), 100, 0.2), 101, 0.1),
    "three_bars": ohlc(11, 3, 0.01),
}


@pytest.mark.parametrize("sign", [False, True])
@pytest.mark.parametrize("name", list(SERIES))
def test_edge_spread_equals_bidask(name: str, sign: bool) -> None:
    bars = SERIES[name]
    got = edge_spread(*bars, sign=sign)
    want = reference(bars, sign=sign)
    assert same(got, want), (got, want)
    if name != "three_bars":
        assert not math.isnan(got)


def test_negative_estimates_are_the_absolute_root_unless_signed() -> None:
    # a spread far below the volatility: the estimate of S**2 is mostly noise, often negative
    signs = []
    for seed in range(40):
        bars = ohlc(100 + seed, 40, 0.0005, sigma=0.05)
        unsigned, signed = edge_spread(*bars), edge_spread(*bars, sign=True)
        assert same(unsigned, reference(bars)) and same(signed, reference(bars, sign=True))
        assert unsigned == pytest.approx(abs(signed), abs=0.0) and unsigned >= 0.0
        signs.append(math.copysign(1.0, signed))
    assert -1.0 in signs and 1.0 in signs  # both branches were met


@pytest.mark.parametrize(
    "bars",
    [
        np.array([[100.0, 101.0], [102.0, 103.0], [99.0, 100.0], [101.0, 100.0]]),  # two bars: fewer than 3
        np.full((4, 50), 100.0),  # no trade at all: tau = 0 everywhere
        np.full((4, 30), np.nan),  # nothing known
    ],
    ids=["two_bars", "all_flat", "all_missing"],
)
def test_not_estimable_is_nan_like_bidask(bars: np.ndarray) -> None:
    assert math.isnan(edge_spread(*bars))
    assert math.isnan(reference(bars))


def test_single_price_bars_that_move_are_not_estimable() -> None:
    # each bar trades at one price, different from the previous close: tau = 1 everywhere, but the
    # open is always at the high and the low (po = 0) and so is the previous close (pc = 0)
    px = 100.0 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 50)))
    bars = np.stack([px, px, px, px])  # h == l but l != previous close: tau = 1, po = pc = 0
    assert math.isnan(edge_spread(*bars)) and math.isnan(reference(bars))


@pytest.mark.parametrize("spread", [0.005, 0.02, 0.05])
def test_edge_recovers_a_known_spread(spread: float) -> None:
    # the estimator is unbiased up to the discreteness of the trades; on 20,000 bars it is close
    bars = ohlc(int(spread * 1e4), 20_000, spread, sigma=0.01, trades=200)
    assert edge_spread(*bars) == pytest.approx(spread, rel=0.05)


def test_columns_are_estimated_independently() -> None:
    names = ["gbm_1pct_250", "gaps_whole_bars", "flat_bars_30pct", "gaps_single_prices"]
    n = min(SERIES[k].shape[1] for k in names)
    stack = np.stack([SERIES[k][:, :n] for k in names], axis=2)  # (4, n, k)
    got = edge_spreads(stack[0], stack[1], stack[2], stack[3])
    assert got.shape == (len(names),)
    for j, k in enumerate(names):
        assert same(float(got[j]), reference(SERIES[k][:, :n]))


def test_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match="one shape"):
        edge_spreads(np.ones(5), np.ones(5), np.ones(4), np.ones(5))
    with pytest.raises(ValueError, match="1-d"):
        edge_spread(np.ones((5, 2)), np.ones((5, 2)), np.ones((5, 2)), np.ones((5, 2)))


# ---- half_spreads: one window's estimate per symbol, from past bars only ----------------------------


def long_frame(series: dict[str, np.ndarray], start_ms: int = START, step: int = DAY) -> pl.DataFrame:
    """Bars of several symbols in the lakehouse layout, NaN bars left out (a missing bar is a missing row)."""
    frames = []
    for symbol, bars in series.items():
        keep = ~np.isnan(bars).any(axis=0)
        t = start_ms + step * np.arange(bars.shape[1])
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "timestamp": t[keep],
                    "open": bars[0, keep],
                    "high": bars[1, keep],
                    "low": bars[2, keep],
                    "close": bars[3, keep],
                    "volume": 1.0,
                }
            ).with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC")))
        )
    return pl.concat(frames).sort("timestamp", "symbol")


UNIVERSE = {
    "AAA/USDT": ohlc(20, 200, 0.01),
    "BBB/USDT": with_gaps(ohlc(21, 200, 0.03, sigma=0.05), 22, 0.2),
    "CCC/USDT": flat_bars(ohlc(23, 200, 0.004, trades=5), 24, 0.4),
}


@pytest.mark.parametrize(("at", "window"), [(120, 30), (200, 60), (35, 30), (10, 30)])
def test_half_spreads_are_half_the_edge_of_the_past_window(at: int, window: int) -> None:
    bars = long_frame(UNIVERSE)
    start = START + at * DAY  # bars 0 .. at-1 have closed by then
    got = half_spreads(bars, ["CCC/USDT", "AAA/USDT", "ZZZ/USDT", "BBB/USDT"], start, window, DAY)
    lo = at - window
    for j, s in enumerate(["CCC/USDT", "AAA/USDT", "BBB/USDT"]):
        past = UNIVERSE[s][:, max(lo, 0) : at]
        if lo < 0:  # bar times before the data's first bar are missing bars
            past = np.concatenate([np.full((4, -lo), np.nan), past], axis=1)
        assert same(float(got[[0, 1, 3][j]]), reference(past) / 2), s
    assert math.isnan(got[2])  # a symbol without bars


def test_half_spreads_read_a_missing_bar_as_missing_not_as_a_neighbour() -> None:
    bars = UNIVERSE["BBB/USDT"][:, 100:160]
    assert np.isnan(bars).any()
    got = half_spreads(long_frame({"BBB/USDT": bars}), ["BBB/USDT"], START + 60 * DAY, 60, DAY)
    squeezed = bars[:, ~np.isnan(bars).any(axis=0)]  # what pairing across the gaps would give
    assert same(float(got[0]), reference(bars) / 2)
    assert not same(float(got[0]), reference(squeezed) / 2)


def test_half_spreads_take_epoch_ms_and_a_start_off_the_grid() -> None:
    bars = long_frame({"AAA/USDT": UNIVERSE["AAA/USDT"]})
    as_ms = bars.with_columns(pl.col("timestamp").dt.epoch("ms"))
    a = half_spreads(bars, ["AAA/USDT"], START + 50 * DAY, 30, DAY)
    b = half_spreads(as_ms, ["AAA/USDT"], START + 50 * DAY + DAY // 2, 30, DAY)  # bar 50 has not closed
    assert same(float(a[0]), float(b[0]))
    assert same(float(a[0]), reference(UNIVERSE["AAA/USDT"][:, 20:50]) / 2)


@settings(max_examples=40, deadline=None)
@given(
    at=st.integers(min_value=5, max_value=190),
    window=st.integers(min_value=3, max_value=80),
    seed=st.integers(min_value=0, max_value=2**31),
    drop=st.floats(min_value=0.0, max_value=1.0),
)
def test_half_spreads_ignore_every_bar_from_the_window_start_on(at: int, window: int, seed: int, drop: float) -> None:
    # whatever happens at or after the start (bars changed, removed, added, crashes) leaves it unchanged
    bars = long_frame(UNIVERSE)
    start = START + at * DAY
    symbols = list(UNIVERSE)
    before = half_spreads(bars, symbols, start, window, DAY)
    rng = np.random.default_rng(seed)
    future = pl.col("timestamp").dt.epoch("ms") >= start
    keep = pl.Series(rng.random(bars.height) >= drop)
    scale = pl.Series(np.exp(rng.normal(0.0, 0.5, bars.height)))
    changed = bars.with_columns(
        [
            pl.when(future).then(pl.col(c) * scale).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        ]
    ).filter(~future | keep)
    after = half_spreads(changed, symbols, start, window, DAY)
    np.testing.assert_array_equal(before, after)
