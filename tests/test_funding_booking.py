"""Funding booked on perpetual positions: side x rate x mark x size at each funding time, by hand.

freqtrade's formula (``freqtrade/leverage/funding_fees.py``: ``nominal_value = mark_price *
contract_size``, ``adjustment = nominal_value * rate``) is what each payment must equal, with the
sign of the position: a long pays a positive rate, a short receives it.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.simulation import PriceBlock
from engine.simulation.books import GridBook
from engine.simulation.market import ExecutionRules, Frictions, market_simulate

pytestmark = pytest.mark.slow  # numba compiles the market kernel on first use


def freqtrade_funding_fee(mark_price: float, contract_size: float, rate: float) -> float:
    """freqtrade's single funding fee: the nominal value times the rate (paid by a long when > 0)."""
    return mark_price * contract_size * rate


def _block(n: int, k: int) -> PriceBlock:
    o = np.tile(np.linspace(100, 100 + n - 1, n)[:, None], (1, k))
    idx = (np.arange(n) * 8 * 3600 * 10**9).astype("datetime64[ns]")  # 8h bars: one funding time per bar open
    return PriceBlock(o.copy(), o + 1, o - 1, o.copy(), idx, tuple(f"S{j}" for j in range(k)))


def test_a_long_pays_and_a_short_receives_each_funding_by_hand() -> None:
    n = 4
    prices = _block(n, 2)
    w = np.full((n, 2), np.nan)
    w[0] = [0.5, -0.5]  # 1000 cash: 5 shares long of S0 at 100, 5 short of S1 at 100
    rate = np.array([[0.0, 0.0], [0.001, 0.001], [-0.002, -0.002], [0.0005, 0.0005]])
    mark = np.array([[100.0, 100.0], [101.5, 99.0], [102.0, 102.5], [103.0, 103.0]])
    fr = Frictions.none(n, 2)
    fr = Frictions(
        fr.quote_volume, fr.sigma, fr.half_spread, fr.amount_step, fr.min_notional, fr.price_tick, rate * mark
    )
    res = market_simulate(
        prices, [GridBook(None, w, 1000.0, None, None)], fr, ExecutionRules(), fees=0.0, slippage=0.0,
        carry_price=None, ambiguity="pessimistic", held_reweights="all", margin=(1.0, 0.005),
    )[0]  # fmt: skip
    assert res.shares_end.tolist() == pytest.approx([5.0, -5.0])
    assert res.funding is not None
    want_long = [freqtrade_funding_fee(mark[i, 0], 5.0, rate[i, 0]) for i in range(n)]
    want_short = [-freqtrade_funding_fee(mark[i, 1], 5.0, rate[i, 1]) for i in range(n)]
    assert res.funding[:, 0] == pytest.approx(want_long, abs=1e-12)
    assert res.funding[:, 1] == pytest.approx(want_short, abs=1e-12)
    # by hand: long 5 x (101.5 x 0.001 - 102 x 0.002 + 103 x 0.0005), short -5 x (99 x 0.001 - 102.5 x 0.002 + 103 x 0.0005)
    paid = 5 * (0.1015 - 0.204 + 0.0515) + -5 * (0.099 - 0.205 + 0.0515)
    assert res.costs is not None and res.costs["funding"] == pytest.approx(paid, abs=1e-12)
    # the equity carries it: positions marked at the close, cash less the funding paid
    close = prices.close[-1]
    assert res.equity[-1] == pytest.approx(1000 + 5 * (close[0] - 100) - 5 * (close[1] - 100) - paid, abs=1e-9)


def test_no_funding_array_books_nothing() -> None:
    n = 3
    prices = _block(n, 1)
    w = np.full((n, 1), np.nan)
    w[0] = -1.0
    res = market_simulate(
        prices, [GridBook(None, w, 1000.0, None, None)], Frictions.none(n, 1), ExecutionRules(), fees=0.0,
        slippage=0.0, carry_price=None, ambiguity="pessimistic", held_reweights="all",
    )[0]  # fmt: skip
    assert res.funding is None and res.costs is not None and "funding" not in res.costs


FUNDING_RATE = 0.0003


def _rate(symbol: str) -> float:
    """The fixture's rate of a symbol: +3 bp or -3 bp per 8 hours (longs pay the former, receive the latter)."""
    return FUNDING_RATE * (1 if sum(map(ord, symbol)) % 2 else -1)


