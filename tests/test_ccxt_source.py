"""CcxtSource against a local Binance-format server: real ccxt, no real exchange, no waiting.

Each fault test checks two things: the lakehouse ends up with exactly the generator's bars, and
the server saw the expected requests (how many, which one was repeated, the startTime walk).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from exchange_server import ExchangeServer
from polars.testing import assert_frame_equal

from engine.config import CcxtData
from engine.core.errors import DataError
from engine.core.units import interval_ms
from engine.data.ingest import IngestionService
from engine.data.lakehouse import Lakehouse
from engine.data.sources.ccxt_source import CcxtSource
from engine.data.sources.registry import source_from_config
from engine.data.sources.synthetic import SyntheticSource

GEN = SyntheticSource(7, 6, "2024-01-01", "2024-03-31")
DAY = 86_400_000
STEP = interval_ms("4h")
START = GEN.start_ms
END = START + 60 * DAY  # 360 bars of 4h: pages of 100 start at bar 0, 100, 200, 300
LATER = GEN.end_ms + 30 * DAY  # a present after the whole range: every bar is closed
BACKOFF = 0.01
RETRIES = 3


@pytest.fixture
def server() -> Iterator[ExchangeServer]:
    with ExchangeServer(GEN) as srv:
        yield srv


class Clock:
    """The present as the source sees it; tests move it."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def source_make(server: ExchangeServer, sleeps: list[float], clock: Clock | None = None, **cfg: object) -> CcxtSource:
    settings: dict[str, object] = {
        "exchange": "binance",
        "symbols": ["BTC/USDT", "ETH/USDT"],
        "api_url": server.api_url,
        "rate_limit_ms": 0,
        "limit": 100,
        "timeout_ms": 300,
        "max_retries": RETRIES,
    }
    settings.update(cfg)
    return CcxtSource(
        CcxtData.model_validate(settings),
        sleep=sleeps.append,
        backoff_base_s=BACKOFF,
        clock_ms=clock or Clock(LATER),
    )


def ingest(root: Path, src: CcxtSource, symbols: list[str], start: int = START, end: int = END) -> IngestionService:
    service = IngestionService(Lakehouse(root), src)
    service.fetch_mtf_for_candidates(symbols, ["4h"], start, end)
    return service


def expected(symbol: str, start: int = START, end: int = END) -> pl.DataFrame:
    return GEN.ohlcv_fetch(symbol, "4h", start, end)


