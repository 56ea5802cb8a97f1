"""engine.data.markets: exchange rules (minimum notional, amount step, price tick, active) from ccxt's
markets, stored with the data at ingest, from a user's markets file, or from the config defaults; and
the delisted markets a ccxt ingest keeps (their history served) or leaves out, named either way.

The ccxt tests run real ccxt against the local Binance stand-in (tests/exchange_server.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest
from exchange_server import ExchangeServer
from polars.testing import assert_frame_equal

from engine.config import CcxtData, RunConfig
from engine.core.errors import DataError
from engine.data.ingest import IngestionService, universe_ingest
from engine.data.lakehouse import store_open
from engine.data.markets import (
    DECIMAL_PLACES,
    MARKETS_FILE,
    SIGNIFICANT_DIGITS,
    TICK_SIZE,
    MarketRow,
    MarketRule,
    ccxt_row,
    market_rules,
    markets_file_read,
    markets_store_read,
    precision_step,
    rules_arrays,
)
from engine.data.sources.ccxt_source import CcxtSource
from engine.data.sources.synthetic import SyntheticSource

GEN = SyntheticSource(7, 6, "2024-01-01", "2024-03-31")
DAY = 86_400_000
DELISTED_AT = int(datetime(2024, 2, 15, tzinfo=UTC).timestamp() * 1000)  # XRP/USDT's last bar opens then
LATER = GEN.end_ms + 30 * DAY


# ---- ccxt's markets as rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mode", "step"),
    [
        (0.01, TICK_SIZE, 0.01),
        ("0.00001000", TICK_SIZE, 1e-5),
        (1, TICK_SIZE, 1.0),
        (2, DECIMAL_PLACES, 0.01),
        (8, DECIMAL_PLACES, 1e-8),
        (0, DECIMAL_PLACES, 1.0),
        (5, SIGNIFICANT_DIGITS, None),
        (None, TICK_SIZE, None),
        (0.0, TICK_SIZE, None),
    ],
)
def test_precision_step_reads_each_ccxt_counting_mode(value: object, mode: int, step: float | None) -> None:
    assert precision_step(value, mode) == step


def test_precision_modes_are_ccxts() -> None:
    import ccxt

    assert (TICK_SIZE, DECIMAL_PLACES, SIGNIFICANT_DIGITS) == (
        ccxt.TICK_SIZE,
        ccxt.DECIMAL_PLACES,
        ccxt.SIGNIFICANT_DIGITS,
    )
    with pytest.raises(DataError, match="unknown ccxt precisionMode 9"):
        precision_step(1, 9)


def test_ccxt_row_reads_limits_precision_and_active() -> None:
    market = {
        "limits": {"cost": {"min": 10.0, "max": None}, "amount": {"min": 0.001}},
        "precision": {"amount": 0.001, "price": 0.01},
        "active": True,
    }
    assert ccxt_row("BTC/USDT", market, TICK_SIZE) == MarketRow("BTC/USDT", 10.0, 0.001, 0.01, True)
    decimals = {**market, "precision": {"amount": 3, "price": 2}, "active": False}
    assert ccxt_row("BTC/USDT", decimals, DECIMAL_PLACES) == MarketRow("BTC/USDT", 10.0, 0.001, 0.01, False)
    # significant digits: no one step exists; a missing limit: no value (the config default stands in)
    sig = {"limits": {"cost": {"min": None}}, "precision": {"amount": 8, "price": 5}, "active": None}
    assert ccxt_row("BTC/USD", sig, SIGNIFICANT_DIGITS) == MarketRow("BTC/USD", None, None, None, True)


def test_a_row_fills_its_empty_fields_from_the_default() -> None:
    default = MarketRule(1.0, 0.5, 0.25)
    assert MarketRow("A/B", None, 0.1, None, False).rule(default) == MarketRule(1.0, 0.1, 0.25, False)
    arrays = rules_arrays({"A/B": MarketRule(5.0, 0.1, 0.01), "C/B": MarketRule()}, ["C/B", "A/B"])
    assert {k: v.tolist() for k, v in arrays.items()} == {
        "min_notional": [0.0, 5.0],
        "amount_step": [0.0, 0.1],
        "price_tick": [0.0, 0.01],
    }


# ---- the ingest against the local exchange ------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ExchangeServer]:
    rules = {"BTC/USDT": {"tickSize": "0.01000000", "stepSize": "0.00010000", "minNotional": "10.00000000"}}
    with ExchangeServer(GEN, delisted={"XRP/USDT": DELISTED_AT}, rules=rules) as srv:
        yield srv


def ccxt_cfg(server: ExchangeServer, lake: Path, **data: object) -> RunConfig:
    settings: dict[str, Any] = {
        "source": "ccxt",
        "api_url": server.api_url,
        "rate_limit_ms": 0,
        "start": "2024-01-01",
        "end": "2024-03-30",
        **data,
    }
    return RunConfig.model_validate({"data": settings, "paths": {"lakehouse_dir": str(lake)}, "quiet": True})


def ccxt_ingest(cfg: RunConfig) -> tuple[list[str], IngestionService]:
    assert isinstance(cfg.data, CcxtData)
    src = CcxtSource(cfg.data, sleep=lambda s: None, clock_ms=lambda: LATER)
    service = IngestionService(store_open(cfg.paths.lakehouse_dir, src.identity()), src)
    with src:
        _, plan = universe_ingest(service, cfg, strict=False)
    return plan.symbols, service


def test_ingest_stores_the_exchange_rules_with_the_bars(tmp_path: Path, server: ExchangeServer) -> None:
    cfg = ccxt_cfg(server, tmp_path, symbols=["BTC/USDT", "ETH/USDT"])
    kept, service = ccxt_ingest(cfg)
    assert kept == ["BTC/USDT", "ETH/USDT"]
    lake = service.lakehouse
    stored = json.loads((Path(lake.root) / MARKETS_FILE).read_text())
    assert stored["exchange"] == "binance" and stored["precision_mode"] == "TICK_SIZE"
    assert stored["markets"] == [
        {"symbol": "BTC/USDT", "min_notional": 10.0, "amount_step": 1e-4, "price_tick": 0.01, "active": True},
        {"symbol": "ETH/USDT", "min_notional": 5.0, "amount_step": 1e-5, "price_tick": 1e-8, "active": True},
    ]
    assert [p.name for p in Path(lake.root).iterdir() if p.name.startswith(".")] == []  # no temp file left
    rules = market_rules(cfg, ["ETH/USDT", "BTC/USDT"])
    assert rules == {
        "ETH/USDT": MarketRule(5.0, 1e-5, 1e-8, True),
        "BTC/USDT": MarketRule(10.0, 1e-4, 0.01, True),
    }
    # a later ingest of other symbols into the same namespace adds theirs, keeps the earlier rows
    ccxt_ingest(ccxt_cfg(server, tmp_path, symbols=["SOL/USDT"]))
    assert sorted(markets_store_read(lake) or {}) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def test_ingest_keeps_delisted_markets_with_history_and_names_them(
    tmp_path: Path, server: ExchangeServer, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = ccxt_cfg(server, tmp_path)  # no symbols: every spot market in USDT, delisted ones included
    with caplog.at_level(logging.WARNING, logger="engine"):
        kept, service = ccxt_ingest(cfg)
    lake = service.lakehouse
    assert kept == sorted(GEN.symbols())  # XRP/USDT (delisted, history served) kept; OLD/USDT left out
    # XRP/USDT's bars: the generator's, up to its last traded day
    want = GEN.ohlcv_fetch("XRP/USDT", "1d", GEN.start_ms, DELISTED_AT + DAY)
    assert_frame_equal(lake.read("bars", "1d", "XRP/USDT"), want)
    assert lake.read("bars", "1d", "XRP/USDT").get_column("timestamp").max() == datetime(2024, 2, 15, tzinfo=UTC)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "1 inactive (delisted) market(s) kept, the exchange serves their history: XRP/USDT" in lines
    assert (
        "1 inactive (delisted) market(s) left out, the exchange served no 1d bars of them in the range: OLD/USDT"
        in lines
    )
    rows = markets_store_read(lake) or {}
    assert sorted(rows) == sorted(GEN.symbols())
    assert [s for s, r in rows.items() if not r.active] == ["XRP/USDT"]
    assert market_rules(cfg, ["XRP/USDT"])["XRP/USDT"].active is False
    # OLD/USDT: one request, rejected (Invalid symbol), not retried
    assert sum(r.params["symbol"] == "OLDUSDT" for r in server.klines()) == 1

    # a second ingest asks nothing and comes to the same answer from the store
    server.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine"):
        again, _ = ccxt_ingest(cfg)
    assert again == kept
    assert server.klines() == []
    assert any("kept, the exchange serves their history: XRP/USDT" in r.getMessage() for r in caplog.records)


def test_a_configured_delisted_symbol_without_history_is_left_out_not_an_error(
    tmp_path: Path, server: ExchangeServer
) -> None:
    kept, service = ccxt_ingest(ccxt_cfg(server, tmp_path, symbols=["BTC/USDT", "OLD/USDT"]))
    assert kept == ["BTC/USDT"]
    assert sorted(markets_store_read(service.lakehouse) or {}) == ["BTC/USDT"]


def test_an_active_market_the_exchange_rejects_is_still_an_error(tmp_path: Path) -> None:
    # ETH/BTC is listed TRADING but the stand-in serves no klines for it: a real rejection, not a delisting
    with ExchangeServer(GEN) as srv, pytest.raises(DataError, match=r"ETH/BTC 1d: fetch_ohlcv .* rejected"):
        ccxt_ingest(ccxt_cfg(srv, tmp_path, symbols=["ETH/BTC"]))


def test_a_ccxt_store_without_rules_warns_and_uses_the_defaults(
    tmp_path: Path, server: ExchangeServer, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = ccxt_cfg(server, tmp_path, symbols=["BTC/USDT"])
    _, service = ccxt_ingest(cfg)
    (Path(service.lakehouse.root) / MARKETS_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="engine"):
        rules = market_rules(cfg, ["BTC/USDT"])
    assert rules == {"BTC/USDT": MarketRule()}
    assert "no exchange rules stored with this data" in caplog.text and "run task=ingest" in caplog.text


def test_a_synthetic_ingest_stores_no_rules(tmp_path: Path) -> None:
    from helpers import small_config  # the suite's small generated universe

    cfg = small_config(tmp_path / "lake", tmp_path / "run", "task=ingest")
    from engine.data.sources.registry import source_from_config

    src = source_from_config(cfg.data)
    service = IngestionService(store_open(cfg.paths.lakehouse_dir, src.identity()), src)
    _, plan = universe_ingest(service, cfg, strict=False)
    assert plan.symbols and not (Path(service.lakehouse.root) / MARKETS_FILE).exists()


# ---- a user's markets file and the config defaults ------------------------------------------------


def fake_cfg(tmp_path: Path, markets_file: Path | None = None, **defaults: float) -> Any:
    """A run config as market_rules reads it (the execution section comes with branch i22-wire)."""
    execution = SimpleNamespace(markets_file=None if markets_file is None else str(markets_file), **defaults)
    return SimpleNamespace(
        data=SimpleNamespace(source="synthetic"),
        paths=SimpleNamespace(lakehouse_dir=str(tmp_path)),
        execution=execution,
    )


ROWS = [
    {"symbol": "BTC/USDT", "min_notional": 10, "amount_step": 0.0001, "price_tick": 0.01},
    {"symbol": "ETH/USDT", "min_notional": 5, "amount_step": 0.001, "price_tick": 0.01, "active": False},
]


def write_markets(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".csv":
        pl.DataFrame(rows).write_csv(path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        import yaml

        path.write_text(yaml.safe_dump({"markets": rows}))
    return path


@pytest.mark.parametrize("name", ["m.csv", "m.json", "m.yaml"])
def test_markets_file_gives_the_rules_and_defaults_fill_the_rest(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [ROWS[0], {**ROWS[1], "active": "false" if name.endswith("csv") else False}]
    if name.endswith("csv"):  # one empty cell: that field's default
        rows[0] = {**rows[0], "price_tick": None}
    path = write_markets(tmp_path / name, rows)
    cfg = fake_cfg(tmp_path, path, min_notional=1.0, amount_step=0.5, price_tick=0.001)
    with caplog.at_level(logging.WARNING, logger="engine"):
        rules = market_rules(cfg, ["BTC/USDT", "ETH/USDT", "SOL/USDT"])
    tick = 0.001 if name.endswith("csv") else 0.01
    assert rules == {
        "BTC/USDT": MarketRule(10.0, 0.0001, tick),
        "ETH/USDT": MarketRule(5.0, 0.001, 0.01, False),
        "SOL/USDT": MarketRule(1.0, 0.5, 0.001),
    }
    assert "1 symbol(s) with no exchange rules" in caplog.text and "SOL/USDT" in caplog.text


def test_defaults_alone_without_a_markets_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="engine"):
        rules = market_rules(fake_cfg(tmp_path, min_notional=5.0, amount_step=0.0, price_tick=0.01), ["A/USDT"])
    assert rules == {"A/USDT": MarketRule(5.0, 0.0, 0.01)}
    assert caplog.text == ""  # the defaults are the stated rules here, nothing stands in
    # a config without the execution section (before branch i22-wire): no rules at all
    plain = SimpleNamespace(data=SimpleNamespace(source="synthetic"))
    assert market_rules(plain, ["A/USDT"]) == {"A/USDT": MarketRule()}  # type: ignore[arg-type]


def test_the_stored_layout_is_a_valid_markets_file(tmp_path: Path) -> None:
    stored = {"exchange": "binance", "precision_mode": "TICK_SIZE", "markets": ROWS}
    (tmp_path / "copy.json").write_text(json.dumps(stored))
    assert markets_file_read(tmp_path / "copy.json")["ETH/USDT"] == MarketRow("ETH/USDT", 5.0, 0.001, 0.01, False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("symbol,min_notional,amount_step,price_tick,fee\nA/B,1,1,1,0.1\n", r"unknown column\(s\) \['fee'\]"),
        ("symbol,min_notional,lot,price_tick\nA/B,1,1,1\n", r"unknown column\(s\) \['lot'\]"),
        ("min_notional,amount_step,price_tick\n1,1,1\n", "no symbol column"),
        ("symbol,min_notional,amount_step,price_tick\nA/B,1,0,1\n", "row 1: amount_step='0' must be a positive number"),
        ("symbol,min_notional,amount_step,price_tick\nA/B,1,1,-0.01\n", "price_tick='-0.01' must be a positive"),
        ("symbol,min_notional,amount_step,price_tick\nA/B,-1,1,1\n", "min_notional='-1' must be a number >= 0"),
        ("symbol,min_notional,amount_step,price_tick\nA/B,1,1,nan\n", "price_tick='nan' must be a positive"),
        ("symbol,min_notional,amount_step,price_tick\nA/B,x,1,1\n", "min_notional='x' is not a number"),
        ("symbol,min_notional,amount_step,price_tick\nA/B,1,1,1\nA/B,2,1,1\n", "A/B is given twice"),
        ("symbol,min_notional,amount_step,price_tick\n,1,1,1\n", "row 1: no symbol"),
        ("symbol,min_notional,amount_step,price_tick,active\nA/B,1,1,1,maybe\n", "active='maybe' is not true or false"),
        ("symbol,min_notional,amount_step,price_tick\nA/B,1,1,1,9\n", "row 1: more values than the header"),
        ("symbol,min_notional,amount_step,price_tick\nAB,1,1,1\n", "row 1: .*BASE/QUOTE"),
    ],
)
def test_a_bad_markets_file_is_one_line_naming_it(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        market_rules(fake_cfg(tmp_path, path), ["A/B"])
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.json", '{"BTC/USDT": {"min_notional": 1}}', "expected a list of rows"),
        ("m.json", '[{"symbol": "BTC/USDT", "minNotional": 1}]', r"unknown column\(s\) \['minNotional'\]"),
        ("m.json", "[1, 2]", "expected an object with the columns"),
        ("m.json", "[{", "cannot be read"),
        ("m.txt", "x", "unknown format .txt"),
    ],
)
def test_a_bad_json_markets_file_is_one_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        markets_file_read(path)
    assert "\n" not in str(info.value)


def test_a_missing_markets_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"execution.markets_file .*nope.csv does not exist"):
        market_rules(fake_cfg(tmp_path, tmp_path / "nope.csv"), ["A/B"])
