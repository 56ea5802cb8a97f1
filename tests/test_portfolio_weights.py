"""Portfolio construction (docs/PORTFOLIO.md): risk weightings against skfolio and by hand, point in
time, the weight and turnover limits over random books, the volatility target, degenerate covariances,
and end-to-end runs with exit rules, the grid and wfo."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import small_config

from engine.config import PortfolioConfig
from engine.core.errors import ConfigError
from engine.data.panel import Panel
from engine.strategy.covariance import hrp_weights, ledoit_wolf, returns_of, skfolio_weights
from engine.strategy.polish import erc_polish, min_variance_polish
from engine.strategy.weights import YEAR_MS, Allocator, cap_weights, limits_apply
from engine.strategy.windows import DAY_MS, Window

# skfolio at its tightest: CLARABEL tolerances 1e-12 and the objective scaled by 100 (daily variances are ~1e-4)
TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}


def _returns(rng: np.random.Generator, n: int, p: int, mix: float = 0.3) -> np.ndarray:
    """Correlated returns: a common factor plus mixed idiosyncratic noise of different scales."""
    scale = rng.uniform(0.01, 0.05, p)
    a = np.eye(p) + rng.normal(0, mix, (p, p))
    return rng.normal(0, 1, (n, p)) @ a * scale + rng.normal(0, 0.01, (n, 1))


def _skfolio(x: np.ndarray, kind: str, **kw: object) -> np.ndarray:
    from skfolio.moments import LedoitWolf
    from skfolio.optimization import HierarchicalRiskParity, MeanRisk, ObjectiveFunction, RiskBudgeting
    from skfolio.prior import EmpiricalPrior

    prior = EmpiricalPrior(covariance_estimator=LedoitWolf())
    model = {
        "hrp": lambda: HierarchicalRiskParity(prior_estimator=prior),
        "erc": lambda: RiskBudgeting(prior_estimator=prior, **kw),
        "min_variance": lambda: MeanRisk(
            objective_function=ObjectiveFunction.MINIMIZE_RISK, prior_estimator=prior, **kw
        ),
    }[kind]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "solution may be inaccurate" at the tight tolerances
        return np.asarray(model.fit(x).weights_)


# ---- the estimators against skfolio and against independent paths ---------------------------------


def test_ledoit_wolf_equals_skfolio_and_sklearn() -> None:
    from skfolio.moments import LedoitWolf
    from sklearn.covariance import ledoit_wolf as sk_lw

    rng = np.random.default_rng(3)
    for n, p in [(30, 10), (30, 50), (8, 3), (200, 4)]:
        x = _returns(rng, n, p)
        cov, shrink = ledoit_wolf(x)
        ref, ref_shrink = sk_lw(x)
        np.testing.assert_allclose(cov, LedoitWolf().fit(x).covariance_, rtol=1e-12, atol=1e-18)
        np.testing.assert_allclose(cov, ref, rtol=1e-12, atol=1e-18)
        assert shrink == pytest.approx(ref_shrink, rel=1e-12)
        # the formula: (1 - s) S + s mu I
        s = np.cov(x, rowvar=False, ddof=0)
        np.testing.assert_allclose(cov, (1 - shrink) * s + shrink * np.trace(s) / p * np.eye(p), rtol=1e-12)


def _hand_hrp(cov: np.ndarray, order: list[int]) -> np.ndarray:
    """López de Prado's recursive bisection (2016, snippet 16.4), written out on its own."""
    w = np.ones(cov.shape[0])
    clusters = [order]
    while clusters:
        clusters = [c[j:k] for c in clusters for j, k in ((0, len(c) // 2), (len(c) // 2, len(c))) if len(c) > 1]
        for i in range(0, len(clusters), 2):
            left, right = clusters[i], clusters[i + 1]

            def var(c: list[int]) -> float:
                sub = cov[np.ix_(c, c)]
                ivp = 1 / np.diag(sub) / (1 / np.diag(sub)).sum()
                return float(ivp @ sub @ ivp)

            alpha = 1 - var(left) / (var(left) + var(right))
            w[left] *= alpha
            w[right] *= 1 - alpha
    return w


def test_hrp_four_assets_by_hand_and_equal_to_skfolio() -> None:
    # two pairs of highly correlated assets: the order puts each pair together
    rng = np.random.default_rng(5)
    f = rng.normal(0, 0.02, (60, 2))
    x = np.column_stack(
        [
            f[:, 0] + rng.normal(0, 0.004, 60),
            f[:, 1] * 2 + rng.normal(0, 0.01, 60),
            f[:, 0] * 1.5 + rng.normal(0, 0.005, 60),
            f[:, 1] + rng.normal(0, 0.003, 60),
        ]
    )
    cov = ledoit_wolf(x)[0]
    got = hrp_weights(x, cov)
    corr = np.corrcoef(x, rowvar=False)
    order = sorted(range(4), key=lambda i: 0 if corr[i, 0] > 0.5 else 1)  # {0, 2} then {1, 3}
    pair_order = [order[:2], order[2:]]
    # within the two halves the split is the same whichever way round: compare with both orientations
    hand = _hand_hrp(cov, pair_order[0] + pair_order[1])
    np.testing.assert_allclose(got, hand, rtol=1e-12)
    np.testing.assert_allclose(got, _skfolio(x, "hrp"), rtol=1e-9, atol=1e-12)
    assert got.sum() == pytest.approx(1.0, abs=1e-12)


def test_hrp_equals_skfolio_on_random_books() -> None:
    rng = np.random.default_rng(7)
    for n, p in [(30, 10), (30, 50), (10, 30), (60, 3)]:
        x = _returns(rng, n, p)
        np.testing.assert_allclose(hrp_weights(x, ledoit_wolf(x)[0]), _skfolio(x, "hrp"), rtol=1e-9, atol=1e-12)


def test_erc_risk_contributions_equal_by_hand_and_skfolio_agrees() -> None:
    rng = np.random.default_rng(11)
    for n, p in [(30, 10), (30, 50), (10, 30), (60, 4)]:
        x = _returns(rng, n, p)
        cov = ledoit_wolf(x)[0]
        w = erc_polish(skfolio_weights(x, "erc", "ledoit_wolf"), cov)
        rc = w * (cov @ w)  # risk contributions, by hand from the covariance
        assert w.sum() == pytest.approx(1.0, abs=1e-12) and (w > 0).all()
        np.testing.assert_allclose(rc / rc.mean(), 1.0, atol=1e-9)
        np.testing.assert_allclose(w, _skfolio(x, "erc", solver_params=TIGHT, scale_objective=100.0), atol=1e-6)


def test_min_variance_closed_form_and_kkt_and_skfolio() -> None:
    rng = np.random.default_rng(13)
    checked_interior = checked_bound = 0
    for n, p in [(30, 4), (60, 6), (30, 10), (30, 50), (40, 8)] * 3:
        x = _returns(rng, n, p, mix=0.6)
        cov = ledoit_wolf(x)[0]
        w = min_variance_polish(skfolio_weights(x, "min_variance", "ledoit_wolf"), cov)
        closed = np.linalg.solve(cov, np.ones(p))
        closed /= closed.sum()
        if (closed > 0).all():  # the long-only constraint does not bind: the unconstrained optimum
            np.testing.assert_allclose(w, closed, atol=1e-12)
            checked_interior += 1
        else:  # KKT: equal marginal variance on the support, no lower one off it
            g, v = cov @ w, float(w @ cov @ w)
            on = w > 0
            np.testing.assert_allclose(g[on], v, rtol=1e-9)
            assert (g[~on] >= v * (1 - 1e-9)).all() and (w >= 0).all()
            checked_bound += 1
        np.testing.assert_allclose(
            w, _skfolio(x, "min_variance", solver_params=TIGHT, scale_objective=100.0), atol=1e-6
        )
    assert checked_interior and checked_bound


# ---- the allocator over a synthetic panel ---------------------------------------------------------


def _panel(rng: np.random.Generator, n: int, k: int) -> Panel:
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, (n, k)) * rng.uniform(0.3, 2, k), axis=0))
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0, 0.005, (n, k)))
    ts = np.arange(n, dtype=np.int64) * DAY_MS
    return Panel(ts, [f"S{i}/USDT" for i in range(k)], open_, close, close, close, np.ones((n, k)))


