"""The console's closing lines of a perpetual run say what the book paid in funding (metrics.json's funding_paid)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.compose import config_compose
from engine.config import config_validate
from engine.outputs.console import summary_print

BASE = {
    "total_return": -0.37,
    "cagr": -0.11,
    "sharpe": -0.88,
    "max_drawdown": -0.46,
    "n_orders": 10,
    "n_trades": 5,
    "n_ambiguous_exits": 0,
}


@pytest.mark.parametrize(("paid", "want"), [(47090.123, "paid 47,090.12"), (-12.5, "paid -12.50")])
def test_a_perpetual_run_prints_its_funding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], paid: float, want: str
) -> None:
    cfg = config_validate(config_compose(["quiet=true"])[1])
    summary_print({**BASE, "funding_paid": paid}, tmp_path, cfg)  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert f"  funding          {want} (received when negative)" in lines
    assert lines.index(f"  funding          {want} (received when negative)") == lines.index("  ambiguous exits  0") + 1


def test_a_spot_run_prints_no_funding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_validate(config_compose(["quiet=true"])[1])
    summary_print(dict(BASE), tmp_path, cfg)  # type: ignore[arg-type]
    assert "funding" not in capsys.readouterr().out