@pytest.fixture
def perp_funding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Perpetual data as the funding change will give them: 8-hourly rates, no mark (the bar's open at/after)."""
    from helpers import fake_perp

    fake_perp(monkeypatch, _rate)


def test_a_perp_run_books_funding_in_equity_trades_and_metrics(perp_funding: None, lakehouse_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every payment recomputed from orders.parquet and the lakehouse's bars: position x rate x open at/after."""
    import json

    import polars as pl
    from helpers import small_config

    from engine.tasks import run_backtest

    out = tmp_path / "run"
    cfg = small_config(
        lakehouse_dir,
        out,
        "+profile=crypto_rating_baseline",
        "costs=zero",
        "portfolio.side=long_short",
        "ranking.bottom_n=3",
    )
    run_backtest(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    trades = pl.read_parquet(out / "trades.parquet")
    orders = pl.read_parquet(out / "orders.parquet")
    assert metrics["funding_paid"] == pytest.approx(trades["funding"].sum(), abs=1e-9)
    # independently: the daily bars of the lakehouse, the positions from the fills (all at the opens)
    frames = []
    for path in sorted(lakehouse_dir.glob("*/bars/interval=1d/symbol=*/data.parquet")):
        sym = path.parent.name.removeprefix("symbol=").replace("_", "/")
        frames.append(pl.read_parquet(path).with_columns(pl.lit(sym).alias("symbol")))
    bars = pl.concat(frames).with_columns(pl.col("timestamp").dt.epoch("ms").alias("ms"))
    day = 86_400_000
    fill_ms = orders.with_columns(
        (pl.col("timestamp").dt.epoch("ms") + pl.when(pl.col("reason") == "delisted").then(day).otherwise(0)).alias(
            "at"
        ),
        pl.when(pl.col("side") == "buy").then(pl.col("size")).otherwise(-pl.col("size")).alias("q"),
    )
    symbols = sorted(set(orders["symbol"]))
    total = 0.0
    end = int(pl.read_parquet(out / "equity.parquet")["timestamp"].dt.epoch("ms").max())  # the last bar's close
    first = int(fill_ms["at"].min())
    per: dict[str, float] = {}
    for s in symbols:
        per[s] = 0.0
        f = fill_ms.filter(pl.col("symbol") == s).sort("at", maintain_order=True)
        b = bars.filter(pl.col("symbol") == s).sort("ms")
        at, q = f["at"].to_numpy(), np.cumsum(f["q"].to_numpy())
        bms, bopen = b["ms"].to_numpy(), b["open"].to_numpy()
        rate = _rate(s)
        for t in range(first, end, 28_800_000):
            bar_open = t - t % day  # the day's bar; the position after its open row
            k = np.searchsorted(at, bar_open, side="right") - 1
            held = q[k] if k >= 0 else 0.0
            if abs(held) < 1e-9:
                continue
            m = np.searchsorted(bms, t, side="left")
            # the open at or after the funding time; after a symbol's last bar (held until its delisting
            # sale at the next row), its last close
            mark = bopen[m] if m < bms.size else b["close"].to_numpy()[-1]
            total += held * rate * mark
            per[s] += held * rate * mark
    eng = dict(trades.group_by("symbol").agg(pl.col("funding").sum()).iter_rows())
    for s in per:  # trades.parquet's funding, summed per symbol
        assert eng.get(s, 0.0) == pytest.approx(per[s], rel=1e-9, abs=1e-9)
    assert metrics["funding_paid"] == pytest.approx(total, rel=1e-9)
    assert abs(total) > 1.0  # the run held positions over many funding times


def test_a_perp_run_without_funding_data_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import compose_raw, fake_perp

    from engine.config import config_validate
    from engine.core.errors import DataError
    from engine.run.funding import funding_load

    fake_perp(monkeypatch, _rate)
    import sys

    import polars as pl

    monkeypatch.setattr(sys.modules["engine.data.funding"], "funding_read", lambda *a, **k: pl.DataFrame())
    cfg = config_validate(compose_raw("portfolio.side=long_short"))
    with pytest.raises(DataError, match=r"^data.market=perp but no funding rate of the winners \(BTC/USDT") as exc:
        funding_load(cfg, ["BTC/USDT"], 0, 1)
    assert "\n" not in str(exc.value)
