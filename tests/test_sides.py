"""Long-short books: the legs' weights meet gross and net to 1e-6, spot refuses shorts, short trades are booked.

Perpetual data (``data.market=perp``) come with the funding data of another change; until then the
end-to-end runs here read the built-in spot bars as if they were a perpetual's (``market_of``
patched): what is checked is the book, not the market's data.
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import numpy as np
import polars as pl
import pytest
from helpers import compose_raw, small_config
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.config.book as book_mod
from engine.config import config_validate
from engine.core.errors import ConfigError
from engine.run.trades import trades_frame, trades_from_orders
from engine.strategy.sides import side_rows, side_weights


@pytest.fixture
def perp(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import fake_perp

    fake_perp(monkeypatch, lambda symbol: 0.0)  # no funding: the weights alone


def _ranks(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "rank_ms": np.zeros(n, dtype=np.int64),
            "symbol": [f"S{i}/USDT" for i in range(n)],
            "rank": np.arange(1, n + 1, dtype=np.int64),
            "score": np.sort(rng.normal(size=n))[::-1],
            "weight_vol": rng.uniform(0.01, 0.1, n),
        }
    )


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(4, 40),
    top=st.integers(1, 10),
    bottom=st.integers(1, 10),
    gross=st.floats(0.1, 1.0),
    net_frac=st.floats(-1.0, 1.0),
    weighting=st.sampled_from(["equal", "inverse_vol"]),
    seed=st.integers(0, 1000),
)
def test_long_short_weights_meet_gross_and_net(
    n: int, top: int, bottom: int, gross: float, net_frac: float, weighting: str, seed: int
) -> None:
    if top + bottom > n:
        return
    with mock.patch.object(book_mod, "market_of", return_value="perp"):
        cfg = config_validate(
            compose_raw(
                "portfolio.side=long_short",
                f"portfolio={weighting}",
                f"ranking.top_n={top}",
                f"ranking.bottom_n={bottom}",
                f"portfolio.gross_exposure={gross}",
                f"portfolio.net_exposure={net_frac * gross}",
            )
        )
    rows = side_rows(_ranks(n, seed), cfg)
    w = side_weights(rows, cfg, 0)
    x = np.array(list(w.values()))
    assert abs(np.abs(x).sum() - gross) < 1e-6
    assert abs(x.sum() - net_frac * gross) < 1e-6
    longs = sorted(s for s, v in w.items() if v > 0)
    shorts = sorted(s for s, v in w.items() if v < 0)
    assert longs == sorted(f"S{i}/USDT" for i in range(top)) or (net_frac * gross + gross) / 2 < 1e-12
    assert shorts == sorted(f"S{i}/USDT" for i in range(n - bottom, n)) or (gross - net_frac * gross) / 2 < 1e-12


def test_inverse_vol_within_each_leg() -> None:
    with mock.patch.object(book_mod, "market_of", return_value="perp"):
        cfg = config_validate(compose_raw("portfolio.side=long_short", "portfolio=inverse_vol", "ranking.top_n=2"))
    ranks = _ranks(6, 0).with_columns(pl.Series("weight_vol", [0.1, 0.2, 1.0, 1.0, 0.05, 0.05]))
    w = side_weights(side_rows(ranks, cfg), cfg, 0)
    # long leg 0.5: 1/0.1 : 1/0.2 = 2 : 1; short leg 0.5 split evenly between the two equal vols
    assert w == pytest.approx({"S0/USDT": 1 / 3, "S1/USDT": 1 / 6, "S4/USDT": -0.25, "S5/USDT": -0.25}, abs=1e-12)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["portfolio.side=long_short"], "portfolio.side=long_short sells short, which spot data"),
        (["portfolio.side=short"], "portfolio.side=short sells short"),
        (["portfolio.leverage=2"], "portfolio.leverage=2 needs a margin market"),
    ],
)
def test_spot_refuses_shorts_and_leverage(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        config_validate(compose_raw(*overrides))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["portfolio.gross_exposure=2"], "is above portfolio.leverage=1"),
        (["portfolio.side=long_short", "portfolio.net_exposure=1.5"], "cannot be met by a long_short book"),
        (["portfolio.side=short", "portfolio.net_exposure=0"], r"use -1 \(all short\)"),
        (["portfolio.side=long_short", "portfolio.max_gross=0.5"], "has none: its gross is portfolio.gross_exposure"),
        (["portfolio.side=long_short", "portfolio.target_vol=0.5", "portfolio.max_gross=2"], "is above portfolio.lev"),
    ],
)
def test_books_that_cannot_hold_are_refused(perp: None, overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        config_validate(compose_raw(*overrides))


def test_spot_refusal_is_one_line_exit_2(tmp_path: Path) -> None:
    from helpers import engine_cli

    proc = engine_cli(["portfolio.side=long_short", "quiet=true"], tmp_path)
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.strip().splitlines() if x]
    assert len(lines) == 1 and "data.market=perp" in lines[0]


def test_short_trades_and_a_flip_by_hand() -> None:
    # sell 2 @10 (short), buy 3 @8 (covers 2, opens 1 long), buy 1 @9, sell 1 @12 (1 left, marked at 11)
    orders = {
        "window": np.array([0, 0, 1, 1]),
        "timestamp": np.array([1, 2, 3, 4]),
        "symbol": np.array(["A/USDT"] * 4, dtype=object),
        "side": np.array([1, 0, 0, 1]),
        "size": np.array([2.0, 3.0, 1.0, 1.0]),
        "price": np.array([10.0, 8.0, 9.0, 12.0]),
        "fees": np.array([0.2, 0.3, 0.1, 0.1]),
        "reason": np.array([0, 0, 0, 2]),
        "ambiguous": np.zeros(4, dtype=bool),
    }
    t = trades_frame(trades_from_orders(orders, {"A/USDT": 11.0}, 5, 1)).to_dicts()
    short, long_ = t
    assert short["side"] == "short" and short["status"] == "closed"
    assert (short["entry_price"], short["exit_price"], short["size"]) == (10.0, 8.0, 2.0)
    assert short["fees"] == pytest.approx(0.2 + 0.3 * 2 / 3)
    assert short["pnl"] == pytest.approx(20 - 16 - 0.4)
    assert short["return"] == pytest.approx((20 - 16 - 0.4) / 20)
    assert long_["side"] == "long" and long_["status"] == "open"
    assert (long_["entry_price"], long_["size"]) == (8.5, 2.0)
    assert long_["exit_price"] == pytest.approx((12 + 11) / 2)
    assert long_["pnl"] == pytest.approx(12 + 11 - 17 - (0.1 + 0.1 + 0.1))


@pytest.mark.slow
def test_long_short_run_holds_its_targets_at_every_rebalance(perp: None, lakehouse_dir: Path, tmp_path: Path) -> None:
    """costs=zero: right after each rebalance at a window's open the held book is the targets, to 1e-6."""
    out = tmp_path / "run"
    cfg = small_config(
        lakehouse_dir,
        out,
        "+profile=crypto_rating_baseline",
        "costs=zero",
        "portfolio.side=long_short",
        "ranking.bottom_n=4",
        "portfolio.gross_exposure=0.8",
        "portfolio.net_exposure=0.2",
    )
    from engine.tasks import run_backtest

    run_backtest(cfg)
    orders = pl.read_parquet(out / "orders.parquet").sort("timestamp", maintain_order=True)
    audit = [json.loads(x) for x in (out / "audit.jsonl").read_text().splitlines()]
    cash = cfg.backtest.init_cash
    pos: dict[str, float] = {}
    checked = 0
    for _ts, group in orders.group_by("timestamp", maintain_order=True):
        # the fills of one bar, all at its open (zero costs: the price is the open)
        prices = dict(zip(group["symbol"], group["price"], strict=True))
        window = int(group["window"][0])
        targets = audit[window]["weights"]
        value_marks = {**{s: prices.get(s, np.nan) for s in pos}}
        first_bar = set(targets) <= set(prices) and all(r == "rebalance" for r in group["reason"])
        before = cash + sum(q * value_marks[s] for s, q in pos.items() if np.isfinite(value_marks[s]))
        for r in group.iter_rows(named=True):
            q = r["size"] if r["side"] == "buy" else -r["size"]
            pos[r["symbol"]] = pos.get(r["symbol"], 0.0) + q
            cash -= q * r["price"]
        pos = {s: q for s, q in pos.items() if abs(q) > 1e-12}
        if first_bar and all(s in prices for s in pos):
            w = {s: q * prices[s] / before for s, q in pos.items()}
            assert set(w) == set(targets)
            for s, x in targets.items():
                assert w[s] == pytest.approx(x, abs=1e-6)
            x = np.array(list(w.values()))
            assert abs(np.abs(x).sum() - 0.8) < 1e-6 and abs(x.sum() - 0.2) < 1e-6
            checked += 1
    assert checked >= 5
    trades = pl.read_parquet(out / "trades.parquet")
    assert set(trades["side"]) == {"long", "short"}
    winners = pl.read_parquet(out / "winners.parquet")
    chosen = winners.filter(pl.col("selected"))
    assert (chosen["weight"] > 0).any() and (chosen["weight"] < 0).any()
    assert chosen.group_by("window").len()["len"].max() == 5 + 4  # top_n long, bottom_n short
