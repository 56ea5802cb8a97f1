"""Windows without winners: counted in metrics.json; a run with no winner at all is an error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SMALL, small_config

from engine.cli import run_backtest
from engine.errors import NoWinnersError


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
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "+profile=crypto_rating",
            *SMALL,
            "ranking.min_quote_volume=1e15",
            f"paths.lakehouse_dir={lakehouse_dir}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "has no winner" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