def _windows(n_bars: int, first: int, hold: int) -> list[Window]:
    out = []
    for i, r in enumerate(range(first, n_bars - hold, hold)):
        out.append(Window(i, r * DAY_MS, (r + 1) * DAY_MS, (r + 1 + hold) * DAY_MS))
    return out


def _walk(p: PortfolioConfig, panel: Panel, picks: list[list[str]]) -> tuple[Allocator, list[dict[str, float]]]:
    alloc = Allocator(p, "1d", panel, panel)
    out = []
    for w, names in zip(_windows(panel.ts_ms.size, 40, 7), picks, strict=False):
        chosen = pl.DataFrame({"symbol": names, "weight_vol": [0.02] * len(names)})
        out.append(alloc.window(w, chosen, names))
    return alloc, out


def _picks(rng: np.random.Generator, panel: Panel, n: int, top: int) -> list[list[str]]:
    return [list(rng.choice(panel.symbols, size=top, replace=False)) for _ in range(n)]


@pytest.mark.parametrize("weighting", ["hrp", "erc", "min_variance", "inverse_vol"])
def test_no_bar_after_the_ranking_bar_changes_the_weights(weighting: str) -> None:
    rng = np.random.default_rng(17)
    panel = _panel(rng, 200, 12)
    p = PortfolioConfig(weighting=weighting, cov_window="30d", target_vol=0.5, max_weight=0.3, max_turnover=0.6)
    picks = _picks(rng, panel, 30, 6)
    _, base = _walk(p, panel, picks)
    windows = _windows(panel.ts_ms.size, 40, 7)
    for k in (0, 3, len(base) // 2, len(base) - 2):
        row = int(windows[k].rank_ms // DAY_MS) + 1  # the first bar after the ranking bar
        future = Panel(
            panel.ts_ms,
            panel.symbols,
            *(np.vstack([a[:row], a[row:] * np.exp(rng.normal(0, 0.2, a[row:].shape))]) for a in (panel.open, panel.high, panel.low, panel.close)),
            panel.volume,
        )  # fmt: skip
        _, got = _walk(p, future, picks)
        assert got[: k + 1] == base[: k + 1]
        assert got[k + 1 :] != base[k + 1 :]  # the future did change what came later


def _drifted(panel: Panel, prev_w: Window, w: Window, prev: dict[str, float]) -> dict[str, float]:
    """The held book measured independently: value of each previous weight from its buy open to this rank close."""
    r0, r1 = int(prev_w.start_ms // DAY_MS), int(w.rank_ms // DAY_MS)
    vals = {s: x * panel.close[r1, panel.col(s)] / panel.open[r0, panel.col(s)] for s, x in prev.items()}
    total = sum(vals.values()) + 1 - sum(prev.values())
    return {s: v / total for s, v in vals.items()}


@pytest.mark.parametrize("weighting", ["equal", "hrp", "erc"])
def test_max_weight_and_max_turnover_hold_at_every_rebalance(weighting: str) -> None:
    rng = np.random.default_rng(19)
    for trial in range(6):
        panel = _panel(rng, 220, 15)
        cap = float(rng.uniform(0.12, 0.4))
        limit = float(rng.uniform(0.05, 0.8))
        p = PortfolioConfig(weighting=weighting, max_weight=cap, max_turnover=limit)
        picks = _picks(rng, panel, 40, int(rng.integers(4, 9)))
        alloc, books = _walk(p, panel, picks)
        windows = _windows(panel.ts_ms.size, 40, 7)
        prev: dict[str, float] = {}
        for k, book in enumerate(books):
            held = _drifted(panel, windows[k - 1], windows[k], prev) if k else {}
            names = set(book) | set(held)
            turnover = sum(abs(book.get(s, 0.0) - held.get(s, 0.0)) for s in names)
            trim = sum(max(h - cap, 0.0) for h in held.values())
            assert max(book.values()) <= cap + 1e-9
            assert min(book.values()) >= 0 and sum(book.values()) <= 1 + 1e-9
            assert turnover <= max(limit, trim) + 1e-9, (trial, k)
            assert turnover == pytest.approx(alloc.records[k].turnover, abs=1e-12)
            prev = book
        # the limit binds somewhere (or the test proves nothing)
        assert any(r.turnover == pytest.approx(limit, abs=1e-9) for r in alloc.records)


def test_limits_on_random_arrays() -> None:
    rng = np.random.default_rng(23)
    for _ in range(2000):
        n = int(rng.integers(1, 30))
        t = rng.dirichlet(np.ones(n)) * rng.uniform(0.2, 1.0)
        cap = float(rng.uniform(0.01, 1.0))
        t = cap_weights(t, cap)
        assert t.max() <= cap and t.sum() <= 1 + 1e-12
        h = rng.dirichlet(np.ones(n)) * rng.uniform(0, 1.0) * (rng.random(n) < 0.7)
        limit = float(rng.uniform(0.001, 2.0))
        w, turnover = limits_apply(t, h, cap, limit)
        trim = np.maximum(h - cap, 0).sum()
        assert w.max() <= cap + 1e-12 and w.min() >= 0
        assert turnover == pytest.approx(np.abs(w - h).sum(), abs=1e-15)
        assert turnover <= max(limit, trim) + 1e-9


def test_cap_spreads_the_excess_pro_rata() -> None:
    w = cap_weights(np.array([0.6, 0.3, 0.1]), 0.5)
    np.testing.assert_allclose(w, [0.5, 0.3 + 0.1 * 0.75, 0.1 + 0.1 * 0.25])
    # a second round: 0.3 + 0.2 * 0.75 = 0.45 is above 0.4 in its turn, its excess goes to the last
    np.testing.assert_allclose(cap_weights(np.array([0.6, 0.3, 0.1]), 0.4), [0.4, 0.4, 0.2])
    np.testing.assert_allclose(cap_weights(np.array([0.5, 0.5]), 0.3), [0.3, 0.3])  # 0.4 stays in cash


def test_target_vol_scales_the_gross_by_hand_capped_by_max_gross() -> None:
    rng = np.random.default_rng(29)
    panel = _panel(rng, 120, 6)
    names = panel.symbols[:4]
    w = _windows(120, 60, 7)[0]
    x = returns_of(panel.close[60 - 30 : 61, :4])
    cov = ledoit_wolf(x)[0]
    vol = float(np.sqrt(np.full(4, 0.25) @ cov @ np.full(4, 0.25) * YEAR_MS / DAY_MS))
    chosen = pl.DataFrame({"symbol": names, "weight_vol": [0.02] * 4})
    for target, cap in [(vol / 2, 1.0), (vol * 3, 1.0), (vol / 2, 0.3)]:
        p = PortfolioConfig(weighting="equal", target_vol=target, max_gross=cap)
        book = Allocator(p, "1d", panel, panel).window(w, chosen, names)
        gross = min(target / vol, cap)
        assert sum(book.values()) == pytest.approx(gross, rel=1e-12)
        b = np.array(list(book.values()))
        ex_ante = float(np.sqrt(b @ cov @ b * 365))
        assert ex_ante == pytest.approx(min(target, cap * vol), rel=1e-12)


# ---- degenerate covariances: a stated fallback, never NaN ------------------------------------------


def test_degenerate_covariances_fall_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(31)
    panel = _panel(rng, 120, 5)
    panel.close[20:70, 2] = 50.0  # constant prices over the window
    panel.close[55:58, 3] = np.nan  # a gap: rows dropped, the rest still estimates
    w = _windows(120, 60, 7)[0]
    for weighting in ("hrp", "erc", "min_variance"):
        p = PortfolioConfig(weighting=weighting, target_vol=0.3)
        alloc = Allocator(p, "1d", panel, panel)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            book = alloc.window(
                w, pl.DataFrame({"symbol": panel.symbols[:4], "weight_vol": [0.02] * 4}), panel.symbols[:4]
            )
        vals = np.array(list(book.values()))
        assert np.isfinite(vals).all() and np.allclose(vals, vals[0])  # equal weights
        assert f"{weighting} weights: a winner's price did not move" in caplog.text
        one = Allocator(p, "1d", panel, panel).window(
            w, pl.DataFrame({"symbol": ["S0/USDT"], "weight_vol": [0.02]}), ["S0/USDT"]
        )
        assert list(one) == ["S0/USDT"] and 0 < one["S0/USDT"] <= 1
        nan = Panel(
            panel.ts_ms,
            panel.symbols,
            panel.open,
            panel.high,
            panel.low,
            np.full_like(panel.close, np.nan),
            panel.volume,
        )
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            book = Allocator(p, "1d", panel, nan).window(
                w, pl.DataFrame({"symbol": panel.symbols[:2], "weight_vol": [0.02] * 2}), panel.symbols[:2]
            )
        assert book == {"S0/USDT": 0.5, "S1/USDT": 0.5}
        assert "0 complete return row(s)" in caplog.text and "no volatility estimate" in caplog.text


# ---- settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["portfolio=hrp", "portfolio.cov_window=90d"], "portfolio.cov_window='90d' needs 91 1d bars"),
        (["portfolio=erc", "portfolio.cov_window=36h"], "not a whole number (>= 2) of backtest.interval=1d bars"),
        (["portfolio.target_vol=0.2", "portfolio.gross_exposure=0.5"], "both set the gross"),
        (["portfolio.max_turnover=0.5", "signals=trend_in_trend", "backtest.timeframes=[4h]"], "signals=none"),
    ],
)
def test_settings_that_cannot_hold_are_one_line(tmp_path: Path, overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        small_config(tmp_path / "lake", tmp_path / "out", *overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


# ---- end to end: exit rules, the grid, wfo ---------------------------------------------------------


def _audit(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]


def test_hrp_with_exit_rules_end_to_end(lakehouse_dir: Path, tmp_path: Path) -> None:
    from engine.tasks import run_backtest

    extra = ["+profile=crypto_rating", "portfolio=hrp", "portfolio.max_weight=0.3", "portfolio.max_turnover=0.8"]
    res = run_backtest(small_config(lakehouse_dir, tmp_path / "r", *extra))
    assert res.metrics["n_orders"] > 0 and np.isfinite(res.metrics["total_return"])
    lines = _audit(tmp_path / "r")
    weights = [line["weights"] for line in lines]
    assert all(max(w.values()) <= 0.3 + 1e-9 for w in weights if w)  # type: ignore[union-attr]
    assert len({tuple(sorted(w.values())) for w in weights if w}) > 1  # type: ignore[union-attr]
    turnovers = [line["portfolio"]["turnover"] for line in lines]  # type: ignore[index]
    assert max(turnovers) <= 0.8 + 1e-9 and max(turnovers) == pytest.approx(0.8)  # the limit binds (the first window)
    report = (tmp_path / "r" / "report.html").read_text()
    assert "Portfolio construction" in report and "turnover" in report


def test_erc_grid_and_target_vol_wfo_end_to_end(lakehouse_dir: Path, tmp_path: Path) -> None:
    from engine.tasks import grid_run, wfo_run

    grid = ["+profile=crypto_rating", "task=grid", "grid.sl_stop=[0.03,0.08]", "portfolio=erc"]
    g = grid_run(small_config(lakehouse_dir, tmp_path / "g", *grid))
    assert len(g.metrics["combinations"]) == 2
    wfo = ["+profile=crypto_rating", "task=wfo", "grid.sl_stop=[0.03,0.05]", "wfo.train_windows=4"]
    w = wfo_run(small_config(lakehouse_dir, tmp_path / "w", *wfo, "portfolio=min_variance", "portfolio.target_vol=0.4"))
    assert np.isfinite(w.metrics["total_return"])
    sums = [sum(line["weights"].values()) for line in _audit(tmp_path / "w") if line["weights"]]  # type: ignore[union-attr]
    assert max(sums) <= 1 + 1e-9 and min(sums) < 0.999  # the volatility target cut the gross somewhere
    report = (tmp_path / "w" / "report.html").read_text()
    assert "Realised volatility over the run" in report and "(target 40.00%)" in report


def test_hrp_in_a_market_with_depth_and_a_capacity_curve(lakehouse_dir: Path, tmp_path: Path) -> None:
    """HRP weights with the market stage on (cap, impact, spread, minimum notional) and as a capacity curve.

    The plan's weights are the frictionless run's (the market changes fills, not targets), the cap
    holds in orders.parquet, and the capacity pass's run book is the plain run (issue 25, item 4).
    """
    from engine.tasks import run_backtest
    from engine.tasks.capacity import capacity_run

    hrp = ["+profile=crypto_rating", "portfolio=hrp", "portfolio.max_weight=0.3"]
    market = ["execution.max_participation=0.01", "execution.impact=sqrt", "execution.min_notional=5"]
    plain = run_backtest(small_config(lakehouse_dir, tmp_path / "p", *hrp))
    deep = run_backtest(small_config(lakehouse_dir, tmp_path / "m", *hrp, *market))
    assert [line["weights"] for line in _audit(tmp_path / "m")] == [line["weights"] for line in _audit(tmp_path / "p")]
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert m["costs"]["impact"] > 0 and "costs" not in json.loads((tmp_path / "p" / "metrics.json").read_text())
    per_bar = (
        pl.read_parquet(tmp_path / "m" / "orders.parquet")
        .group_by("symbol", "timestamp")
        .agg(pl.col("participation").sum())
    )
    assert per_bar.get_column("participation").max() <= 0.01 + 1e-9
    assert deep.metrics["total_return"] != plain.metrics["total_return"]
    cap = capacity_run(small_config(lakehouse_dir, tmp_path / "c", *hrp, *market, "execution.capacity=[1e4,1e7]"))
    assert cap.metrics["total_return"] == deep.metrics["total_return"]
    assert pl.read_parquet(cap.output_dir / "capacity.parquet").height == 2