def walk(server: ExchangeServer) -> list[int]:
    """startTime of each klines request, in bars of 4h after START."""
    return [(int(r.params["startTime"]) - START) // STEP for r in server.klines()]


@pytest.mark.parametrize(
    ("fault", "retry_after", "waits"),
    [
        ("429", 2, [2.0]),
        ("418", 7, [7.0]),
        ("429", None, [BACKOFF]),
        ("500", None, [BACKOFF]),
        ("503", None, [BACKOFF]),
        ("timeout", None, [BACKOFF]),
    ],
)
def test_transient_fault_retried_once(
    tmp_path: Path, server: ExchangeServer, fault: str, retry_after: int | None, waits: list[float]
) -> None:
    sleeps: list[float] = []
    server.fault(fault, retry_after=retry_after, sleep_s=1.0)
    with source_make(server, sleeps) as src:
        service = ingest(tmp_path, src, ["BTC/USDT"])
    assert_frame_equal(service.lakehouse.read("mtf", "4h", "BTC/USDT"), expected("BTC/USDT"))
    assert walk(server) == [0, 0, 100, 200, 300]
    first, retried = server.klines()[:2]
    assert first.params == retried.params
    assert sleeps == waits


def test_retries_back_off_exponentially(tmp_path: Path, server: ExchangeServer) -> None:
    sleeps: list[float] = []
    server.fault("500")
    server.fault("503")
    server.fault("429")
    with source_make(server, sleeps) as src:
        service = ingest(tmp_path, src, ["BTC/USDT"])
    assert_frame_equal(service.lakehouse.read("mtf", "4h", "BTC/USDT"), expected("BTC/USDT"))
    assert walk(server) == [0, 0, 0, 0, 100, 200, 300]
    assert sleeps == [BACKOFF, 2 * BACKOFF, 4 * BACKOFF]


def test_short_page_in_the_middle_is_not_the_end(tmp_path: Path, server: ExchangeServer) -> None:
    sleeps: list[float] = []
    server.fault("short")  # the first page holds 50 bars instead of 100
    with source_make(server, sleeps) as src:
        service = ingest(tmp_path, src, ["BTC/USDT"])
    assert_frame_equal(service.lakehouse.read("mtf", "4h", "BTC/USDT"), expected("BTC/USDT"))
    assert walk(server) == [0, 50, 150, 250, 350]
    assert [int(r.params["limit"]) for r in server.klines()] == [100, 100, 100, 100, 10]
    assert sleeps == []


def test_empty_page_before_the_end_is_asked_again(tmp_path: Path, server: ExchangeServer) -> None:
    sleeps: list[float] = []
    server.fault("empty")
    with source_make(server, sleeps) as src:
        service = ingest(tmp_path, src, ["BTC/USDT"])
    assert_frame_equal(service.lakehouse.read("mtf", "4h", "BTC/USDT"), expected("BTC/USDT"))
    assert walk(server) == [0, 0, 100, 200, 300]
    assert sleeps == [BACKOFF]


def test_empty_pages_for_good_end_the_fetch(tmp_path: Path, server: ExchangeServer) -> None:
    sleeps: list[float] = []
    server.fault("empty", count=2)  # what a delisted market answers
    with source_make(server, sleeps) as src:
        service = ingest(tmp_path, src, ["BTC/USDT"])
    assert service.lakehouse.read("mtf", "4h", "BTC/USDT").height == 0
    assert walk(server) == [0, 0]
    assert service.lakehouse.coverage("mtf", "4h", "BTC/USDT") == [(START, END)]


def test_duplicated_bars_are_dropped(tmp_path: Path, server: ExchangeServer) -> None:
    sleeps: list[float] = []
    server.fault("duplicate")  # the first page repeats its first 33 bars at its end
    with source_make(server, sleeps) as src:
        service = ingest(tmp_path, src, ["BTC/USDT"])
    assert_frame_equal(service.lakehouse.read("mtf", "4h", "BTC/USDT"), expected("BTC/USDT"))
    # ccxt sorts the page and keeps its first 100 rows (bars 0..66, 33 of them twice): the walk
    # resumes after the last bar received, so nothing is skipped.
    assert walk(server) == [0, 67, 167, 267]


def test_duplicate_that_differs_is_refused_like_every_backend(tmp_path: Path, server: ExchangeServer) -> None:
    """A bar served twice with other values is the fault every backend refuses (DataSource.ohlcv_load):
    the exchange's copy is not chosen silently (it once kept the copy served last)."""
    sleeps: list[float] = []
    server.fault("duplicate_changed")  # bar 0 again at the end of the page, volume doubled
    with source_make(server, sleeps) as src, pytest.raises(DataError) as info:
        ingest(tmp_path, src, ["BTC/USDT"])
    first = expected("BTC/USDT")["timestamp"][0]
    assert str(info.value).startswith(f"BTC/USDT 4h: duplicate timestamp with different values at {first} (2 bar(s))")
    assert Lakehouse(tmp_path).read("mtf", "4h", "BTC/USDT").height == 0  # nothing half-written


def test_out_of_order_bars_are_sorted(tmp_path: Path, server: ExchangeServer) -> None:
    sleeps: list[float] = []
    server.fault("out_of_order")
    with source_make(server, sleeps) as src:
        service = ingest(tmp_path, src, ["BTC/USDT"])
    assert_frame_equal(service.lakehouse.read("mtf", "4h", "BTC/USDT"), expected("BTC/USDT"))
    assert walk(server) == [0, 100, 200, 300]


def test_retries_exhausted_raise_one_line_data_error(tmp_path: Path, server: ExchangeServer) -> None:
    sleeps: list[float] = []
    server.fault("503", count=RETRIES + 1)
    with source_make(server, sleeps) as src, pytest.raises(DataError) as info:
        ingest(tmp_path, src, ["BTC/USDT"])
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("ccxt binance BTC/USDT 4h: ExchangeNotAvailable")
    assert f"after {RETRIES} retries; rerun later" in text
    assert walk(server) == [0] * (RETRIES + 1)
    assert sleeps == [BACKOFF * 2**k for k in range(RETRIES)]
    assert Lakehouse(tmp_path).coverage("mtf", "4h", "BTC/USDT") == []


def test_retry_after_beyond_the_cap_fails_at_once(server: ExchangeServer) -> None:
    sleeps: list[float] = []
    server.fault("418", retry_after=3600)
    with (
        source_make(server, sleeps) as src,
        pytest.raises(DataError, match=r"ccxt binance BTC/USDT 4h: .*Retry-After 3600"),
    ):
        src.ohlcv_fetch("BTC/USDT", "4h", START, END)
    assert len(server.klines()) == 1
    assert sleeps == []


def test_unknown_symbol_is_a_data_error(tmp_path: Path, server: ExchangeServer) -> None:
    sleeps: list[float] = []
    with source_make(server, sleeps, symbols=["BTC/USDT", "NOPE/USDT"]) as src:
        with pytest.raises(DataError, match=r"unknown symbol 'NOPE/USDT' on ccxt exchange binance") as info:
            src.symbols()
        assert "\n" not in str(info.value)
        with pytest.raises(DataError, match="NOPE/USDT"):
            ingest(tmp_path, src, ["NOPE/USDT"])
    assert server.klines() == []


def test_symbols_default_to_every_spot_market_in_quote_delisted_included(server: ExchangeServer) -> None:
    with source_make(server, [], symbols=[]) as src:
        # OLD/USDT (status BREAK) too: the ingest keeps it if the exchange serves its history; not ETH/BTC
        assert src.symbols() == sorted([*GEN.symbols(), "OLD/USDT"])
        assert src.intervals()[:3] == ("1m", "3m", "5m")
        assert "1M" not in src.intervals()
    assert [r.path for r in server.log] == ["/api/v3/exchangeInfo"]


def test_second_identical_ingest_makes_no_kline_request(tmp_path: Path, server: ExchangeServer) -> None:
    with source_make(server, []) as src:
        ingest(tmp_path, src, ["BTC/USDT", "ETH/USDT"])
        assert len(server.klines()) == 8
        server.clear()
        service = ingest(tmp_path, src, ["BTC/USDT", "ETH/USDT"])
    assert server.klines() == []
    for symbol in ("BTC/USDT", "ETH/USDT"):
        assert_frame_equal(service.lakehouse.read("mtf", "4h", symbol), expected(symbol))


def test_still_forming_bar_is_never_covered(tmp_path: Path) -> None:
    now = START + 30 * DAY + 5 * 3_600_000  # 1 h into the bar that opened at 04:00
    forming = now // STEP * STEP
    clock = Clock(now)
    with ExchangeServer(GEN, now_ms=now) as server, source_make(server, [], clock) as src:
        service = ingest(tmp_path, src, ["BTC/USDT"])
        lake = service.lakehouse
        assert lake.coverage("mtf", "4h", "BTC/USDT") == [(START, forming)]
        assert_frame_equal(lake.read("mtf", "4h", "BTC/USDT"), expected("BTC/USDT", START, forming))
        # The exchange served the forming bar; it must not be stored either (it would be final).
        assert int(server.klines()[-1].params["startTime"]) < forming

        server.clear()
        ingest(tmp_path, src, ["BTC/USDT"])
        assert server.klines() == []  # the forming bar still has not closed: nothing to ask

        clock.now_ms = server.state.now_ms = LATER
        ingest(tmp_path, src, ["BTC/USDT"])
        assert walk(server)[0] == (forming - START) // STEP
        assert_frame_equal(lake.read("mtf", "4h", "BTC/USDT"), expected("BTC/USDT"))
        assert lake.coverage("mtf", "4h", "BTC/USDT") == [(START, END)]


def test_universe_ingest_daily_bars(tmp_path: Path, server: ExchangeServer) -> None:
    with source_make(server, []) as src:
        service = IngestionService(Lakehouse(tmp_path), src)
        service.fetch_universe(["BTC/USDT", "ETH/USDT"], START, END)
    for symbol in ("BTC/USDT", "ETH/USDT"):
        assert_frame_equal(service.lakehouse.read("bars", "1d", symbol), GEN.ohlcv_fetch(symbol, "1d", START, END))
    assert [r.params["interval"] for r in server.klines()] == ["1d", "1d"]


def test_config_reaches_ccxt(server: ExchangeServer) -> None:
    cfg = CcxtData(api_url=server.api_url, rate_limit_ms=250, timeout_ms=1234)
    src = source_from_config(cfg)
    assert isinstance(src, CcxtSource)
    ex = src.exchange
    assert (ex.rateLimit, ex.enableRateLimit, ex.timeout) == (250, True, 1234)
    assert ex.urls["api"]["public"] == server.api_url
    assert ex.urls["api"]["private"] == server.api_url  # same base: no spot call can leave 127.0.0.1
    assert ex.urls["api"]["fapiPublic"].startswith("https://fapi.binance.com")
    src.close()
    default = CcxtSource(CcxtData())
    assert (default.exchange.enableRateLimit, default.exchange.rateLimit) == (True, 50)
    default.close()


def test_unknown_exchange_is_a_data_error() -> None:
    with pytest.raises(DataError, match="unknown ccxt exchange 'nosuchex'"):
        CcxtSource(CcxtData(exchange="nosuchex"))


def _files_holding(root: Path, secrets: tuple[str, ...]) -> dict[str, list[str]]:
    """Every file under ``root`` whose bytes contain one of ``secrets`` (binary files included)."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [s for s in secrets if s.encode() in data]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def test_no_secret_of_the_api_url_in_any_file_a_ccxt_ingest_writes(tmp_path: Path) -> None:
    """A failing ingest (retried, then given up) and a successful one (retried, then served), both with
    credentials in ``data.api_url``: the retry lines, the error, the configs Hydra copied, the
    lakehouse's files, the console: none holds the user's password or API key."""
    from helpers import engine_cli

    secrets = ("secretpw", "SECRETKEY")
    gen = SyntheticSource(3, 2, "2024-01-01", "2024-01-31")
    with ExchangeServer(gen) as srv:
        base = srv.api_url.replace("http://", "http://user:secretpw@")
        common = [
            "task=ingest",
            "data=ccxt",
            "data.start=2024-01-01",
            "data.end=2024-01-31",
            "data.rate_limit_ms=0",
            "data.max_retries=1",
            f"paths.lakehouse_dir={tmp_path / 'lh'}",
            f"paths.ledger={tmp_path / 'ledger.duckdb'}",
        ]
        # 1. fails: every request answers 503 (ccxt's message then holds the URL), retried once, given
        # up. The api key rides in the query, so the requests reach /api/v3 itself (endpoint "v3").
        srv.fault("503", count=10, endpoint="v3")
        failed = engine_cli(
            [*common, f"data.api_url='{base}?apikey=SECRETKEY'", f"hydra.run.dir={tmp_path / 'out' / 'failed'}"],
            cwd=tmp_path,
        )
        assert failed.returncode == 2, failed.stderr
        assert "Traceback" not in failed.stderr
        # 2. succeeds after a refused kline page
        srv.clear()
        with srv.state.lock:
            srv.state.faults.clear()
        srv.fault("503")
        ok = engine_cli([*common, f"data.api_url={base}", f"hydra.run.dir={tmp_path / 'out' / 'ok'}"], cwd=tmp_path)
        assert ok.returncode == 0, ok.stderr
        assert len(srv.klines()) >= 3  # the refusal was retried
    out = tmp_path / "out"
    logs = {name: (out / name / "engine.log").read_text() for name in ("failed", "ok")}
    # the retry lines are there, with the URL, its credentials masked
    for name, text in logs.items():
        assert "retry 1/1" in text, name
        assert "http://***@127.0.0.1" in text, name
    assert "apikey=***" in logs["failed"]
    assert (out / "failed" / "error.txt").is_file()
    assert (tmp_path / "lh").is_dir() and any((tmp_path / "lh").rglob("*.parquet"))
    assert _files_holding(tmp_path, secrets) == {}
    for proc in (failed, ok):
        assert not any(s in proc.stdout + proc.stderr for s in secrets)
