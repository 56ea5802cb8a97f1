"""The vectorised exit-rule grid: one walk-forward, each combination equal to its single run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import small_config

from engine.core.errors import ConfigError
from engine.tasks import grid_run, run_backtest

GRID = ["+profile=crypto_rating", "task=grid", "grid.sl_stop=[0.03,0.08]", "grid.tp_stop=[0.1,0.25]"]


@pytest.mark.slow
def test_each_combination_equals_its_single_run(lakehouse_dir: Path, tmp_path: Path) -> None:
    grid = grid_run(small_config(lakehouse_dir, tmp_path / "grid", *GRID))
    combos = grid.metrics["combinations"]
    assert len(combos) == 4
    assert len({c["total_return"] for c in combos}) == 4  # the rules matter
    for c in combos:
        job = tmp_path / "grid" / "combos" / f"{c['combo']:03d}"
        params = json.loads((job / "params.json").read_text())
        assert json.loads(params["exit_rules.sl_stop"]) == c["sl_stop"]
        got = json.loads((job / "metrics.json").read_text())
        single = run_backtest(
            small_config(
                lakehouse_dir,
                tmp_path / f"single{c['combo']}",
                "+profile=crypto_rating",
                f"exit_rules.sl_stop={c['sl_stop']}",
                f"exit_rules.tp_stop={c['tp_stop']}",
            )
        )
        want = json.loads(json.dumps({"engine_version": got["engine_version"], **single.metrics}, default=str))
        # a grid audits survivorship once, for its first combination, in the run directory's metrics.json
        assert "survivorship" not in got and want.pop("survivorship")["scope"]
        assert got == want, c


def test_grid_with_no_valid_combination_is_a_config_error(lakehouse_dir: Path, tmp_path: Path) -> None:
    cfg = small_config(lakehouse_dir, tmp_path / "g", "task=grid", "grid.sl_stop=[1.0,1.5]")
    with pytest.raises(ConfigError, match="0 valid combinations"):
        grid_run(cfg)


def test_invalid_combinations_are_skipped(lakehouse_dir: Path, tmp_path: Path) -> None:
    grid = grid_run(small_config(lakehouse_dir, tmp_path / "g", "task=grid", "grid.sl_stop=[0.05,1.5]"))
    assert [c["sl_stop"] for c in grid.metrics["combinations"]] == [0.05]


def test_optimistic_pass_equals_a_full_optimistic_walk_forward(lakehouse_dir: Path, tmp_path: Path) -> None:
    """The optimistic return comes from a light pass over the ambiguous books only, restarted at
    their first ambiguous window; it must equal a full take-profit-first walk-forward from window 0."""
    from engine.config.exit_rules import ExitRules
    from engine.run import PassSpec, backtest_run, books_new, fold, run_plan

    cfg = small_config(lakehouse_dir, tmp_path / "o", "+profile=crypto_rating")
    rules = [ExitRules(sl_stop=0.05), ExitRules(sl_stop=0.03, tp_stop=0.1), ExitRules(sl_stop=0.05, tp_stop=0.15)]
    book_metrics = backtest_run(cfg, rules).book_metrics
    got = [m["total_return_optimistic"] for m in book_metrics]
    ambiguous = [m["n_ambiguous_exits"] for m in book_metrics]
    assert ambiguous[0] == 0 and ambiguous[1] > 0 and ambiguous[2] > 0
    assert got[0] == book_metrics[0]["total_return"]  # nothing ambiguous: both policies agree
    plan = run_plan(cfg)
    for i in (1, 2):
        full = fold(plan, PassSpec("optimistic", plan.interval), books_new(plan, [rules[i]]))
        (out,) = full.outputs
        assert got[i] == out.equity[-1][-1] / cfg.backtest.init_cash - 1.0
        assert got[i] != book_metrics[i]["total_return"]
