"""The run's funding index lays every window's funding exactly as a filter of the whole frame per window did.

``reference_grid`` is the per-window computation the index replaced (issue 24, item 9): filter the
run's frame to the window, split it by symbol, fill null marks from the panel, ``np.add.at``. The
index must give the same array bit for bit (the long-short goldens depend on it), for sorted
frames (the reader's order: one binary search per column) and unsorted ones (a mask per symbol),
with null marks, several payments in one bar, symbols outside the frame or the columns.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from engine.data.panel import Panel
from engine.run.funding import FundingIndex, _open_at_or_after, funding_grid

H8 = 8 * 3_600_000
DAY = 86_400_000


def reference_grid(frame: pl.DataFrame, panel: Panel, columns: list[str], ts: np.ndarray, bar_ms: int) -> np.ndarray:
    """The per-window computation before the index (a filter of the whole frame per window)."""
    n = ts.size
    out = np.zeros((n, len(columns)))
    if not n:
        return out
    rows = frame.filter(
        pl.col("symbol").is_in(columns) & (pl.col("time") >= int(ts[0])) & (pl.col("time") < int(ts[-1]) + bar_ms)
    )
    for (sym,), g in rows.partition_by("symbol", as_dict=True).items():
        j = columns.index(str(sym))
        t = g.get_column("time").to_numpy().astype(np.int64)
        rate = g.get_column("rate").to_numpy().astype(np.float64)
        mark = g.get_column("mark").fill_null(np.nan).to_numpy().astype(np.float64)
        if np.isnan(mark).any():
            mark = np.where(np.isnan(mark), _open_at_or_after(panel, str(sym), t), mark)
        bar = np.searchsorted(ts, t, side="right") - 1
        np.add.at(out[:, j], bar, rate * mark)
    return out


def _case(seed: int, *, shuffle: bool) -> tuple[pl.DataFrame, Panel]:
    rng = np.random.default_rng(seed)
    symbols = ["AAA/USDT", "BBB/USDT", "CCC/USDT", "DDD/USDT"]
    ts = np.arange(0, 60 * DAY, DAY, dtype=np.int64)
    opens = rng.uniform(50, 150, (ts.size, len(symbols)))
    opens[:5, 1] = np.nan  # BBB lists late, CCC delists early: their marks come from other bars
    opens[40:, 2] = np.nan
    closes = opens * rng.uniform(0.97, 1.03, opens.shape)
    panel = Panel(ts, symbols, opens, opens * 1.01, opens * 0.99, closes, np.ones_like(opens))
    rows = []
    for s in [*symbols[:3], "EEE/USDT"]:  # EEE has funding but is never a column; DDD has none
        times = np.arange(0, 62 * DAY, H8) + rng.integers(0, 3, 186) * 1_000  # a few ms off the grid
        times = np.concatenate([times, times[::17]])  # repeated funding times: several payments in one bar
        for t in np.sort(times):
            mark = None if rng.random() < 0.4 else float(rng.uniform(50, 150))
            rows.append((s, int(t), float(rng.normal(0, 3e-4)), mark))
    frame = pl.DataFrame(
        rows, schema={"symbol": pl.String, "time": pl.Int64, "rate": pl.Float64, "mark": pl.Float64}, orient="row"
    )
    if shuffle:
        frame = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    return frame, panel


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_index_gives_every_window_the_reference_funding_bit_for_bit(seed: int, shuffle: bool) -> None:
    frame, panel = _case(seed, shuffle=shuffle)
    index = FundingIndex(frame)
    assert index._ordered is not shuffle  # both paths run
    columns_of = [
        ["AAA/USDT", "BBB/USDT", "CCC/USDT", "DDD/USDT"],
        ["CCC/USDT", "AAA/USDT"],
        ["DDD/USDT"],
        ["BBB/USDT", "ZZZ/USDT", "AAA/USDT"],
    ]
    checked = 0
    for k, (a, b) in enumerate([(0, 7), (5, 12), (30, 45), (38, 60), (55, 60), (59, 60), (0, 60)]):
        for bar_ms in (DAY, H8):  # the base bars, and a finer grid inside them
            ts = np.arange(a * DAY, b * DAY, bar_ms, dtype=np.int64)
            columns = columns_of[k % len(columns_of)]
            want = reference_grid(frame, panel, columns, ts, bar_ms)
            got = index.grid(panel, columns, ts, bar_ms)
            assert got.shape == want.shape == (ts.size, len(columns))
            assert np.array_equal(got, want), (a, b, bar_ms, columns)
            assert got.tobytes() == want.tobytes()
            checked += int(np.count_nonzero(want))
    assert checked > 300  # real payments were compared, not only zeros
    # the one-window helper is the index too
    ts = np.arange(10 * DAY, 20 * DAY, DAY, dtype=np.int64)
    assert np.array_equal(
        funding_grid(frame, panel, ["AAA/USDT"], ts, DAY), reference_grid(frame, panel, ["AAA/USDT"], ts, DAY)
    )


def test_a_window_sums_its_payments_by_hand() -> None:
    """Two payments in bar 0 (one with the mark, one null: the open at/after), one in bar 2, one after the window."""
    ts = np.array([0, DAY, 2 * DAY], dtype=np.int64)
    opens = np.array([[100.0], [110.0], [120.0]])
    panel = Panel(ts, ["AAA/USDT"], opens, opens, opens, opens + 1.0, np.ones_like(opens))
    frame = pl.DataFrame(
        {
            "symbol": ["AAA/USDT"] * 4,
            "time": [0, H8, 2 * DAY + H8, 3 * DAY],
            "rate": [1e-4, 2e-4, -1e-4, 5e-4],
            "mark": [101.0, None, None, 99.0],
        }
    )
    got = FundingIndex(frame).grid(panel, ["AAA/USDT", "BBB/USDT"], ts, DAY)
    # null mark at 08:00 on day 0: the next bar's open (110); at day 2 08:00 no bar follows: the last close (121)
    want = np.array([[1e-4 * 101.0 + 2e-4 * 110.0, 0.0], [0.0, 0.0], [-1e-4 * 121.0, 0.0]])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_an_empty_frame_and_an_empty_window_give_zeros() -> None:
    ts = np.array([0, DAY], dtype=np.int64)
    opens = np.ones((2, 1))
    panel = Panel(ts, ["AAA/USDT"], opens, opens, opens, opens, opens)
    empty = pl.DataFrame(schema={"symbol": pl.String, "time": pl.Int64, "rate": pl.Float64, "mark": pl.Float64})
    assert np.array_equal(FundingIndex(empty).grid(panel, ["AAA/USDT"], ts, DAY), np.zeros((2, 1)))
    frame = pl.DataFrame({"symbol": ["AAA/USDT"], "time": [0], "rate": [1e-4], "mark": [1.0]})
    assert FundingIndex(frame).grid(panel, ["AAA/USDT"], ts[:0], DAY).shape == (0, 1)
