"""The benchmark suite's verdict and exit logic (no timing): a benchmark that cannot fail is a defect.

A negative or noise-level estimate must read "inconclusive", never "pass"; a correctness mismatch
must read "MISMATCH" and make ``python -m benchmarks`` exit 1, while a missed speed target must not.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from benchmarks import run as bench_run
from benchmarks.common import (
    INCONCLUSIVE,
    MATCH,
    MISMATCH,
    MISS,
    PASS,
    Row,
    check,
    check_equal,
    check_interval,
    exit_code,
    loglog_exponent,
)
from benchmarks.fig2_simulation import same_records
from benchmarks.fig7_sweeps import TARGET_GRID, ratio_verdict, slope_estimate, widen_single


@pytest.mark.parametrize(
    ("estimate", "low", "high", "expected"),
    [
        (-0.047, -0.2, 0.1, INCONCLUSIVE),  # figure 7's old "-47 ms ... pass"
        (-0.040, -0.05, -0.03, INCONCLUSIVE),  # negative however tight
        (0.020, -0.005, 0.060, INCONCLUSIVE),  # interval holds 0: inside its own noise
        (0.030, 0.010, 0.070, INCONCLUSIVE),  # straddles the limit 0.05
        (0.030, 0.020, 0.040, PASS),
        (0.080, 0.060, 0.100, MISS),
        (0.030, 0.040, 0.050, INCONCLUSIVE),  # an interval that does not hold its estimate
        (math.nan, 0.01, 0.02, INCONCLUSIVE),
    ],
)
def test_check_interval(estimate: float, low: float, high: float, expected: str) -> None:
    assert check_interval(estimate, low, high, 0.05) == expected


def test_check_interval_for_an_exponent_may_be_below_zero() -> None:
    # a fitted exponent is not a cost: <= 0 only means "flat", which is within "<= 1.1"
    assert check_interval(-0.1, -0.3, 0.2, 1.1, positive=False) == PASS
    assert check_interval(1.3, 1.2, 1.5, 1.1, positive=False) == MISS
    assert check_interval(1.0, 0.8, 1.3, 1.1, positive=False) == INCONCLUSIVE


def test_check_point_estimate() -> None:
    assert check(0.5, 1.2) == PASS
    assert check(1.5, 1.2) == MISS
    assert check(-0.04, 0.05) == INCONCLUSIVE
    assert check(0.0, 0.05) == INCONCLUSIVE
    assert check(None, 1.0) == ""


def test_figure7_negative_slope_is_inconclusive_never_pass() -> None:
    # the grid's pairs: the large grid came out faster than the small one twice out of three
    grid = slope_estimate([9.0, 9.5, 8.8], [8.0, 9.0, 9.3], 4, 108)
    assert grid["estimate_s"] < 0
    seq = slope_estimate([10.0], [40.0], 4, 27)
    ratio, low, _high, verdict = ratio_verdict(grid, seq, TARGET_GRID)
    assert low < 0
    assert ratio < 0
    assert verdict == INCONCLUSIVE


def test_figure7_slope_inside_noise_is_inconclusive() -> None:
    # positive median, but one pair says the large grid was cheaper: the interval holds 0
    grid = slope_estimate([9.0, 9.0, 9.0], [9.5, 8.9, 10.0], 4, 108)
    assert grid["estimate_s"] > 0 > grid["low_s"]
    seq = slope_estimate([10.0, 10.2], [40.0, 41.0], 4, 27)
    assert ratio_verdict(grid, seq, TARGET_GRID)[3] == INCONCLUSIVE


def test_figure7_measurable_slope_passes_or_misses() -> None:
    seq = slope_estimate([10.0, 10.1], [40.0, 40.3], 4, 27)  # ~1.3 s a combination
    cheap = slope_estimate([8.0, 8.1, 8.2], [11.0, 11.2, 11.1], 4, 108)  # ~30 ms
    assert ratio_verdict(cheap, seq, TARGET_GRID)[3] == PASS
    dear = slope_estimate([8.0, 8.1, 8.2], [20.0, 20.5, 20.3], 4, 108)  # ~120 ms
    assert ratio_verdict(dear, seq, TARGET_GRID)[3] == MISS


def test_figure7_single_pair_gets_the_grid_pairs_noise() -> None:
    seq = widen_single(slope_estimate([10.0], [33.0], 4, 27), 2.3, 4, 27)
    assert seq["estimate_s"] == pytest.approx(1.0)
    assert (seq["low_s"], seq["high_s"]) == pytest.approx((0.9, 1.1))


def test_loglog_exponent() -> None:
    x = [100.0, 500.0, 2000.0]
    assert loglog_exponent(x, [2 * v for v in x]) == pytest.approx(1.0)
    assert loglog_exponent(x, [v**2 for v in x]) == pytest.approx(2.0)
    assert loglog_exponent(x, [3.0, 3.0, 3.0]) == pytest.approx(0.0)
    assert math.isnan(loglog_exponent(x, [1.0, -1.0, 2.0]))
    assert math.isnan(loglog_exponent([100.0], [1.0]))


def _records(n: int = 4) -> np.ndarray:
    from vectorbt.portfolio.enums import order_dt

    rec = np.zeros(n, dtype=order_dt)
    rec["id"] = np.arange(n)
    rec["idx"] = np.arange(n)
    rec["size"] = 1.5
    rec["price"] = 100.0 + np.arange(n)
    return rec


def test_figure2_records_check() -> None:
    theirs = _records()
    rows = np.array([0, 3, 8, 9])  # the order rows' places in the full grid
    ours = theirs.copy()
    ours["idx"] = rows
    assert same_records(ours, theirs, rows, carry=False)
    assert check_equal(same_records(ours, theirs, rows, carry=False)) == MATCH
    off = ours.copy()
    off["price"][2] += 1e-9
    assert not same_records(off, theirs, rows, carry=False)
    assert check_equal(same_records(off, theirs, rows, carry=False)) == MISMATCH
    assert not same_records(ours[:3], theirs, rows, carry=False)


def test_exit_code() -> None:
    miss = Row("7 sweeps", "per combination", 80.0, "ms", 1000.0, "seq", "<= 0.05x", MISS)
    inconclusive = Row("7 sweeps", "per combination", -47.0, "ms", 1000.0, "seq", "<= 0.05x", INCONCLUSIVE)
    match = Row("6 peer", "trades", 207, "trades", 207, "bt", "identical", MATCH)
    mismatch = Row("6 peer", "trades", 206, "trades", 207, "bt", "identical", MISMATCH)
    assert exit_code([miss, inconclusive, match], []) == 0  # speed targets are reported, not enforced
    assert exit_code([miss, match, mismatch], []) == 1
    assert exit_code([match], ["3"]) == 1


def _fake_figure(rows: list[Row]) -> Any:
    return SimpleNamespace(sizes=lambda quick: {}, run=lambda quick, tmp: (rows, {}))


@pytest.mark.parametrize(
    ("statuses", "code"),
    [((PASS, MATCH), 0), ((MISS, INCONCLUSIVE, MATCH), 0), ((PASS, MISMATCH), 1)],
)
def test_main_exit_status(
    statuses: tuple[str, ...], code: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rows = [Row("9 fake", f"row {i}", 1.0, "s", target="t", status=s) for i, s in enumerate(statuses)]
    monkeypatch.setattr(bench_run, "FIGURES", {"9": ("fake figure", _fake_figure(rows), True)})
    monkeypatch.setattr(bench_run, "machine_info", lambda: {})
    assert bench_run.main(["--quick", "--output", str(tmp_path / "out.json")]) == code


def test_median_interval() -> None:
    from benchmarks.common import median_interval

    # up to 5 values: the whole range; with many values one outlier does not set the interval
    assert median_interval([0.03, -0.01, 0.05]) == (0.03, -0.01, 0.05)
    many = [1.0] * 29 + [50.0]
    est, low, high = median_interval(many)
    assert (est, low, high) == (1.0, 1.0, 1.0)


def test_figure6_trade_agreement_counts_a_moved_exit_as_a_mismatch() -> None:
    import pandas as pd

    from benchmarks.fig6_peer import agree

    bt = pd.DataFrame(
        {"EntryBar": [10, 50], "EntryPrice": [100.0, 90.0], "ExitBar": [20, 60], "ExitPrice": [95.0, 99.0]}
    )
    ours = [(10, 100.0, 20, 95.0), (50, 90.0, 60, 99.0)]
    assert agree(ours, bt) == 2
    assert agree([(10, 100.0, 20, 95.0), (50, 90.0, 61, 99.0)], bt) == 1  # an exit one bar late
    assert agree([(10, 100.0, 20, 95.0), (50, 90.0 * (1 + 1e-6), 60, 99.0)], bt) == 1  # a price off by 1e-6


def test_figure5_exponent_row_verdicts() -> None:
    from benchmarks.fig5_scaling import exponent_row

    x = [100.0, 500.0, 2000.0]
    linear = exponent_row("t", x, [1.0, 5.0, 20.0], [0.98, 1.02], "")
    assert linear.value == pytest.approx(1.0)
    assert linear.status == PASS
    quadratic = exponent_row("t", x, [1.0, 25.0, 400.0], [1.9, 2.1], "")
    assert quadratic.status == MISS
    noisy = exponent_row("t", x, [1.0, 5.0, 20.0], [0.7, 1.4], "")
    assert noisy.status == INCONCLUSIVE
