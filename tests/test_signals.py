"""The multi-timeframe signal: hand cases, the as-of boundary, no look-ahead, a plain-python cross-check."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from pydantic import ValidationError

from engine.strategy.signals import DAY_MS, TrendInTrend, daily_trend, signals_compute, weights_from_signals

H4 = 4 * 3_600_000
D0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)


def bars(symbol: str, ts_ms: list[int] | np.ndarray, close: list[float] | np.ndarray) -> pl.DataFrame:
    """Bars with open = high = low = close (only the close matters to the signal)."""
    close = np.asarray(close, dtype=np.float64)
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(close),
            "timestamp": pl.Series(np.asarray(ts_ms, dtype=np.int64)).cast(pl.Datetime("ms", "UTC")),
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": np.ones(len(close)),
        }
    )


def epoch_ms(df: pl.DataFrame) -> np.ndarray:
    return df.get_column("timestamp").dt.epoch("ms").to_numpy()


# ---------------------------------------------------------------------------------------------
# parameters


def test_params_validated() -> None:
    assert TrendInTrend() == TrendInTrend(trend_days=50, ema_bars=20, pullback=0.02, reclaim=True)
    for bad in ({"trend_days": 1}, {"ema_bars": 1}, {"pullback": 0.0}, {"pullback": 0.5}, {"other": 1}):
        with pytest.raises(ValidationError):
            TrendInTrend(**bad)
    with pytest.raises(ValidationError):
        TrendInTrend().trend_days = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# hand-built case

# daily closes of days 0..5; trend_days=3:
#   day 2: SMA 10, close 10 -> no uptrend; day 3: SMA 11, close 13 -> uptrend (known at day 4 00:00)
#   day 4: SMA 12.33, 14 -> up; day 5: SMA 12.67, close 11 -> trend lost (known at day 6 00:00)
HAND_DAILY = [10.0, 10.0, 10.0, 13.0, 14.0, 11.0]
# 4h closes from day 3 00:00 (19 bars, the last one opens day 6 00:00); ema_bars=3 (alpha 0.5):
#   bar 2 (90, ema 95 -> 93.1 threshold) arms; bar 3 (100 > ema 97.5) reclaims while the daily
#   uptrend is not yet known (day 2's fact) -> no entry, disarmed; bar 4 (90, ema 93.75) arms again;
#   bar 5 (opens day 3 20:00, closes day 4 00:00 = day 3's close: uptrend known) reclaims -> entry.
HAND_FINE = [100.0, 100.0, 90.0, 100.0, 90.0, 95.0] + [100.0] * 13
HAND_P = TrendInTrend(trend_days=3, ema_bars=3, pullback=0.02)


def hand_frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    daily = bars("AAA/USDT", [D0 + d * DAY_MS for d in range(len(HAND_DAILY))], HAND_DAILY)
    fine = bars("AAA/USDT", [D0 + 3 * DAY_MS + i * H4 for i in range(len(HAND_FINE))], HAND_FINE)
    return daily, fine


def test_hand_case_daily_trend() -> None:
    daily, _ = hand_frames()
    out = daily_trend(daily.lazy(), HAND_P).collect()
    assert out.get_column("uptrend").to_list() == [False, False, False, True, True, False]
    assert (out.get_column("known_at_ms").to_numpy() == epoch_ms(daily) + DAY_MS).all()
    assert out.get_column("sma")[3] == pytest.approx(11.0)


def test_hand_case_entry_exit_and_weights() -> None:
    daily, fine = hand_frames()
    sig = signals_compute(fine.lazy(), daily.lazy(), HAND_P, H4)
    assert sig.height == len(HAND_FINE)
    # day 3 bars 0-4 see day 2 (no uptrend); bar 5 .. day 5 bar 4 see days 3-4; day 5 bar 5 sees day 5
    assert sig.get_column("uptrend").to_list() == [False] * 5 + [True] * 12 + [False] * 2
    assert sig.get_column("armed").to_list() == [False, False, True, False, True] + [False] * 14
    assert np.flatnonzero(sig.get_column("entry").to_numpy()).tolist() == [5]
    assert sig.get_column("exit_trend").to_list() == [not u for u in sig.get_column("uptrend").to_list()]
    ema = sig.get_column("ema").to_list()
    assert ema[:6] == [100.0, 100.0, 95.0, 97.5, 93.75, 94.375]

    ts = epoch_ms(fine)
    w = weights_from_signals(sig, ["AAA/USDT", "BBB/USDT"], ts, {"AAA/USDT": 0.5, "BBB/USDT": 0.5}, H4)
    assert w.shape == (len(HAND_FINE), 2)
    set_rows = {int(i): float(w[i, 0]) for i in np.flatnonzero(np.isfinite(w[:, 0]))}
    # no uptrend on bars 0-4 -> 0 at rows 1-5 (no-ops while flat); entry decided at bar 5's close
    # -> order at bar 6's open (day 4 00:00); trend lost at bar 17's close -> 0 at row 18; bar 18's
    # own exit would act after the grid and is dropped
    assert set_rows == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.5, 18: 0.0}
    assert np.isnan(w[:, 1]).all()  # a symbol without signals gets no orders


def test_hand_case_no_reclaim_enters_on_the_dip() -> None:
    daily, fine = hand_frames()
    p = HAND_P.model_copy(update={"reclaim": False})
    sig = signals_compute(fine.lazy(), daily.lazy(), p, H4)
    # the dips (bars 2 and 4) happen before the uptrend is known: no entry at all
    assert not sig.get_column("entry").any()
    # with the uptrend known from day 2 on (daily close of day 2 above its SMA), bar 2 enters
    daily2 = daily.with_columns(pl.Series("close", [10.0, 10.0, 12.0, 13.0, 14.0, 11.0]))
    sig2 = signals_compute(fine.lazy(), daily2.lazy(), p, H4)
    assert np.flatnonzero(sig2.get_column("entry").to_numpy()).tolist() == [2, 4]


def test_weights_grid_rules() -> None:
    daily, fine = hand_frames()
    sig = signals_compute(fine.lazy(), daily.lazy(), HAND_P, H4)
    ts = epoch_ms(fine)
    # a grid starting at the entry bar: the order lands on its row 1 (row 0 gets bar 4's trend-off 0)
    w = weights_from_signals(sig, ["AAA/USDT"], ts[5:], {"AAA/USDT": 0.25}, H4)
    assert {int(i): float(w[i, 0]) for i in np.flatnonzero(np.isfinite(w[:, 0]))} == {0: 0.0, 1: 0.25, 13: 0.0}
    # a grid starting right after the entry bar acts on it at its first open (row 0)
    w = weights_from_signals(sig, ["AAA/USDT"], ts[6:], {"AAA/USDT": 0.25}, H4)
    assert {int(i): float(w[i, 0]) for i in np.flatnonzero(np.isfinite(w[:, 0]))} == {0: 0.25, 12: 0.0}
    # a finer (1h) grid: the 4h entry of bar 5 acts at the first 1h bar after it closes
    fine_grid = np.arange(ts[5], ts[5] + 12 * 3_600_000, 3_600_000, dtype=np.int64)
    w = weights_from_signals(sig, ["AAA/USDT"], fine_grid, {"AAA/USDT": 0.25}, H4)
    assert {int(i): float(w[i, 0]) for i in np.flatnonzero(np.isfinite(w[:, 0]))} == {0: 0.0, 4: 0.25}
    with pytest.raises(ValueError, match="strictly increasing"):
        weights_from_signals(sig, ["AAA/USDT"], ts[::-1], {"AAA/USDT": 0.25}, H4)


# ---------------------------------------------------------------------------------------------
# the as-of boundary


@pytest.mark.parametrize("interval_ms", [H4, 3_600_000])
def test_daily_fact_visible_exactly_from_the_days_close(interval_ms: int) -> None:
    # trend_days=2: uptrend day 0 F (no SMA), day 1 T (11 > 10.5), day 2 F (9 < 10), day 3 T (12 > 10.5)
    daily = bars("AAA/USDT", [D0 + d * DAY_MS for d in range(4)], [10.0, 11.0, 9.0, 12.0])
    per_day = DAY_MS // interval_ms
    n = 3 * per_day
    fine_ts = [D0 + DAY_MS + i * interval_ms for i in range(n)]  # days 1..3
    fine = bars("AAA/USDT", fine_ts, np.full(n, 50.0))
    sig = signals_compute(fine.lazy(), daily.lazy(), TrendInTrend(trend_days=2, ema_bars=2), interval_ms)
    up = sig.get_column("uptrend").to_list()
    daily_up = {0: False, 1: True, 2: False, 3: True}
    for day in (1, 2, 3):
        rows = up[(day - 1) * per_day : day * per_day]
        # every bar of day D that closes before D+1 00:00 sees day D-1 at the latest ...
        assert rows[:-1] == [daily_up[day - 1]] * (per_day - 1), day
        # ... the last bar of day D closes at D+1 00:00 = the daily bar's close: it sees day D
        assert rows[-1] == daily_up[day], day
    if interval_ms == H4:
        assert up == [False] * 5 + [True] + [True] * 5 + [False] + [False] * 5 + [True]


def test_fine_bars_before_any_daily_fact_have_no_uptrend() -> None:
    daily = bars("AAA/USDT", [D0 + d * DAY_MS for d in range(3)], [1.0, 2.0, 3.0])
    fine = bars("AAA/USDT", [D0 - 2 * H4 + i * H4 for i in range(4)], [5.0, 4.0, 5.0, 4.0])
    sig = signals_compute(fine.lazy(), daily.lazy(), TrendInTrend(trend_days=2, ema_bars=2), H4)
    assert sig.get_column("uptrend").to_list() == [False] * 4
    assert sig.get_column("exit_trend").to_list() == [True] * 4


def test_integer_epoch_timestamps_accepted_and_symbols_kept_apart() -> None:
    daily, fine = hand_frames()
    other = fine.with_columns(pl.lit("BBB/USDT").alias("symbol"), pl.col("close") * 0 + 7.0)
    both = pl.concat([other, fine]).with_columns(pl.col("timestamp").dt.epoch("ms"))
    sig = signals_compute(both.lazy(), daily.with_columns(pl.col("timestamp").dt.epoch("ms")).lazy(), HAND_P, H4)
    assert sig.get_column("symbol").to_list() == ["AAA/USDT"] * 19 + ["BBB/USDT"] * 19
    aaa = sig.filter(pl.col("symbol") == "AAA/USDT")
    assert np.flatnonzero(aaa.get_column("entry").to_numpy()).tolist() == [5]
    bbb = sig.filter(pl.col("symbol") == "BBB/USDT")
    assert not bbb.get_column("uptrend").any()  # no daily bars for BBB: never another symbol's


# ---------------------------------------------------------------------------------------------
# no look-ahead (property tests)

SYMBOLS = ["AAA/USDT", "BBB/USDT"]
TARGET = {"AAA/USDT": 0.5, "BBB/USDT": 0.3}
price = st.floats(min_value=1.0, max_value=100.0, allow_nan=False)


@st.composite
def market(draw: st.DrawFn) -> dict:
    n_days = draw(st.integers(3, 10))
    daily, fine = [], []
    for s in SYMBOLS:
        daily.append(
            bars(s, [D0 + d * DAY_MS for d in range(n_days)], draw(st.lists(price, min_size=n_days, max_size=n_days)))
        )
        n = 6 * n_days
        fine.append(bars(s, [D0 + i * H4 for i in range(n)], draw(st.lists(price, min_size=n, max_size=n))))
    p = TrendInTrend(
        trend_days=draw(st.integers(2, 4)),
        ema_bars=draw(st.integers(2, 6)),
        pullback=draw(st.floats(0.005, 0.3)),
        reclaim=draw(st.booleans()),
    )
    # t on the 4h grid (most examples: the boundary bars are where a leak shows) or on the hour
    step = draw(st.sampled_from([H4, H4, H4, 3_600_000]))
    t = D0 + draw(st.integers(0, n_days * DAY_MS // step)) * step
    return {"daily": pl.concat(daily), "fine": pl.concat(fine), "p": p, "t": t, "seed": draw(st.integers(0, 2**32 - 1))}


def perturbations(df: pl.DataFrame, mask: pl.Expr, seed: int) -> list[pl.DataFrame]:
    """``df`` with the masked bars crashed, spiked and randomly rescaled (one frame each)."""
    rng = np.random.default_rng(seed)
    return [
        perturb(df, mask, f)
        for f in (np.full(df.height, 0.3), np.full(df.height, 3.0), rng.uniform(0.3, 3.0, df.height))
    ]


def perturb(df: pl.DataFrame, mask: pl.Expr, f: np.ndarray) -> pl.DataFrame:
    factor = pl.Series(f)
    cols = ["open", "high", "low", "close"]
    return df.with_columns([pl.when(mask).then(pl.col(c) * factor).otherwise(pl.col(c)).alias(c) for c in cols])


def run(daily: pl.DataFrame, fine: pl.DataFrame, p: TrendInTrend) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    sig = signals_compute(fine.lazy(), daily.lazy(), p, H4)
    grid = np.unique(epoch_ms(fine))
    return sig, weights_from_signals(sig, SYMBOLS, grid, TARGET, H4), grid


def ms(col: str = "timestamp") -> pl.Expr:
    return pl.col(col).dt.epoch("ms")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(market())
def test_future_fine_bars_do_not_leak(m: dict) -> None:
    t = m["t"]
    sig, w, grid = run(m["daily"], m["fine"], m["p"])
    for fine2 in perturbations(m["fine"], ms() >= t, m["seed"]):
        sig2, w2, _ = run(m["daily"], fine2, m["p"])
        # a 4h bar's outputs depend on 4h bars opened at or before it only
        assert_frame_equal(sig.filter(ms() < t), sig2.filter(ms() < t))
        # the order at row i comes from the signal of row i - 1 (opened at i's open - 4h < t when i <= t)
        keep = grid <= t
        np.testing.assert_array_equal(w[keep], w2[keep])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(market())
def test_unclosed_daily_bars_do_not_leak(m: dict) -> None:
    t = m["t"]
    sig, w, grid = run(m["daily"], m["fine"], m["p"])
    # every daily bar not yet closed at t (close = open + 1 day > t) is changed
    for daily2 in perturbations(m["daily"], ms() + DAY_MS > t, m["seed"]):
        sig2, w2, _ = run(daily2, m["fine"], m["p"])
        # a 4h bar decided (closed) by t used daily bars closed by t only
        closed = ms() + H4 <= t
        assert_frame_equal(sig.filter(closed), sig2.filter(closed))
        keep = grid <= t  # row i's order comes from the bar closing at grid[i] <= t
        np.testing.assert_array_equal(w[keep], w2[keep])


# ---------------------------------------------------------------------------------------------
# cross-check against a plain-python implementation


def reference(close: np.ndarray, p: TrendInTrend, target: float) -> dict[str, list]:
    """The strategy written as loops (4h bars from a day's 00:00, 6 per day, daily = aggregate)."""
    n = len(close)
    day_close = [float(close[6 * d + 5]) for d in range(n // 6)]
    sma, day_up = [], []
    for d in range(len(day_close)):
        if d + 1 < p.trend_days:
            sma.append(None)
            day_up.append(False)
        else:
            s = sum(day_close[d + 1 - p.trend_days : d + 1]) / p.trend_days
            sma.append(s)
            day_up.append(day_close[d] > s)
    alpha = 2.0 / (p.ema_bars + 1.0)
    ema, up, armed, entry, exit_ = [], [], [], [], []
    state = False
    for i in range(n):
        c = float(close[i])
        e = c if i == 0 else (1.0 - alpha) * ema[-1] + alpha * c
        ema.append(e)
        decision = (i + 1) * H4
        known = [day_up[d] for d in range(len(day_up)) if (d + 1) * DAY_MS <= decision]
        u = known[-1] if known else False
        up.append(u)
        before = state
        if c <= e * (1.0 - p.pullback):
            state = True
        elif c > e:
            state = False
        armed.append(state)
        entry.append((before and c > e and u) if p.reclaim else (state and not before and u))
        exit_.append(not u)
    weights = [float("nan")] * n
    for i in range(n - 1):
        if entry[i]:
            weights[i + 1] = target
        elif exit_[i]:
            weights[i + 1] = 0.0
    return {"sma": sma, "ema": ema, "uptrend": up, "armed": armed, "entry": entry, "exit_trend": exit_, "w": weights}


@pytest.mark.parametrize("reclaim", [True, False])
def test_crosscheck_plain_python(reclaim: bool) -> None:
    rng = np.random.default_rng(20240101)
    n = 2004  # 334 whole days
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.012, n)))
    ts = D0 + np.arange(n, dtype=np.int64) * H4
    fine = bars("BTC/USDT", ts, close)
    high = np.maximum.reduceat(close, np.arange(0, n, 6))
    low = np.minimum.reduceat(close, np.arange(0, n, 6))
    daily = pl.DataFrame(
        {
            "symbol": ["BTC/USDT"] * (n // 6),
            "timestamp": pl.Series(D0 + np.arange(n // 6, dtype=np.int64) * DAY_MS).cast(pl.Datetime("ms", "UTC")),
            "open": close[0::6],
            "high": high,
            "low": low,
            "close": close[5::6],
            "volume": np.ones(n // 6),
        }
    )
    p = TrendInTrend(reclaim=reclaim)
    ref = reference(close, p, 0.8)

    trend = daily_trend(daily.lazy(), p).collect()
    sma = trend.get_column("sma").to_list()
    assert [s is None for s in sma] == [s is None for s in ref["sma"]]
    np.testing.assert_allclose(
        [s for s in sma if s is not None], [s for s in ref["sma"] if s is not None], rtol=1e-12, atol=0
    )

    sig = signals_compute(fine.lazy(), daily.lazy(), p, H4)
    np.testing.assert_allclose(sig.get_column("ema").to_numpy(), ref["ema"], rtol=0, atol=1e-12)
    for col in ("uptrend", "armed", "entry", "exit_trend"):
        assert sig.get_column(col).to_list() == ref[col], col
    w = weights_from_signals(sig, ["BTC/USDT"], ts, {"BTC/USDT": 0.8}, H4)
    np.testing.assert_array_equal(w[:, 0], np.asarray(ref["w"]))
    # the case is not vacuous: several entries and trend exits
    assert (w == 0.8).sum() >= 3
    assert (w == 0.0).sum() >= 3


def test_snap_next_maps_signals_to_a_coarser_grid() -> None:
    daily, fine = hand_frames()
    sig = signals_compute(fine.lazy(), daily.lazy(), HAND_P, H4)
    days = np.array([D0 + d * DAY_MS for d in range(3, 7)], dtype=np.int64)
    w = weights_from_signals(sig, ["AAA/USDT"], days, {"AAA/USDT": 0.5}, H4, snap="next")
    # the entry of the bar opened day 3 20:00 acts at day 4 00:00 (exactly a daily open); the
    # trend-off bars of day 3 (acting before day 4) land there too but the entry is written last
    assert w[1, 0] == 0.5
    assert np.isnan(weights_from_signals(sig, ["AAA/USDT"], days, {"AAA/USDT": 0.5}, H4)[2, 0])
