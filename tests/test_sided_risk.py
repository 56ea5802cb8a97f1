"""Risk weightings and limits on sided books (docs/LONG_SHORT.md, docs/PORTFOLIO.md): each leg weighted as a
long-only book of its own symbols, scaled to the leg's share; gross and net met in a real long-short run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from helpers import small_config
from test_portfolio_weights import _panel, _skfolio, _windows

from engine.config import PortfolioConfig
from engine.data.panel import Panel
from engine.strategy.covariance import returns_of
from engine.strategy.sided_risk import SidedAllocator
from engine.strategy.weights import Allocator
from engine.strategy.windows import DAY_MS, Window


@pytest.fixture
def perp(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import fake_perp

    fake_perp(monkeypatch, lambda symbol: 0.0)  # no funding: the weights alone


def _book(rng: np.random.Generator, panel: Panel, top: int, bottom: int) -> pl.DataFrame:
    """One window's legs as side_rows gives them: ranks 1..top long, the lowest ``bottom`` ranks short."""
    n = top + bottom + int(rng.integers(0, 4))
    names = list(rng.choice(panel.symbols, size=top + bottom, replace=False))
    ranks = list(range(1, top + 1)) + list(range(n, n - bottom, -1))
    return pl.DataFrame({"symbol": names, "rank": ranks, "weight_vol": rng.uniform(0.01, 0.1, top + bottom)})


def _walk(p: PortfolioConfig, panel: Panel, books: list[pl.DataFrame], top: int) -> tuple[SidedAllocator, list[Any]]:
    alloc = SidedAllocator(p, "1d", panel, panel, side=p.side, top_n=top)
    out = []
    for w, chosen in zip(_windows(panel.ts_ms.size, 40, 7), books, strict=False):
        out.append(alloc.window(w, chosen, chosen.get_column("symbol").to_list()))
    return alloc, out


