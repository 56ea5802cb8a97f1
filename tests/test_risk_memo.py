"""The run's memo of risk estimates (engine/strategy/weights.py ``RiskMemo``): keyed on exactly the
inputs, so sharing it (the survivorship audit's plan reuses the run's) changes no number."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.compose import config_compose
from engine.config import PortfolioConfig, config_validate
from engine.data.panel import Panel
from engine.run.plan import Timings, plan_ranked, run_plan
from engine.run.survivorship import survivors_plan
from engine.strategy.weights import Allocator, RiskMemo
from engine.strategy.windows import DAY_MS, Window


def _panel(rng: np.random.Generator, n: int, k: int) -> Panel:
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, (n, k)) * rng.uniform(0.3, 2, k), axis=0))
    ts = np.arange(n, dtype=np.int64) * DAY_MS
    return Panel(ts, [f"S{i}/USDT" for i in range(k)], close, close, close, close, np.ones((n, k)))


def _walk(p: PortfolioConfig, panel: Panel, picks: list[list[str]], memo: RiskMemo) -> list[dict[str, float]]:
    alloc = Allocator(p, "1d", panel, panel, memo=memo)
    out = []
    for i, names in enumerate(picks):
        r = 40 + 7 * i
        w = Window(i, r * DAY_MS, (r + 1) * DAY_MS, (r + 8) * DAY_MS)
        out.append(alloc.window(w, pl.DataFrame({"symbol": names, "weight_vol": [0.02] * len(names)}), names))
    return out


@pytest.mark.parametrize("weighting", ["hrp", "erc"])
def test_a_shared_memo_changes_no_weight(weighting: str) -> None:
    rng = np.random.default_rng(3)
    panel = _panel(rng, 200, 10)
    p = PortfolioConfig(weighting=weighting, cov_window="30d", target_vol=0.5, max_turnover=0.8)
    picks = [list(rng.choice(panel.symbols, size=5, replace=False)) for _ in range(15)]
    memo: RiskMemo = {}
    first = _walk(p, panel, picks, memo)
    assert len(memo) == 15  # every window's returns differ: one estimate each
    # the same walk again: every estimate comes from the memo, and the books are the same, bit for bit
    assert _walk(p, panel, picks, memo) == first
    assert len(memo) == 15
    # other winners in half of the windows (the audit's case): those are estimated, the rest reused
    other = [names if i % 2 else names[::-1] for i, names in enumerate(picks)]
    fresh = _walk(p, panel, other, {})
    assert _walk(p, panel, other, memo) == fresh
    assert len(memo) == 15 + 8  # the 8 even windows' reversed columns are other inputs


def test_the_key_is_the_exact_returns() -> None:
    """One price moved by one ulp inside the covariance window is another input: estimated again."""
    rng = np.random.default_rng(5)
    panel = _panel(rng, 120, 6)
    p = PortfolioConfig(weighting="hrp", cov_window="30d")
    picks = [panel.symbols[:5]]
    memo: RiskMemo = {}
    _walk(p, panel, picks, memo)
    panel.close[30, 2] = np.nextafter(panel.close[30, 2], np.inf)
    _walk(p, panel, picks, memo)
    assert len(memo) == 2


def test_the_audit_plan_with_the_runs_memo_equals_one_without(tmp_path: Path) -> None:
    raw = config_compose(
        [
            "data.n_symbols=30",
            "data.start=2021-01-01",
            "data.end=2021-12-31",
            "ranking.top_n=8",
            "quiet=true",
            "portfolio=hrp",
            "portfolio.target_vol=0.5",
        ]
    )[1]
    raw["paths"] = {"lakehouse_dir": str(tmp_path / "lh"), "output_dir": str(tmp_path / "out")}
    plan = run_plan(config_validate(raw))
    n_run = len(plan.risk_memo)
    shared = survivors_plan(plan)
    if shared is None:
        pytest.skip("no symbol of this synthetic universe is delisted")
    alone = plan_ranked(
        plan.cfg, plan.lakehouse, plan.ingestion, plan.interval, plan.coverage, plan.windows, shared.ranks, Timings()
    )
    assert [p.allocation.weights for p in shared.plans] == [p.allocation.weights for p in alone.plans]
    assert shared.portfolio == alone.portfolio
    # some audit windows had the run's winners and returns: fewer new estimates than windows
    assert len(plan.risk_memo) - n_run < len(alone.risk_memo)
