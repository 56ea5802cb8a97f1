"""Figure 13's pieces: the freqtrade folder it writes and reads back, its trade comparisons and verdict."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from benchmarks.fig13_speed import FIVE_MIN_NS, compare_bt, compare_vbt, folder_write, prices_read
from benchmarks.fig13_throughput import BOOKS, at_least, grid, timed_rates


def test_folder_is_read_back_through_the_files_source_with_its_gaps(tmp_path: Path) -> None:
    folder_write(tmp_path, 2_000)
    assert [p.name for p in tmp_path.iterdir()] == ["BTC_USDT-5m.feather"]
    prices = prices_read(tmp_path)
    assert prices.shape == (2_000, 1)
    steps = np.diff(prices.index.view(np.int64))
    assert (steps % FIVE_MIN_NS == 0).all()
    assert sorted(steps[steps > FIVE_MIN_NS] // FIVE_MIN_NS) == [13, 25, 37]  # the three missing spans + 1


def _vbt(trades: list[tuple[int, float, int, float, int]]) -> SimpleNamespace:
    """A stand-in for a vectorbt Portfolio: its trades' records of column 0."""
    dt = [
        ("col", "i8"),
        ("entry_idx", "i8"),
        ("entry_price", "f8"),
        ("exit_idx", "i8"),
        ("exit_price", "f8"),
        ("status", "i8"),
    ]
    arr = np.array([(0, *t) for t in trades], dtype=dt)
    return SimpleNamespace(trades=SimpleNamespace(records_arr=arr))


def test_vbt_comparison_skips_entry_bar_exits_and_catches_a_difference() -> None:
    ours = [[(5, 100.0, 5, 99.0), (10, 101.0, 12, 103.0), (20, 100.0, 25, 98.0), (30, 100.0, None, None)]]
    theirs = _vbt(
        [(5, 100.0, 7, 99.0, 1), (10, 101.0, 12, 103.0, 1), (20, 100.0, 26, 98.0, 1), (30, 100.0, 40, 101.0, 0)]
    )
    got = compare_vbt(ours, theirs)
    # the trade out on its entry bar is not comparable; bar 20's exit differs; bar 30 is open in both
    assert got == {"trades": 4, "comparable": 3, "equal": 2}


def test_backtesting_comparison_counts_equal_trades() -> None:
    frame = pd.DataFrame({"EntryBar": [1, 8], "EntryPrice": [10.0, 11.0], "ExitBar": [4, 9], "ExitPrice": [9.5, 12.0]})
    assert compare_bt([[(1, 10.0, 4, 9.5), (8, 11.0, None, None)]], [frame], 10) == {"trades": 2, "equal": 2}
    assert compare_bt([[(1, 10.0, 4, 9.4)]], [frame], 10) == {"trades": 2, "equal": 0}


def test_throughput_verdict_needs_the_whole_interval() -> None:
    assert at_least([1.2e8, 1.3e8, 1.1e8], 1e8) == "pass"
    assert at_least([0.5e8, 0.6e8, 0.7e8], 1e8) == "miss"
    assert at_least([0.9e8, 1.2e8, 1.3e8], 1e8) == "inconclusive"
    # nine calls: the interval is the 2nd..8th value, so one slow call (a burst of other jobs) does not decide
    assert at_least([0.2e8] + [1.5e8] * 8, 1e8) == "pass"
    assert at_least([0.2e8, 0.3e8] + [1.5e8] * 7, 1e8) == "inconclusive"
    assert at_least([0.9e8] * 8 + [5e8], 1e8) == "miss"


def test_throughput_times_one_and_every_thread_count_alternately() -> None:
    import numba

    seen: list[int] = []
    rates = timed_rates(lambda: seen.append(numba.get_num_threads()), 1_000, 3)
    counts = sorted({1, numba.config.NUMBA_NUM_THREADS})
    assert list(rates) == [str(t) for t in counts]
    assert seen == counts + counts * 3  # one untimed call of each, then the counts in alternation
    assert all(len(r["wall"]) == len(r["cpu"]) == 3 for r in rates.values())
    rules, (sl, tp, trail) = grid()
    assert len(rules) == BOOKS and sl.shape == tp.shape == trail.shape == (1, BOOKS)
    assert trail.sum() == BOOKS // 2 and rules[2].sl_trail and not rules[0].sl_trail