def _leg_returns(panel: Panel, w: Window, names: list[str], bars: int = 30) -> np.ndarray:
    r = int(w.rank_ms // DAY_MS) + 1  # rows up to the ranking bar
    return returns_of(panel.close[r - bars - 1 : r][:, [panel.col(s) for s in names]])


# ---- (1) each leg's unit weights are the long-only weighting of the leg's symbols alone ----------


@pytest.mark.parametrize("weighting", ["hrp", "erc", "min_variance", "inverse_vol", "equal"])
def test_each_leg_is_the_long_only_weighting_of_its_own_symbols(weighting: str) -> None:
    rng = np.random.default_rng(41)
    panel = _panel(rng, 160, 20)
    top, bottom, gross, net = 5, 4, 0.9, 0.3
    p = PortfolioConfig(
        weighting=weighting, side="long_short", gross_exposure=gross, net_exposure=net, cov_window="30d"
    )
    books = [_book(rng, panel, top, bottom) for _ in range(12)]
    _, got = _walk(p, panel, books, top)
    legs_gross = ((gross + net) / 2, (gross - net) / 2)
    alone = PortfolioConfig(weighting=weighting, cov_window="30d")
    for w, chosen, book in zip(_windows(panel.ts_ms.size, 40, 7), books, got, strict=False):
        x = np.array(list(book.values()))
        assert abs(np.abs(x).sum() - gross) < 1e-9 and abs(x.sum() - net) < 1e-9
        for leg, share, sign in ((chosen.head(top), legs_gross[0], 1.0), (chosen.tail(bottom), legs_gross[1], -1.0)):
            names = leg.get_column("symbol").to_list()
            unit = np.array([book[s] for s in names]) / (sign * share)
            long_only = Allocator(alone, "1d", panel, panel).window(w, leg, names)
            np.testing.assert_allclose(unit, [long_only[s] for s in names], rtol=1e-12, atol=1e-15)
            if weighting == "hrp":
                np.testing.assert_allclose(unit, _skfolio(_leg_returns(panel, w, names), "hrp"), rtol=1e-9, atol=1e-12)


def test_a_short_only_book_is_the_hrp_of_its_leg() -> None:
    rng = np.random.default_rng(43)
    panel = _panel(rng, 160, 12)
    p = PortfolioConfig(weighting="hrp", side="short", gross_exposure=0.7)
    books = [_book(rng, panel, 0, 6) for _ in range(5)]
    _, got = _walk(p, panel, books, 0)
    for w, chosen, book in zip(_windows(panel.ts_ms.size, 40, 7), books, got, strict=False):
        names = chosen.get_column("symbol").to_list()
        unit = np.array([book[s] for s in names]) / -0.7
        np.testing.assert_allclose(unit, _skfolio(_leg_returns(panel, w, names), "hrp"), rtol=1e-9, atol=1e-12)


# ---- a real long-short run on perpetual data ------------------------------------------------------


def _hrp_targets_meet_gross_and_net(out: Path) -> None:
    """Every rebalance's targets in the run's audit: sum |w| = 0.8, sum w = 0.2 (1e-6), and HRP, not equal weights."""
    unequal = 0
    for line in (out / "audit.jsonl").read_text().splitlines():
        x = np.array(list(json.loads(line)["weights"].values()))
        if x.size:
            assert abs(np.abs(x).sum() - 0.8) < 1e-6 and abs(x.sum() - 0.2) < 1e-6
            unequal += np.ptp(x[x > 0]) > 1e-6
    assert unequal >= 5  # HRP, not equal weights


def _held_after_rebalances(out: Path, init_cash: float) -> list[tuple[dict[str, float], dict[str, float]]]:
    """(held weights right after the rebalance fills at a window's first open, that window's targets)."""
    orders = pl.read_parquet(out / "orders.parquet").sort("timestamp", maintain_order=True)
    audit = [json.loads(x) for x in (out / "audit.jsonl").read_text().splitlines()]
    cash, pos, got = init_cash, {}, []
    for _ts, group in orders.group_by("timestamp", maintain_order=True):
        prices = dict(zip(group["symbol"], group["price"], strict=True))
        targets = audit[int(group["window"][0])]["weights"]
        first_bar = set(targets) <= set(prices) and all(r == "rebalance" for r in group["reason"])
        before = cash + sum(q * prices.get(s, np.nan) for s, q in pos.items() if np.isfinite(prices.get(s, np.nan)))
        for r in group.iter_rows(named=True):
            q = r["size"] if r["side"] == "buy" else -r["size"]
            pos[r["symbol"]] = pos.get(r["symbol"], 0.0) + q
            cash -= q * r["price"]
        pos = {s: q for s, q in pos.items() if abs(q) > 1e-12}
        if first_bar and all(s in prices for s in pos):
            got.append(({s: q * prices[s] / before for s, q in pos.items()}, targets))
    return got


@pytest.mark.slow
def test_long_short_hrp_run_meets_gross_and_net_at_every_rebalance(
    perp: None, lakehouse_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cfg = small_config(
        lakehouse_dir,
        out,
        "+profile=crypto_rating_baseline",
        "costs=zero",
        "portfolio=hrp",
        "portfolio.side=long_short",
        "ranking.bottom_n=4",
        "portfolio.gross_exposure=0.8",
        "portfolio.net_exposure=0.2",
    )
    from engine.tasks import run_backtest

    run_backtest(cfg)
    _hrp_targets_meet_gross_and_net(out)
    checked = _held_after_rebalances(out, cfg.backtest.init_cash)
    for held, targets in checked:
        assert set(held) == set(targets)
        for s, x in targets.items():
            assert held[s] == pytest.approx(x, abs=1e-6)
        h = np.array(list(held.values()))
        assert abs(np.abs(h).sum() - 0.8) < 1e-6 and abs(h.sum() - 0.2) < 1e-6
    assert len(checked) >= 5


# ---- (2) max_weight caps |w| per symbol, within each leg -----------------------------------------


@pytest.mark.parametrize("weighting", ["hrp", "erc", "inverse_vol"])
def test_max_weight_caps_every_abs_weight_and_keeps_the_legs(weighting: str) -> None:
    rng = np.random.default_rng(47)
    bound = 0
    for trial in range(5):
        panel = _panel(rng, 160, 20)
        top, bottom = int(rng.integers(2, 7)), int(rng.integers(2, 7))
        gross = float(rng.uniform(0.5, 2.0))
        net = float(rng.uniform(-1, 1)) * gross
        cap = float(rng.uniform(0.05, 0.4))
        p = PortfolioConfig(
            weighting=weighting, side="long_short", gross_exposure=gross, net_exposure=net, max_weight=cap, leverage=2
        )
        books = [_book(rng, panel, top, bottom) for _ in range(10)]
        _, got = _walk(p, panel, books, top)
        for chosen, book in zip(books, got, strict=False):
            assert max(abs(x) for x in book.values()) <= cap + 1e-9, trial
            for leg, share, sign in (
                (chosen.head(top), (gross + net) / 2, 1),
                (chosen.tail(bottom), (gross - net) / 2, -1),
            ):
                x = np.array([book[s] for s in leg.get_column("symbol").to_list()])
                assert (sign * x >= 0).all()
                # the leg keeps its share unless every symbol of it is at the cap (the rest: cash)
                assert abs(sign * x.sum() - min(share, leg.height * cap)) < 1e-9, trial
            bound += any(abs(abs(x) - cap) < 1e-12 for x in book.values())
    assert bound >= 10  # the cap binds (or the test proves nothing)


# ---- (3) max_turnover on signed weights ------------------------------------------------------------


def _drifted(panel: Panel, prev_w: Window, w: Window, prev: dict[str, float]) -> dict[str, float]:
    """The signed held book, measured independently: each position's value from its open to this rank close."""
    r0, r1 = int(prev_w.start_ms // DAY_MS), int(w.rank_ms // DAY_MS)
    vals = {s: x * panel.close[r1, panel.col(s)] / panel.open[r0, panel.col(s)] for s, x in prev.items()}
    total = sum(vals.values()) + 1 - sum(prev.values())  # cash holds the short sales' proceeds
    return {s: v / total for s, v in vals.items()}


@pytest.mark.parametrize("weighting", ["equal", "hrp"])
def test_max_turnover_and_max_weight_hold_on_signed_books(weighting: str) -> None:
    rng = np.random.default_rng(53)
    for trial in range(6):
        panel = _panel(rng, 220, 16)
        top, bottom = int(rng.integers(2, 6)), int(rng.integers(2, 6))
        gross = float(rng.uniform(0.5, 2.0))
        net = float(rng.uniform(-1, 1)) * gross
        cap = float(rng.uniform(0.15, 0.6))
        limit = float(rng.uniform(0.05, 1.5))
        p = PortfolioConfig(
            weighting=weighting,
            side="long_short",
            gross_exposure=gross,
            net_exposure=net,
            max_weight=cap,
            max_turnover=limit,
            leverage=2,
        )
        books = [_book(rng, panel, top, bottom) for _ in range(25)]
        alloc, got = _walk(p, panel, books, top)
        windows = _windows(panel.ts_ms.size, 40, 7)
        prev: dict[str, float] = {}
        for k, book in enumerate(got):
            held = _drifted(panel, windows[k - 1], windows[k], prev) if k else {}
            assert held == pytest.approx(alloc.records[k].held, abs=1e-12)
            names = set(book) | set(held)
            turnover = sum(abs(book.get(s, 0.0) - held.get(s, 0.0)) for s in names)
            trim = sum(max(abs(h) - cap, 0.0) for h in held.values())
            assert max(abs(x) for x in book.values()) <= cap + 1e-9
            assert turnover <= max(limit, trim) + 1e-9, (trial, k)
            assert turnover == pytest.approx(alloc.records[k].turnover, abs=1e-12)
            prev = book
        assert any(r.turnover == pytest.approx(limit, abs=1e-9) for r in alloc.records)
        assert any(x < 0 for b in got for x in b.values()) and any(r.kept for r in alloc.records)


# ---- (4) target_vol scales the whole book's gross, capped by max_gross (at most the leverage) ----


def test_target_vol_scales_the_signed_book_by_hand() -> None:
    from engine.strategy.covariance import ledoit_wolf
    from engine.strategy.weights import YEAR_MS

    rng = np.random.default_rng(59)
    panel = _panel(rng, 120, 8)
    w = _windows(120, 60, 7)[0]
    chosen = pl.DataFrame({"symbol": panel.symbols[:6], "rank": [1, 2, 3, 9, 8, 7], "weight_vol": [0.02] * 6})
    names = chosen.get_column("symbol").to_list()
    x = _leg_returns(panel, w, names)
    cov = ledoit_wolf(x)[0]
    for net in (0.0, 0.4, -0.6):
        b = np.array([(1 + net) / 2 / 3] * 3 + [-(1 - net) / 2 / 3] * 3)  # the book at a gross of 1
        vol = float(np.sqrt(b @ cov @ b * YEAR_MS / DAY_MS))
        for target, cap in [(vol / 2, 1.0), (vol * 3, 1.0), (vol * 3, 2.5), (vol * 10, 2.5)]:
            p = PortfolioConfig(
                weighting="equal", side="long_short", net_exposure=net, target_vol=target, max_gross=cap, leverage=3
            )
            book = SidedAllocator(p, "1d", panel, panel, side="long_short", top_n=3).window(w, chosen, names)
            gross = min(target / vol, cap)
            got = np.array([book[s] for s in names])
            np.testing.assert_allclose(got, gross * b, rtol=1e-12)
            assert np.abs(got).sum() == pytest.approx(gross, rel=1e-12)
            assert got.sum() == pytest.approx(net * gross, abs=1e-12)
            assert float(np.sqrt(got @ cov @ got * 365)) == pytest.approx(min(target, cap * vol), rel=1e-12)


@pytest.mark.parametrize(
    ("overrides", "ok"),
    [
        (["portfolio=hrp", "portfolio.max_weight=0.2", "portfolio.max_turnover=0.5"], True),
        (["portfolio=erc", "portfolio.target_vol=0.4", "portfolio.max_gross=2", "portfolio.leverage=2"], True),
        (["portfolio.target_vol=0.4", "portfolio.max_gross=2"], False),  # above the leverage 1
        (["portfolio.max_gross=0.5"], False),  # no target_vol: the gross is gross_exposure
    ],
)
def test_sided_settings_accepted_or_refused(perp: None, overrides: list[str], ok: bool) -> None:
    from helpers import compose_raw

    from engine.config import config_validate
    from engine.core.errors import ConfigError

    if ok:
        config_validate(compose_raw("portfolio.side=long_short", *overrides))
    else:
        with pytest.raises(ConfigError):
            config_validate(compose_raw("portfolio.side=long_short", *overrides))


def test_the_leverage_wins_over_the_turnover_limit(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an in-process Hydra run earlier in this worker may have disabled or detached the module's logger
    import logging

    import engine.strategy.sided_risk as sided_risk

    for name in ("engine", sided_risk.log.name):
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    caplog.set_level(logging.WARNING, logger=sided_risk.log.name)
    # both legs double between the windows: the drifted held book {A: 1, B: -1} has a gross of 2 > leverage 1
    n = 80
    close = np.ones((n, 2)) * 10.0
    close[44:] *= 2.0  # after the first window's open (row 41), before the second ranking bar (row 47)
    ts = np.arange(n, dtype=np.int64) * DAY_MS
    panel = Panel(ts, ["A/USDT", "B/USDT"], close.copy(), close, close, close, np.ones((n, 2)))
    p = PortfolioConfig(weighting="equal", side="long_short", max_turnover=0.1)
    chosen = pl.DataFrame({"symbol": ["A/USDT", "B/USDT"], "rank": [1, 2], "weight_vol": [0.02, 0.02]})
    alloc = SidedAllocator(p, "1d", panel, None, side="long_short", top_n=1)
    first, second = _windows(n, 40, 7)[:2]
    p0 = PortfolioConfig(weighting="equal", side="long_short")
    alloc.p = p0  # the first window from cash without the limit: the book is the targets
    assert alloc.window(first, chosen, ["A/USDT", "B/USDT"]) == {"A/USDT": 0.5, "B/USDT": -0.5}
    alloc.p = p
    book = alloc.window(second, chosen, ["A/USDT", "B/USDT"])
    assert alloc.records[-1].held == pytest.approx({"A/USDT": 1.0, "B/USDT": -1.0}, abs=1e-12)
    assert sum(abs(x) for x in book.values()) == pytest.approx(1.0, abs=1e-9)
    assert book == pytest.approx({"A/USDT": 0.5, "B/USDT": -0.5}, abs=1e-9)
    assert "above portfolio.leverage=1; the limit gave way" in (alloc.records[-1].fallback or "")
    assert "the limit gave way" in caplog.text


@pytest.mark.slow
def test_a_leveraged_long_short_hrp_run_with_target_vol_and_limits(
    perp: None, lakehouse_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cfg = small_config(
        lakehouse_dir,
        out,
        "+profile=crypto_rating_baseline",
        "portfolio=hrp",
        "portfolio.side=long_short",
        "ranking.bottom_n=4",
        "portfolio.leverage=2",
        "portfolio.target_vol=0.6",
        "portfolio.max_gross=1.8",
        "portfolio.max_weight=0.25",
        "portfolio.max_turnover=0.8",
    )
    from engine.tasks import run_backtest

    run_backtest(cfg)
    audit = [json.loads(x) for x in (out / "audit.jsonl").read_text().splitlines()]
    grosses = []
    for line in audit:
        x, book = np.array(list(line["weights"].values())), line["portfolio"]
        if x.size:
            assert np.abs(x).max() <= 0.25 + 1e-9 and np.abs(x).sum() <= 2.0 + 1e-9  # the cap; the leverage
            assert book["gross"] <= 1.8 + 1e-12 and (x < 0).any()
            assert book["turnover"] <= 0.8 + 1e-9 or "gave way" in (book["fallback"] or "")
            grosses.append(book["gross"])
    g = np.array(grosses)
    assert (g == 1.8).any() and (g < 1.8).any() and (g > 1.0).any()  # max_gross binds, the target too, leverage used
    trades = pl.read_parquet(out / "trades.parquet")
    assert set(trades["side"]) == {"long", "short"}


@pytest.mark.slow
def test_long_short_hrp_on_generated_perpetuals(tmp_path: Path) -> None:
    """data.market=perp from the generator, funding booked: every rebalance's targets meet gross and net to 1e-6,
    and the book held right after the rebalance is the targets (as fractions of its gross: funding moves the cash)."""
    out = tmp_path / "run"
    cfg = small_config(
        tmp_path / "lake",
        out,
        "+profile=crypto_rating_baseline",
        "costs=zero",
        "data.market=perp",
        "portfolio=hrp",
        "portfolio.side=long_short",
        "ranking.bottom_n=4",
        "portfolio.gross_exposure=0.8",
        "portfolio.net_exposure=0.2",
    )
    from engine.tasks import run_backtest

    run_backtest(cfg)
    _hrp_targets_meet_gross_and_net(out)
    checked = _held_after_rebalances(out, cfg.backtest.init_cash)
    for held, targets in checked:
        assert set(held) == set(targets)
        h = np.array([held[s] for s in targets])
        np.testing.assert_allclose(h / np.abs(h).sum() * 0.8, list(targets.values()), atol=1e-6)
    assert len(checked) >= 5
    assert json.loads((out / "metrics.json").read_text())["funding_paid"] != 0


def test_a_long_short_hrp_book_in_a_grid_a_wfo_and_a_capacity_curve(tmp_path: Path) -> None:
    """Issue 25 item 4 with issue 24's books: the sided HRP weights are the plan's, whatever the task.

    Every grid combination and every wfo window trades the plain run's targets (the audit's weights,
    bit for bit), the grid's combination with the run's own rules gives the run's total return, and the
    capacity pass's run book (the run's capital) is the plain run in a market with depth.
    """
    from engine.tasks import grid_run, run_backtest, wfo_run
    from engine.tasks.capacity import capacity_run

    lake = tmp_path / "lake"
    book = [
        "+profile=crypto_rating",
        "data.market=perp",
        "portfolio=hrp",
        "portfolio.side=long_short",
        "ranking.bottom_n=4",
        "portfolio.max_weight=0.3",
    ]

    def weights(out: Path) -> list[dict[str, float]]:
        return [json.loads(x)["weights"] for x in (out / "audit.jsonl").read_text().splitlines()]

    plain = run_backtest(small_config(lake, tmp_path / "p", *book, "exit_rules.sl_stop=0.05"))
    targets = weights(tmp_path / "p")
    assert any(w and min(w.values()) < 0 for w in targets)  # a short leg
    g = grid_run(small_config(lake, tmp_path / "g", *book, "task=grid", "grid.sl_stop=[0.03,0.05]"))
    combos = g.metrics["combinations"]
    assert len(combos) == 2
    assert combos[1]["total_return"] == plain.metrics["total_return"]  # sl 5 %: the plain run's rules
    w = wfo_run(
        small_config(lake, tmp_path / "w", *book, "task=wfo", "grid.sl_stop=[0.03,0.05]", "wfo.train_windows=4")
    )
    assert np.isfinite(w.metrics["total_return"])
    by_start = {
        json.loads(x)["start"]: json.loads(x)["weights"]
        for x in (tmp_path / "p" / "audit.jsonl").read_text().splitlines()
    }
    oos = [json.loads(x) for x in (tmp_path / "w" / "audit.jsonl").read_text().splitlines()]
    assert oos and all(rec["weights"] == by_start[rec["start"]] for rec in oos)  # wfo numbers its windows from 0
    market = ["exit_rules.sl_stop=0.05", "execution.max_participation=0.01", "execution.impact=sqrt"]
    deep = run_backtest(small_config(lake, tmp_path / "m", *book, *market))
    assert weights(tmp_path / "m") == targets
    cap = capacity_run(small_config(lake, tmp_path / "c", *book, *market, "execution.capacity=[1e5,1e7]"))
    assert cap.metrics["total_return"] == deep.metrics["total_return"]
    assert pl.read_parquet(cap.output_dir / "capacity.parquet").height == 2
