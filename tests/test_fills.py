"""engine/simulation/fills.py: vectorbt's fill arithmetic in numba, on hand-computed rows.

Every expected number below is worked out in the test's docstring or comments from the fill rules
(target percent of the equity valued at the row's price, buys at ``price * (1 + slippage)``, sells
at ``price * (1 - slippage)``, a proportional fee on the traded value, sells before buys, a buy
cut to the cash left when it cannot be paid in full).
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.simulation.fills import AMOUNT, TARGET_PERCENT, _add, _is_close, _is_less, rows_nb
from engine.simulation.orders import orders_simulate

NAN = np.nan
REL = 1e-12


def _walk(
    size: list[list[float]],
    price: list[list[float]],
    *,
    cash: list[float],
    position: list[float] | None = None,
    fee: float = 0.0,
    slip: float = 0.0,
    size_type: int = TARGET_PERCENT,
    group_lens: list[int] | None = None,
    want: int = 0,
    min_size: float = 1e-8,
) -> dict[str, np.ndarray]:
    """Run ``rows_nb`` on the rows; returns the cash, positions, and the buys/holdings at ``want``."""
    s = np.array(size, dtype=np.float64)
    n_rows, n_cols = s.shape
    out = {
        "cash": np.array(cash, dtype=np.float64),
        "position": np.zeros(n_cols) if position is None else np.array(position, dtype=np.float64),
        "buy_q": np.zeros(n_cols),
        "buy_v": np.zeros(n_cols),
        "held_before": np.full(n_cols, -1.0),
    }
    rows_nb(
        s,
        np.array(price, dtype=np.float64),
        np.full(n_rows, size_type, dtype=np.int64),
        np.full(n_rows, fee),
        np.full(n_rows, slip),
        np.array([n_cols] if group_lens is None else group_lens, dtype=np.int64),
        min_size,
        out["cash"],
        out["position"],
        want,
        out["buy_q"],
        out["buy_v"],
        out["held_before"],
    )
    return out


def test_closeness_uses_vectorbts_tolerances() -> None:
    # relative 1e-9 of the larger magnitude, absolute 1e-12 near zero
    assert _is_close(1.0, 1.0 + 1e-10)
    assert not _is_close(1.0, 1.0 + 1e-8)
    assert _is_close(1000.0, 1000.0 + 5e-7)  # 5e-7 <= 1e-9 * 1000
    assert not _is_close(1000.0, 1000.0 + 2e-6)
    assert _is_close(0.0, 5e-13)
    assert not _is_close(0.0, 5e-12)
    assert not _is_close(np.nan, np.nan)
    assert not _is_close(np.inf, np.inf)
    assert _is_less(1.0, 1.1)
    assert not _is_less(1.0, 1.0 + 1e-10)  # close counts as equal
    assert not _is_less(1.1, 1.0)


def test_add_snaps_a_near_zero_sum_to_zero() -> None:
    assert _add(1.0, -0.25) == 0.75
    assert _add(100.0, -(100.0 - 1e-8)) == 0.0  # |1e-8| <= 1e-9 * 100: the remainder is dust
    assert _add(100.0, -(100.0 - 1e-6)) == pytest.approx(1e-6, rel=1e-6)
    assert _add(2.0, 3.0) == 5.0
    assert _add(1e-13, 1e-13) == 0.0  # same signs: the sum is compared with 0 (absolute 1e-12)


def test_target_percent_buys_with_fees_and_slippage() -> None:
    """Cash 1000, prices 10 and 20, targets 50 % and 25 %, fee 1 %, slippage 2 %.

    Equity 1000. Column 1 (order value 250 < 500) goes first: 0.25 * 1000 / 20 = 12.5 shares at
    20 * 1.02 = 20.4, value 255, fee 2.55, cash 1000 - 257.55 = 742.45. Column 0: 0.5 * 1000 / 10
    = 50 shares at 10.2, value 510, fee 5.1, cash 742.45 - 515.1 = 227.35.
    """
    out = _walk([[0.5, 0.25]], [[10.0, 20.0]], cash=[1000.0], fee=0.01, slip=0.02)
    np.testing.assert_allclose(out["position"], [50.0, 12.5], rtol=REL)
    np.testing.assert_allclose(out["cash"], [227.35], rtol=REL)
    np.testing.assert_allclose(out["buy_q"], [50.0, 12.5], rtol=REL)
    np.testing.assert_allclose(out["buy_v"], [510.0, 255.0], rtol=REL)  # fill price with slippage, no fee
    np.testing.assert_array_equal(out["held_before"], [0.0, 0.0])


def test_a_buy_the_cash_cannot_pay_is_cut_to_the_cash() -> None:
    """Cash 100, price 10, target 100 %, fee 1 %: 10 shares would cost 100 + 1 fee > 100.

    The buy spends all the cash: 100 / 1.01 = 99.00990099... of value, / 10 = 9.900990099... shares.
    """
    out = _walk([[1.0]], [[10.0]], cash=[100.0], fee=0.01)
    assert out["position"][0] == pytest.approx(100.0 / 1.01 / 10.0, rel=REL)
    assert out["position"][0] == pytest.approx(9.900990099009901, rel=REL)
    assert out["cash"][0] == 0.0


def test_sells_go_before_buys_and_fund_them() -> None:
    """10 shares of column 0 at 10, no cash; target column 0 to 0 and column 1 (price 5) to 100 %.

    Fee 0.1 %, slippage 1 %. Equity 100. The sell goes first (order value -100 < 100): 10 shares
    at 9.9 = 99, fee 0.099, cash 98.901. The buy wants 100 / 5 = 20 shares at 5.05 = 101 + 0.101
    fee > 98.901, so it is cut: 98.901 / 1.001 = 98.8021978... of value, / 5.05 = 19.564791644...
    shares, cash 0. (Buying first, with no cash, would buy nothing.)
    """
    out = _walk([[0.0, 1.0]], [[10.0, 5.0]], cash=[0.0], position=[10.0, 0.0], fee=0.001, slip=0.01)
    assert out["position"][0] == 0.0
    assert out["position"][1] == pytest.approx(98.901 / 1.001 / 5.05, rel=REL)
    assert out["position"][1] == pytest.approx(19.564791644, rel=1e-10)
    assert out["cash"][0] == 0.0
    np.testing.assert_allclose(out["buy_q"], [0.0, 98.901 / 1.001 / 5.05], rtol=REL)
    np.testing.assert_allclose(out["buy_v"], [0.0, 98.901 / 1.001], rtol=REL)
    np.testing.assert_array_equal(out["held_before"], [10.0, 0.0])


def test_a_top_up_row_reports_its_buys_and_the_holding_before() -> None:
    """Row 0 buys 50 % of 1000 at 10: 50 shares, cash 500. Row 1 holds no order (skipped).

    Row 2 (price 12, the ``want`` row) re-weights to 80 %: equity 500 + 50 * 12 = 1100, target
    0.8 * 1100 / 12 = 73.333... shares, a top-up of 23.333... shares for 280, cash 220.
    """
    out = _walk([[0.5], [NAN], [0.8]], [[10.0], [11.0], [12.0]], cash=[1000.0], want=2)
    assert out["held_before"][0] == 50.0
    assert out["buy_q"][0] == pytest.approx(70.0 / 3.0, rel=REL)
    assert out["buy_v"][0] == pytest.approx(280.0, rel=REL)
    assert out["position"][0] == pytest.approx(220.0 / 3.0, rel=REL)
    assert out["cash"][0] == pytest.approx(220.0, rel=REL)


def test_only_the_wanted_row_is_reported() -> None:
    out = _walk([[0.5], [0.8]], [[10.0], [12.0]], cash=[1000.0], want=0)
    assert out["buy_q"][0] == 50.0  # row 0's buy only, not row 1's top-up
    assert out["buy_v"][0] == 500.0
    assert out["held_before"][0] == 0.0


def test_amount_orders_buy_a_number_of_shares() -> None:
    """The carry row's size type: 3 shares at 10 (no fee) and 2 at 20 cost 70 of the 100."""
    out = _walk([[3.0, 2.0]], [[10.0, 20.0]], cash=[100.0], size_type=AMOUNT)
    np.testing.assert_array_equal(out["position"], [3.0, 2.0])
    assert out["cash"][0] == 30.0


