"""report.html: content, escaping, determinism, and that the charts really render in a browser."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from helpers import browser_or_skip

from engine.config import RunConfig
from engine.config.exit_rules import ExitRules
from engine.outputs.report import CHART_IDS, report_write
from engine.run.result import ORDER_SCHEMA, BacktestResult
from engine.run.trades import TRADE_SCHEMA

T0 = datetime(2023, 1, 1, tzinfo=UTC)
INIT_CASH = 100_000.0
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "ADA/USDT", "XRP/USDT"]
N_WINDOWS = 6
HOLD = 7


def _metrics(exit_rules: bool) -> dict[str, Any]:
    return {
        "total_return": 0.123456,
        "cagr": 0.987654,
        "annual_volatility": 0.4321,
        "sharpe": 1.23456,
        "sortino": 2.34567,
        "max_drawdown": -0.087654,
        "calmar": 11.2679,
        "turnover": 51.234,
        "exposure": 0.9512,
        "n_orders": 60,
        "n_trades": 12,
        "win_rate": 0.5833,
        "avg_trade_return": 0.0123,
        "exits_by_kind": {
            "stop_loss": 3 if exit_rules else 0,
            "take_profit": 2 if exit_rules else 0,
            "trailing": 0,
            "max_holding": 0,
            "rebalance": 5 if exit_rules else 10,
            "end": 2,
            "delisted": 0,
        },
        "n_ambiguous_exits": 2 if exit_rules else 0,
        "total_return_optimistic": 0.145678 if exit_rules else None,
        "final_equity": 112_345.6,
        "n_windows": N_WINDOWS,
        "start": T0.isoformat(),
        "end": (T0 + timedelta(days=HOLD * N_WINDOWS)).isoformat(),
        "mode": "exit_rules" if exit_rules else "rebalance",
        "interval": "1d",
    }


def synthetic_result(exit_rules: bool, with_benchmark: bool = True) -> BacktestResult:
    """A small hand-built result: 6 weekly windows, 2 winners each, daily equity."""
    rng = np.random.default_rng(3)
    n = HOLD * N_WINDOWS
    ts = [T0 + timedelta(days=i + 1) for i in range(n)]
    equity = INIT_CASH * np.cumprod(1.0 + rng.normal(0.003, 0.02, n))
    equity_df = pl.DataFrame(
        {"timestamp": ts, "equity": equity, "exposure": np.full(n, 0.95)},
        schema={"timestamp": pl.Datetime("ms", "UTC"), "equity": pl.Float64, "exposure": pl.Float64},
    )
    bench = pl.DataFrame(
        {
            "timestamp": ts,
            "equal_weight": INIT_CASH * np.cumprod(1.0 + rng.normal(0.001, 0.02, n)),
            "btc_buy_hold": INIT_CASH * np.cumprod(1.0 + rng.normal(0.002, 0.03, n)),
        },
        schema={"timestamp": pl.Datetime("ms", "UTC"), "equal_weight": pl.Float64, "btc_buy_hold": pl.Float64},
    )
    trades, orders, winners, audit = [], [], [], []
    for w in range(N_WINDOWS):
        start = T0 + timedelta(days=HOLD * w)
        end = start + timedelta(days=HOLD)
        chosen = [SYMBOLS[w % 5], SYMBOLS[(w + 2) % 5]]
        for rank, offset in enumerate([0, 2, 1, 3, 4], start=1):
            sym = SYMBOLS[(w + offset) % 5]
            winners.append(
                {
                    "rank_date": (start - timedelta(days=1)).date(),
                    "symbol": sym,
                    "score": 2.0 - rank / 3,
                    "rank": rank,
                    "window": w,
                    "selected": rank <= 2,
                    "weight": 0.5 if rank <= 2 else None,
                }
            )
        kinds = ["stop_loss", "take_profit"] if exit_rules and w < 2 else ["rebalance", "rebalance"]
        if exit_rules and w == 2:
            kinds = ["stop_loss", "rebalance"]
        if w == N_WINDOWS - 1:
            kinds = ["end", "end"]
        for s, kind in zip(chosen, kinds, strict=True):
            ret = {"stop_loss": -0.05, "take_profit": 0.15}.get(kind, 0.02)
            exit_time = start + timedelta(days=3 if kind in ("stop_loss", "take_profit") else HOLD)
            trades.append(
                {
                    "symbol": s,
                    "entry_window": w,
                    "entry_time": start,
                    "entry_price": 100.0,
                    "exit_window": w,
                    "exit_time": exit_time,
                    "exit_price": 100.0 * (1 + ret),
                    "size": 1.0,
                    "fees": 0.2,
                    "pnl": 100.0 * ret - 0.2,
                    "return": ret,
                    "exit_kind": kind,
                    "ambiguous": exit_rules and w == 0,
                    "status": "open" if kind == "end" else "closed",
                }
            )
            orders.append(
                {
                    "window": w,
                    "timestamp": start,
                    "symbol": s,
                    "side": "buy",
                    "size": 1.0,
                    "price": 100.0,
                    "fees": 0.1,
                    "reason": "rebalance",
                    "ambiguous": False,
                }
            )
        audit.append(
            {
                "window": w,
                "rank_date": (start - timedelta(days=1)).date().isoformat(),
                "start": start.isoformat(),
                "end": end.isoformat(),
                "winners": chosen,
                "weights": dict.fromkeys(chosen, 0.5),
                "mode": "exit_rules" if exit_rules else "rebalance",
                "interval": "1d",
                "exit_rules": None,
                "exits": {"rebalance": 2},
                "ambiguous": 2 if w == 0 and exit_rules else 0,
            }
        )
    winners_df = pl.DataFrame(
        winners,
        schema={
            "rank_date": pl.Date,
            "symbol": pl.String,
            "score": pl.Float64,
            "rank": pl.Int64,
            "window": pl.Int64,
            "selected": pl.Boolean,
            "weight": pl.Float64,
        },
    )
    kwargs: dict[str, Any] = {
        "metrics": _metrics(exit_rules),
        "equity": equity_df,
        "orders": pl.DataFrame(orders, schema=ORDER_SCHEMA),
        "trades": pl.DataFrame(trades, schema=TRADE_SCHEMA),
        "winners": winners_df,
        "audit": audit,
        "timings": {},
        "data_files": [],
    }
    return BacktestResult(**kwargs, benchmark=bench if with_benchmark else bench.select("timestamp", "equal_weight"))


def _config(tmp_path: Path, exit_rules: bool) -> RunConfig:
    raw: dict[str, Any] = {"paths": {"lakehouse_dir": str(tmp_path / "lh"), "output_dir": str(tmp_path / "run")}}
    if exit_rules:
        raw["exit_rules"] = ExitRules(sl_stop=0.05, tp_stop=0.15).model_dump()
    return RunConfig.model_validate(raw)


def _write(tmp_path: Path, exit_rules: bool, **kw: Any) -> str:
    cfg = _config(tmp_path, exit_rules)
    out = Path(str(cfg.paths.output_dir))
    report_write(out, cfg, synthetic_result(exit_rules, **kw))
    path = out / "report.html"
    assert path.is_file()
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("exit_rules", [True, False])
def test_report_content(tmp_path: Path, exit_rules: bool) -> None:
    page = _write(tmp_path, exit_rules)
    for div_id in CHART_IDS:
        assert page.count(f'id="{div_id}"') == 1, div_id
    assert page.count("* plotly.js v") == 1
    assert page.count("window.PlotlyConfig") == 1
    # Offline: every script is inline (the bundle's only URL is the unused geo topojson default).
    assert not re.search(r"<script[^>]*\bsrc=", page)
    for text in (
        "12.35%",
        "98.77%",
        "43.21%",
        "1.23",
        "2.35",
        "-8.77%",
        "11.27",
        "51.23",
        "95.12%",
        "58.33%",
        "1.23%",
        "112,345.60",
        "100,000.00",
    ):
        assert f">{text}<" in page, text
    assert "Equal-weight universe" in page
    assert "BTC buy &amp; hold" in page
    sentence = (
        "2 exits were ambiguous (stop loss and take profit inside one bar): "
        "pessimistic (SL first) total return 12.35%, optimistic (TP first) 14.57%"
    )
    assert (sentence in page) is exit_rules
    assert ("exits were ambiguous" in page) is exit_rules
    assert ("stop loss 5.00%, take profit 15.00%" in page) is exit_rules
    assert "All 12 trades, most recent first." in page
    assert '<details id="config"><summary>Resolved config</summary>' in page
    assert "paths.output_dir" in page
    assert "ranking.top_n" in page


def test_report_ambiguity_zero_and_singular(tmp_path: Path) -> None:
    cfg = _config(tmp_path, True)
    result = synthetic_result(True)
    result.metrics.update(n_ambiguous_exits=1, total_return_optimistic=0.2)
    report_write(tmp_path / "a", cfg, result)
    page = (tmp_path / "a" / "report.html").read_text()
    assert "1 exit was ambiguous (stop loss and take profit inside one bar)" in page
    assert "optimistic (TP first) 20.00%" in page


def test_report_deterministic(tmp_path: Path) -> None:
    cfg = _config(tmp_path, True)
    report_write(tmp_path / "a", cfg, synthetic_result(True))
    report_write(tmp_path / "b", cfg, synthetic_result(True))
    a, b = ((tmp_path / d / "report.html").read_bytes() for d in ("a", "b"))
    assert a == b
    assert not list((tmp_path / "a").glob(".*tmp*"))


def test_report_escapes_and_truncates(tmp_path: Path) -> None:
    cfg = _config(tmp_path, False)
    result = synthetic_result(False, with_benchmark=False)
    many = pl.concat([result.trades] * 30).with_columns(pl.lit("<b>EVIL</b>/USDT").alias("symbol"))
    result = dataclasses.replace(result, trades=many)
    report_write(tmp_path / "r", cfg, result)
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<b>EVIL</b>" not in page
    assert "&lt;b&gt;EVIL&lt;/b&gt;/USDT" in page
    assert "The 200 most recent of 360 trades (by exit time)" in page
    assert page.count("EVIL") == 200
    assert "BTC buy" not in page


def test_report_empty_result(tmp_path: Path) -> None:
    cfg = _config(tmp_path, False)
    result = synthetic_result(False)
    result = dataclasses.replace(
        result,
        trades=pl.DataFrame(schema=TRADE_SCHEMA),
        orders=pl.DataFrame(schema=ORDER_SCHEMA),
        winners=result.winners.clear(),
        audit=[],
        metrics={k: None for k in result.metrics},
        benchmark=result.benchmark.clear(),
    )
    report_write(tmp_path / "r", cfg, result)
    page = (tmp_path / "r" / "report.html").read_text()
    assert "No trades." in page
    assert "no winners were selected" in page
    assert all(f'id="{d}"' in page for d in CHART_IDS)


# ---- browser ---------------------------------------------------------------------------------


def test_missing_browser_skips_or_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    # locally a missing browser skips, saying how to enable the test; CI (.ci/run) requires it
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.delenv("ENGINE_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        browser_or_skip()
    monkeypatch.setenv("ENGINE_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        browser_or_skip()


def chromium_cmd(binary: str, profile: Path, *args: str) -> list[str]:
    """Headless Chromium, offline and without first-run or background traffic."""
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
    ]


def rendered_dom(binary: str, page: Path, profile: Path, chart_ids: tuple[str, ...]) -> str:
    """The page's DOM as Chromium renders it, after checking plotly.js drew every chart."""
    dom = subprocess.run(
        chromium_cmd(binary, profile, "--dump-dom", page.as_uri()),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for div_id in chart_ids:
        match = re.search(rf'<div id="{div_id}"(.*?)</script>', dom, re.S)
        assert match, f"{div_id} missing from the rendered DOM"
        assert 'class="main-svg"' in match.group(1), f"{div_id} was not rendered by plotly.js"
    return dom


@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path: Path, browser: str) -> None:
    binary = browser
    _write(tmp_path, True)
    page = tmp_path / "run" / "report.html"
    rendered_dom(binary, page, tmp_path / "profile", CHART_IDS)
    shot = tmp_path / "shot.png"
    subprocess.run(
        chromium_cmd(binary, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()),
        capture_output=True,
        timeout=120,
        check=True,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 50_000


def test_an_intraday_report_names_its_base_bars() -> None:
    """On an hourly base the ratios come from the hourly closes (8,760 a year) and the stop
    comparison is against the 1h base bars, not 'daily' ones."""
    from engine.outputs.report_sections import _base_comparison_html, _marks_sentence

    daily = _metrics(True)
    assert (
        _marks_sentence(daily) == "Returns and ratios from daily marks, annualised over 365 days (365 periods a year)"
    )
    hourly = {**daily, "base_interval": "1h", "periods_per_year": 8760.0, "interval": "5m"}
    assert "from the 1h bars' closes" in _marks_sentence(hourly) and "8,760 periods a year" in _marks_sentence(hourly)
    hourly["base_bars"] = {
        "interval": "1h",
        "total_return": 0.1,
        "max_drawdown": -0.05,
        "n_stop_exits": 4,
        "n_ambiguous_exits": 1,
        "ambiguous_resolved_by_finer_bars": 1,
    }
    result = dataclasses.replace(synthetic_result(True), metrics=hourly)
    html = _base_comparison_html(result)
    text = re.sub(r"<[^>]+>", " ", html)  # what a reader sees (the section id stays daily-vs-fine)
    assert "Stops on 1h vs 5m bars" in text and "stops on 1h bars" in text and "daily" not in text


# ---- the data source, in the report and on the console --------------------------------------

SYNTHETIC_LABEL = "built-in synthetic universe (generated, not market data): 100 symbols, seed 7"


@pytest.mark.parametrize(
    ("data", "label"),
    [
        ({}, SYNTHETIC_LABEL),
        ({"source": "files", "path": "/srv/ohlcv"}, "your files in /srv/ohlcv"),
        ({"source": "ccxt", "exchange": "kraken"}, "ccxt exchange kraken"),
        (
            {"source": "ccxt", "exchange": "binance", "api_url": "http://user:s3cret@127.0.0.1:9/?apikey=k3y"},
            "ccxt exchange binance via http://***@127.0.0.1:9/?apikey=***",
        ),
    ],
)
def test_report_names_the_data_source(tmp_path: Path, data: dict[str, Any], label: str) -> None:
    cfg = _config(tmp_path, False)
    if data:
        cfg = RunConfig.model_validate({**cfg.model_dump(), "data": data})
    report_write(tmp_path / "r", cfg, synthetic_result(False))
    page = (tmp_path / "r" / "report.html").read_text()
    assert f'<tr><td class="k">Data</td><td>{label}</td></tr>' in page
    assert "s3cret" not in page and "k3y" not in page


@pytest.mark.parametrize("exit_rules", [True, False])
def test_console_names_the_data_and_the_optimistic_bound(
    tmp_path: Path, exit_rules: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.outputs.console import summary_print

    summary_print(_metrics(exit_rules), tmp_path, _config(tmp_path, exit_rules))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"data: {SYNTHETIC_LABEL}"
    # metrics.json's total_return_optimistic (0.145678) beside the count, as the report's sentence has it
    want = (
        "  ambiguous exits  2  (optimistic bound, TP first: total return +14.57%)"
        if exit_rules
        else "  ambiguous exits  0"
    )
    assert want in lines
