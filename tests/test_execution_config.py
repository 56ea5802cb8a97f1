"""execution.*: validated, all off by default, one line and exit 2 on a bad value; the pieces of the wiring.

The end-to-end runs with frictions are in tests/test_execution_run.py.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_user_errors import _one_line, config_error_line

from engine.compose import config_compose
from engine.config.execution import DEFAULT_CAPITALS, ExecutionConfig
from engine.run.capacity import capacity_books, half_sharpe_capital
from engine.run.frictions import parkinson_sigma

SMALL = ["data.n_symbols=10", "data.start=2021-01-01", "data.end=2021-06-30", "quiet=true"]


def test_defaults_are_frictionless_and_each_friction_turns_the_market_on() -> None:
    cfg = config_compose(["+profile=crypto_rating"])[0]
    assert cfg.execution == ExecutionConfig() and cfg.execution.is_frictionless()
    for override in (
        "execution.max_participation=0.01",
        "execution.impact=sqrt",
        "execution.spread=edge",
        "execution.half_spread=0.001",
        "execution.min_notional=5",
        "execution.amount_step=0.001",
        "execution.price_tick=0.01",
        "execution.markets_file=m.json",
    ):
        assert not config_compose([override])[0].execution.is_frictionless(), override
    # not frictions of the fills: the stage stays the frictionless one
    for override in ("execution.capacity=[1e4,1e6]", "execution.delisting_haircut=0.5", "execution.impact_k=3"):
        assert config_compose([override])[0].execution.is_frictionless(), override
    assert config_compose(["execution.impact=sqrt", "execution.impact_k=0"])[0].execution.is_frictionless()


def test_capitals() -> None:
    assert ExecutionConfig().capitals() == list(DEFAULT_CAPITALS)
    assert config_compose(["execution.capacity=[1e4,1e6]"])[0].execution.capitals() == [1e4, 1e6]
    # the run's own book first; a capital equal to it is that book
    assert capacity_books(1e5, [1e4, 1e5, 1e6]) == ([1e5, 1e4, 1e6], [1, 0, 2])
    assert capacity_books(5e4, [1e4, 1e6]) == ([5e4, 1e4, 1e6], [1, 2])


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["execution.max_participation=0"], ["execution.max_participation=0", "> 0"]),
        (["execution.max_participation=1.5"], ["execution.max_participation=1.5", "<= 1"]),
        (["execution.impact_k=-1"], ["execution.impact_k=-1", ">= 0"]),
        (["execution.delisting_haircut=1"], ["execution.delisting_haircut=1", "< 1"]),
        (["execution.leftover=keep"], ["execution.leftover='keep'", "'carry', 'drop'"]),
        (["execution.impact=linear"], ["execution.impact='linear'", "'none', 'sqrt'"]),
        (["execution.capacity=[1e6,1e4]"], ["execution.capacity", "strictly increasing", "[10000.0, 1000000.0]"]),
        (["execution.capacity=[1e4,1e4]"], ["execution.capacity", "strictly increasing"]),
        (["execution.capacity=[0.5,1e4]"], ["execution.capacity", "[0.5]", "outside [1, 1e+15]"]),
        (["execution.capacity=[]"], ["execution.capacity", "at least one capital"]),
        (["execution.max_participation=nan"], ["execution.max_participation=nan", "finite"]),
        (["+execution.max_participaton=0.1"], ["unknown config key 'execution.max_participaton'", "max_participation"]),
        (["task=grid", "grid.sl_stop=[0.05]", "execution.capacity=[1e4]"], ["execution.capacity", "task=grid"]),
    ],
)
def test_bad_execution_value_is_one_line(
    args: list[str],
    needles: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = config_error_line(args, tmp_path, monkeypatch, capsys)
    for needle in needles:
        assert needle in line, line
    assert not (tmp_path / "outputs").exists()


def test_bad_execution_value_exits_2_in_a_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "+profile=crypto_rating", *SMALL, "execution.max_participation=2"],
        cwd=tmp_path,
        env={**os.environ, "CI": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "execution.max_participation=2" in _one_line(proc)
    assert not (tmp_path / "outputs").exists()


def test_parkinson_sigma_reads_past_bars_only() -> None:
    high = np.array([[2.0], [3.0], [np.e], [4.0], [5.0]])
    low = np.array([[1.0], [1.0], [1.0], [np.nan], [1.0]])
    got = parkinson_sigma(high, low, window=2)[:, 0]
    k = 4 * math.log(2)
    # bar 0 and 1: fewer than two past bars; bar 2: bars 0, 1; bar 3: bars 1, 2; bar 4: bars 2, 3 (3 missing)
    assert np.isnan(got[:2]).all()
    assert got[2] == pytest.approx(math.sqrt((math.log(2) ** 2 + math.log(3) ** 2) / 2 / k), rel=1e-12)
    assert got[3] == pytest.approx(math.sqrt((math.log(3) ** 2 + 1.0) / 2 / k), rel=1e-12)
    assert np.isnan(got[4])
    # a change of the current bar never moves its own estimate
    high2 = high.copy()
    high2[2, 0] = 100.0
    assert parkinson_sigma(high2, low, 2)[2, 0] == got[2]


def test_half_sharpe_capital() -> None:
    caps = [1e4, 1e5, 1e6, 1e7]
    assert half_sharpe_capital(caps, [2.0, 1.5, 1.0, 0.2])[0] == 1e6  # 1.0 is half of 2.0
    assert half_sharpe_capital(caps, [2.0, 1.9, 1.8, 1.1])[0] is None
    assert half_sharpe_capital(caps, [2.0, None, 1.8, 1.1])[0] == 1e5  # no Sharpe (flat equity) counts as fallen
    capital, why = half_sharpe_capital(caps, [-0.5, -1.0, -2.0, -3.0])
    assert capital is None and "not positive" in why


def test_default_execution_keeps_the_trial_hash_of_runs_before_it() -> None:
    from engine.outputs.ledger import trial_config_hash

    cfg = config_compose(["+profile=crypto_rating"])[0].model_dump(mode="json")
    before = {k: v for k, v in cfg.items() if k != "execution"}  # a run's config before the section existed
    assert trial_config_hash(cfg) == trial_config_hash(before)
    capacity = config_compose(["+profile=crypto_rating", "execution.capacity=[1e4,1e6]"])[0].model_dump(mode="json")
    assert trial_config_hash(capacity) == trial_config_hash(before)  # the capitals are not the trial's
    capped = config_compose(["+profile=crypto_rating", "execution.max_participation=0.01"])[0].model_dump(mode="json")
    assert trial_config_hash(capped) != trial_config_hash(before)