def test_groups_have_their_own_cash() -> None:
    """Two books of one column: 100 % at 10 from cash 100 and 50 buys 10 and 5 shares."""
    out = _walk([[1.0, 1.0]], [[10.0, 10.0]], cash=[100.0, 50.0], group_lens=[1, 1])
    np.testing.assert_array_equal(out["position"], [10.0, 5.0])
    np.testing.assert_array_equal(out["cash"], [0.0, 0.0])


def test_an_order_below_min_size_is_skipped() -> None:
    """50 shares at 10 and cash 500 (equity 1000), min_size 1 share.

    Re-weighting to 50.5 % wants 50.5 shares, a top-up of 0.5 < 1: skipped. To 52.5 %: 2.5 shares
    for 25, cash 475.
    """
    out = _walk([[0.5], [0.505]], [[10.0], [10.0]], cash=[1000.0], want=1, min_size=1.0)
    assert out["position"][0] == 50.0
    assert out["buy_q"][0] == 0.0
    assert out["cash"][0] == 500.0
    out = _walk([[0.5], [0.525]], [[10.0], [10.0]], cash=[1000.0], want=1, min_size=1.0)
    assert out["buy_q"][0] == pytest.approx(2.5, rel=REL)
    assert out["cash"][0] == pytest.approx(475.0, rel=REL)


def test_the_walk_matches_the_vectorbt_call() -> None:
    """The sell-then-cut-buy row, plus a later re-weight, through vectorbt: the same cash and shares."""
    size = [[0.0, 1.0], [0.5, 0.4]]
    price = [[10.0, 5.0], [11.0, 6.0]]
    out = _walk(size, price, cash=[0.0], position=[10.0, 0.0], fee=0.001, slip=0.01, want=1)
    # vectorbt from the same state: a carry row (amount, no costs) first buys the 10 shares at 10
    close = np.array([[10.0, 5.0], *price])
    sizes = np.array([[10.0, NAN], *size])
    size_type = np.array([[AMOUNT], [TARGET_PERCENT], [TARGET_PERCENT]], dtype=np.int64)
    costs = np.array([[0.0], [0.001], [0.001]]), np.array([[0.0], [0.01], [0.01]])
    rec = orders_simulate(close, sizes, size_type, close, *costs, np.array([100.0]), np.array([2]), "rust")
    signed = np.where(rec["side"] == 1, -rec["size"], rec["size"])
    position = np.bincount(rec["col"], weights=signed, minlength=2)
    flow = np.where(rec["side"] == 1, 1.0, -1.0) * rec["size"] * rec["price"] - rec["fees"]
    np.testing.assert_allclose(out["position"], position, rtol=REL, atol=1e-12)
    assert out["cash"][0] == pytest.approx(100.0 + flow.sum(), rel=1e-9, abs=1e-9)
    last = (rec["idx"] == 2) & (rec["side"] == 0)
    np.testing.assert_allclose(out["buy_q"], np.bincount(rec["col"][last], weights=rec["size"][last], minlength=2))
