"""A market's own maximum leverage bounds ``portfolio.leverage`` (issue 24, item 5).

The maximum comes from the exchange's markets (ccxt's ``market['limits']['leverage']['max']``,
stored at ingest) or the ``max_leverage`` column of ``execution.markets_file``; a run whose
leverage exceeds the maximum of a market it trades is refused in one line naming the symbol, its
maximum and the fix (exit 2, no results written). Without a known maximum only the global bound
(``engine.config.book.MAX_LEVERAGE``, 125x) applies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import TINY_RANKING, engine_cli

from engine.config import config_validate
from engine.config.book import MAX_LEVERAGE
from engine.core.errors import ConfigError, DataError
from engine.data.markets import (
    TICK_SIZE,
    MarketRow,
    MarketRule,
    ccxt_row,
    leverage_check,
    markets_file_read,
    markets_store_read,
    markets_store_write,
)

PERP = [
    "data.market=perp",
    "data.n_symbols=8",
    "data.start=2021-01-01",
    "data.end=2021-06-30",
    "portfolio.side=long_short",
    "ranking.bottom_n=3",
    *TINY_RANKING,
    "quiet=true",
]


def _markets_csv(path: Path, maxima: dict[str, float | None]) -> Path:
    lines = ["symbol,min_notional,amount_step,price_tick,max_leverage"]
    lines += [f"{s},,,,{'' if m is None else m}" for s, m in maxima.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_markets_file_gives_each_market_its_maximum_leverage(tmp_path: Path) -> None:
    rows = markets_file_read(_markets_csv(tmp_path / "m.csv", {"BTC/USDT": 10, "ETH/USDT": 50.0, "SOL/USDT": None}))
    assert rows["BTC/USDT"] == MarketRow("BTC/USDT", None, None, None, True, 10.0)
    assert rows["ETH/USDT"].max_leverage == 50.0 and rows["SOL/USDT"].max_leverage is None
    default = MarketRule(1.0, 0.5, 0.25)
    assert rows["BTC/USDT"].rule(default) == MarketRule(1.0, 0.5, 0.25, True, 10.0)
    assert rows["SOL/USDT"].rule(default).max_leverage is None


def test_leverage_above_a_traded_markets_maximum_is_refused_in_one_line() -> None:
    rules = {
        "BTC/USDT": MarketRule(max_leverage=10.0),
        "ETH/USDT": MarketRule(max_leverage=50.0),
        "SOL/USDT": MarketRule(),
    }
    with pytest.raises(ConfigError) as exc:
        leverage_check(20.0, rules)
    line = str(exc.value)
    assert "\n" not in line
    assert line == (
        "portfolio.leverage=20 exceeds the maximum leverage of BTC/USDT, 10x: set portfolio.leverage=10 or lower "
        "(or leave BTC/USDT out of the universe)"
    )
    with pytest.raises(ConfigError, match=r"of ETH/USDT, 50x \(and 1 more market\(s\) whose maximum is below it\)"):
        leverage_check(MAX_LEVERAGE, {**rules, "BTC/USDT": MarketRule(max_leverage=60.0)})
    leverage_check(5.0, rules)  # below every maximum
    leverage_check(10.0, rules)  # at the maximum
    leverage_check(MAX_LEVERAGE, {"SOL/USDT": MarketRule()})  # no maximum known: the global bound only


@pytest.mark.parametrize("value", ["0.5", "0", "-3", "x"])
def test_a_maximum_below_one_or_not_a_number_is_refused(tmp_path: Path, value: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(f"symbol,max_leverage\nBTC/USDT,{value}\n")
    with pytest.raises(DataError, match=r"row 1: max_leverage="):
        markets_file_read(path)


def test_ccxt_markets_give_their_maximum_and_the_store_keeps_it_only_when_known(tmp_path: Path) -> None:
    from engine.data.lakehouse import store_open

    market = {"limits": {"cost": {"min": 5.0}, "leverage": {"min": 1, "max": 75}}, "precision": {"amount": 0.001}}
    assert ccxt_row("BTC/USDT", market, TICK_SIZE).max_leverage == 75.0
    # Binance's markets leave it empty (its leverage brackets are another call): no maximum
    empty = {**market, "limits": {"cost": {"min": 5.0}, "leverage": {"min": None, "max": None}}}
    assert ccxt_row("BTC/USDT", empty, TICK_SIZE).max_leverage is None
    assert ccxt_row("BTC/USDT", {"limits": {}}, TICK_SIZE).max_leverage is None
    lake = store_open(str(tmp_path / "lake"), {"source": "ccxt", "exchange": "test"})
    rows = {"A/USDT": ccxt_row("A/USDT", empty, TICK_SIZE), "B/USDT": ccxt_row("B/USDT", market, TICK_SIZE)}
    markets_store_write(lake, rows, {"exchange": "test"})
    stored = json.loads((lake.root / "_markets.json").read_text())["markets"]
    assert "max_leverage" not in stored[0] and stored[1]["max_leverage"] == 75.0  # unknown: the file as before
    assert markets_store_read(lake) == rows


@pytest.mark.slow
def test_a_perp_run_is_bounded_by_its_markets_maximum(tmp_path: Path) -> None:
    """leverage 5 under a maximum of 10 plans; 20 is refused in process and from the command line (exit 2, one line)."""
    from helpers import compose_raw

    from engine.data.sources.registry import source_from_config
    from engine.run.plan import run_plan

    raw = compose_raw(*PERP, "portfolio.leverage=5")
    raw["paths"] = {"lakehouse_dir": str(tmp_path / "lake"), "output_dir": str(tmp_path / "out")}
    symbols = source_from_config(config_validate(raw).data).symbols()
    markets = _markets_csv(tmp_path / "markets.csv", dict.fromkeys(symbols, 10.0))
    raw["execution"] = {**raw.get("execution", {}), "markets_file": str(markets)}
    plan = run_plan(config_validate(raw))
    assert plan.market is not None
    traded = plan.market.panel.symbols
    assert traded and all(plan.market.rules[s].max_leverage == 10.0 for s in traded)
    raw["portfolio"] = {**raw["portfolio"], "leverage": 20.0}
    with pytest.raises(ConfigError, match=r"^portfolio.leverage=20 exceeds the maximum leverage of \S+/USDT, 10x"):
        run_plan(config_validate(raw))

    run = tmp_path / "run"
    proc = engine_cli(
        [
            "+profile=crypto_rating",
            *PERP,
            "portfolio.leverage=20",
            f"execution.markets_file={markets}",
            f"paths.lakehouse_dir={tmp_path / 'lake'}",
            "paths.ledger=null",
            f"hydra.run.dir={run}",
        ],
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert "portfolio.leverage=20 exceeds the maximum leverage of" in lines[0]
    assert f"of {traded[0]}, 10x" in lines[0]  # the first traded market (every one has 10x)
    assert "more market(s) whose maximum is below it): set portfolio.leverage=10 or lower" in lines[0]
    assert not (run / "metrics.json").exists() and not (run / "orders.parquet").exists()
