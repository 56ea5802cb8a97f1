"""Windows without winners: counted in metrics.json; a run with no winner at all is an error; a run
that places no order says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SMALL, engine_cli, small_config

from engine.core.errors import ConfigError, NoWinnersError
from engine.run.result import NO_ORDERS
from engine.tasks import run_backtest


def test_some_empty_windows_are_counted(lakehouse_dir: Path, tmp_path: Path) -> None:
    # a liquidity floor between the universe's smallest and largest median quote volumes
    base = run_backtest(small_config(lakehouse_dir, tmp_path / "a", "+profile=crypto_rating"))
    assert base.metrics["empty_windows"] == 0
    res = run_backtest(
        small_config(lakehouse_dir, tmp_path / "b", "+profile=crypto_rating", "ranking.min_quote_volume=4e8")
    )
    n_empty = res.metrics["empty_windows"]
    assert 0 < n_empty < res.metrics["n_windows"]
    audit = [json.loads(x) for x in (tmp_path / "b" / "audit.jsonl").read_text().splitlines()]
    assert sum(not a["winners"] for a in audit) == n_empty
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["empty_windows"] == n_empty


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("ranking.min_quote_volume=1e15", "ranking.min_quote_volume removes every symbol"),
    ],
)
def test_no_winner_in_any_window_names_the_filter(
    lakehouse_dir: Path, tmp_path: Path, override: str, needle: str
) -> None:
    cfg = small_config(lakehouse_dir, tmp_path / "r", "+profile=crypto_rating", override, "backtest.start=2021-12-01")
    with pytest.raises(NoWinnersError, match=needle):
        run_backtest(cfg)


@pytest.mark.slow
def test_no_winner_is_one_line_exit_1(lakehouse_dir: Path, tmp_path: Path) -> None:
    run_backtest(small_config(lakehouse_dir, tmp_path / "warm", "+profile=crypto_rating"))  # the store exists
    proc = engine_cli(
        [
            "+profile=crypto_rating",
            *SMALL,
            "ranking.min_quote_volume=1e15",
            f"paths.lakehouse_dir={lakehouse_dir}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
        300,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "has no winner" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_run_without_orders_says_so(lakehouse_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = small_config(lakehouse_dir, tmp_path / "r", "+profile=crypto_rating")
    base = run_backtest(cfg)
    assert base.metrics["n_orders"] > 0 and "warnings" not in json.loads((tmp_path / "r" / "metrics.json").read_text())
    with pytest.raises(ConfigError, match=r"backtest.init_cash=1e-300: .*greater than or equal to 1"):
        small_config(lakehouse_dir, tmp_path / "x", "+profile=crypto_rating", backtest__init_cash=1e-300)
    # the bound refuses it; past the bound, the orders' sizes vanish and nothing trades
    tiny = cfg.model_copy(
        update={
            "backtest": cfg.backtest.model_copy(update={"init_cash": 1e-300}),
            "paths": cfg.paths.model_copy(update={"output_dir": str(tmp_path / "t")}),
        }
    )
    caplog.set_level("WARNING", logger="engine")
    res = run_backtest(tiny)
    assert res.metrics["n_orders"] == 0 and res.metrics["warnings"] == [NO_ORDERS]
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["warnings"] == [NO_ORDERS]
    assert [r.getMessage() for r in caplog.records if "no order" in r.getMessage()] == [NO_ORDERS]
