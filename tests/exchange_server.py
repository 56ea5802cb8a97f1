"""A local stand-in for Binance's spot public REST API, serving the synthetic generator's bars.

ccxt's ``binance`` class with ``options={"fetchMarkets": {"types": ["spot"]}}`` and no API keys
calls exactly two endpoints of ``urls["api"]["public"]`` (``https://api.binance.com/api/v3``):
``GET exchangeInfo`` on ``load_markets`` (``fetch_currencies`` and the margin-pair calls need
keys, so ccxt skips them) and ``GET klines`` on ``fetch_ohlcv``. Both are served here under
``/api/v3`` so a test points ccxt at ``server.api_url`` and nothing ever leaves 127.0.0.1.

Faults are queued with :meth:`ExchangeServer.fault` and consumed one per matching request, in
order; every request is logged (path, query parameters, arrival time) for the test to assert on.

Example
-------
>>> from engine.data.sources.synthetic import SyntheticSource
>>> gen = SyntheticSource(7, 4, "2024-01-01", "2024-03-31")
>>> with ExchangeServer(gen) as server:  # doctest: +SKIP
...     server.fault("429", retry_after=2)
...     # CcxtSource(CcxtData(api_url=server.api_url, ...)) now sees one 429, then real bars
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import polars as pl

from engine.core.units import interval_ms
from engine.data.sources.synthetic import SyntheticSource

API_PREFIX = "/api/v3"
FAPI_PREFIX = "/fapi/v1"
"""Binance's USD-M futures public API (``urls['api']['fapiPublic']``): exchangeInfo, klines, fundingRate."""
FUNDING_LIMIT_DEFAULT = 100
FUNDING_LIMIT_MAX = 1000
KLINES_LIMIT_DEFAULT = 500
KLINES_LIMIT_MAX = 1000
FAULT_KINDS = (
    "429",
    "418",
    "500",
    "503",
    "timeout",
    "short",
    "empty",
    "duplicate",
    "duplicate_changed",
    "out_of_order",
)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it."""

    path: str
    params: dict[str, str]
    at: float


@dataclass
class Fault:
    """A misbehaviour applied to the next request whose path ends with ``endpoint``."""

    kind: str
    endpoint: str = "klines"
    retry_after: int | None = None
    sleep_s: float = 2.0


@dataclass
class _State:
    gen: SyntheticSource
    now_ms: int | None
    markets: list[dict[str, Any]]
    delisted: dict[str, int] = field(default_factory=dict)
    perp_markets: list[dict[str, Any]] = field(default_factory=list)
    funding: dict[str, Any] = field(default_factory=dict)  # symbol -> polars frame time, rate, mark
    mark_prices: bool = True
    log: list[RequestRecord] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


RULES_DEFAULT = {"tickSize": "0.00000001", "stepSize": "0.00001000", "minNotional": "5.00000000"}
"""Binance's PRICE_FILTER tick, LOT_SIZE step and NOTIONAL minimum of every market (``rules`` overrides them)."""


def _market(symbol: str, status: str = "TRADING", rules: dict[str, str] | None = None) -> dict[str, Any]:
    base, quote = symbol.split("/")
    r = {**RULES_DEFAULT, **(rules or {})}
    return {
        "symbol": base + quote,
        "status": status,
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"],
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.00000001",
                "maxPrice": "1000000.00000000",
                "tickSize": r["tickSize"],
            },
            {"filterType": "LOT_SIZE", "minQty": r["stepSize"], "maxQty": "9000.00000000", "stepSize": r["stepSize"]},
            {
                "filterType": "NOTIONAL",
                "minNotional": r["minNotional"],
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": ["SPOT"],
    }


def _perp_market(symbol: str, status: str = "TRADING", rules: dict[str, str] | None = None) -> dict[str, Any]:
    """A USD-M perpetual of Binance's fapi exchangeInfo (ccxt reads it as ``BASE/QUOTE:QUOTE``, linear)."""
    m = _market(symbol, status, rules)
    base, quote = symbol.split("/")
    m.pop("isSpotTradingAllowed")
    m.pop("permissions")
    return {
        **m,
        "pair": base + quote,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "contractStatus": status,
        "marginAsset": quote,
        "pricePrecision": 8,
        "quantityPrecision": 5,
        "underlyingType": "COIN",
    }


def _num(x: float) -> str:
    # repr round-trips a float64 exactly, so ccxt's float(str) gives back the generator's value.
    return repr(float(x))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log (the request log is kept in memory)."""

    def do_GET(self) -> None:
        """Serve exchangeInfo and klines, applying the next queued fault that matches."""
        state = self.server.state
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query))
        with state.lock:
            state.log.append(RequestRecord(url.path, params, time.monotonic()))
            fault = None
            if state.faults and url.path.endswith("/" + state.faults[0].endpoint):
                fault = state.faults.popleft()
        # A client that gave up (its timeout fired) has closed the socket: nothing left to answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._serve(url.path, params, fault)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None, *, text: bool = False) -> None:
        payload = (body if text else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if text else "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _serve(self, path: str, params: dict[str, str], fault: Fault | None) -> None:
        state = self.server.state
        kind = fault.kind if fault else None
        retry = {"Retry-After": str(fault.retry_after)} if fault and fault.retry_after is not None else {}
        if kind == "429":
            msg = "Too much request weight used; current limit is 6000 request weight per 1 MINUTE."
            return self._send(429, {"code": -1003, "msg": msg}, retry)
        if kind == "418":
            return self._send(
                418, {"code": -1003, "msg": "Way too much request weight used; IP banned until later."}, retry
            )
        if kind == "500":
            msg = "Internal error; unable to process your request. Please try your request again."
            return self._send(500, {"code": -1001, "msg": msg})
        if kind == "503":
            # What a load balancer in front of the API answers: an HTML page, not Binance's JSON.
            return self._send(503, "<html><body>503 Service Unavailable</body></html>", text=True)
        if kind == "timeout" and fault is not None:
            state.stop.wait(fault.sleep_s)
        if path == f"{API_PREFIX}/exchangeInfo":
            server_time = state.now_ms if state.now_ms is not None else int(time.time() * 1000)
            return self._send(
                200,
                {
                    "timezone": "UTC",
                    "serverTime": server_time,
                    "rateLimits": [],
                    "exchangeFilters": [],
                    "symbols": state.markets,
                },
            )
        if path == f"{API_PREFIX}/klines" or path == f"{FAPI_PREFIX}/klines":
            return self._klines(params, kind)
        if path == f"{FAPI_PREFIX}/exchangeInfo":
            server_time = state.now_ms if state.now_ms is not None else int(time.time() * 1000)
            body = {"timezone": "UTC", "serverTime": server_time, "rateLimits": [], "exchangeFilters": []}
            return self._send(200, {**body, "assets": [], "symbols": state.perp_markets})
        if path == f"{FAPI_PREFIX}/fundingRate":
            return self._funding(params, kind)
        return self._send(404, {"code": -1, "msg": f"unknown endpoint {path}"})

    def _klines(self, params: dict[str, str], kind: str | None) -> None:
        state = self.server.state
        by_id = {s.replace("/", ""): s for s in state.gen.symbols()}
        symbol = by_id.get(params.get("symbol", ""))
        if symbol is None:
            return self._send(400, {"code": -1121, "msg": "Invalid symbol."})
        interval = params.get("interval", "")
        if interval not in state.gen.intervals():
            return self._send(400, {"code": -1120, "msg": "Invalid interval."})
        step = interval_ms(interval)
        limit = min(int(params.get("limit", KLINES_LIMIT_DEFAULT)), KLINES_LIMIT_MAX)
        now = state.now_ms if state.now_ms is not None else state.gen.end_ms
        hi = min(int(params["endTime"]), now) if "endTime" in params else now
        hi = min(hi, state.delisted.get(symbol, hi))
        bars = state.gen.ohlcv_fetch(symbol, interval, int(params.get("startTime", 0)), hi + 1)
        # Binance: with startTime the first `limit` bars from it, without it the latest `limit`.
        bars = bars.head(limit) if "startTime" in params else bars.tail(limit)
        rows = [
            [
                t,
                _num(o),
                _num(h),
                _num(lo),
                _num(c),
                _num(v),
                t + step - 1,
                _num(v * c),
                100,
                _num(v / 2),
                _num(v * c / 2),
                "0",
            ]
            for t, o, h, lo, c, v in bars.with_columns(pl.col("timestamp").dt.epoch("ms")).iter_rows()
        ]
        if kind == "short":
            rows = rows[: max(1, len(rows) // 2)]
        elif kind == "empty":
            rows = []
        elif kind == "duplicate":
            rows = rows + rows[: max(1, len(rows) // 3)]
        elif kind == "duplicate_changed" and rows:
            changed = list(rows[0])
            changed[5] = _num(float(changed[5]) * 2.0)
            rows = [*rows, changed]
        elif kind == "out_of_order":
            rows = rows[::-1]
        return self._send(200, rows)

    def _funding(self, params: dict[str, str], kind: str | None) -> None:
        """Binance's fundingRate: with startTime the first ``limit`` records from it (to endTime), else the latest."""
        state = self.server.state
        by_id = {s.replace("/", ""): s for s in state.funding}
        symbol = by_id.get(params.get("symbol", ""))
        if symbol is None:
            return self._send(400, {"code": -1121, "msg": "Invalid symbol."})
        limit = min(int(params.get("limit", FUNDING_LIMIT_DEFAULT)), FUNDING_LIMIT_MAX)
        now = state.now_ms if state.now_ms is not None else state.gen.end_ms
        hi = min(int(params["endTime"]), now) if "endTime" in params else now
        hi = min(hi, state.delisted.get(symbol, hi))  # a delisted perpetual's funding ends with its klines
        if state.funding[symbol] is None:
            from engine.data.sources.funding_gen import funding_generate

            index = state.gen.symbols().index(symbol)
            state.funding[symbol] = funding_generate(state.gen.path(symbol), state.gen.seed, index, 0, 2**62)
        frame = state.funding[symbol].filter(
            (pl.col("time") >= int(params.get("startTime", 0))) & (pl.col("time") <= hi)
        )
        frame = frame.head(limit) if "startTime" in params else frame.tail(limit)
        rows = [
            {
                "symbol": params["symbol"],
                "fundingTime": t,
                "fundingRate": _num(r),
                "markPrice": _num(m) if state.mark_prices and m is not None else "",
            }
            for t, r, m in frame.select("time", "rate", "mark").iter_rows()
        ]
        if kind == "short":
            rows = rows[: max(1, len(rows) // 2)]
        elif kind == "empty":
            rows = []
        elif kind == "duplicate":
            rows = rows + rows[: max(1, len(rows) // 3)]
        elif kind == "duplicate_changed" and rows:
            rows = [*rows, {**rows[0], "fundingRate": _num(float(rows[0]["fundingRate"]) * 2.0)}]
        elif kind == "out_of_order":
            rows = rows[::-1]
        return self._send(200, rows)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Drop errors of connections the client abandoned instead of printing tracebacks."""


class ExchangeServer:
    """Binance-format spot REST server on 127.0.0.1 (random free port), used as a context manager.

    Parameters
    ----------
    gen
        The generator whose bars are served; its symbols are listed as TRADING spot markets, and as
        USD-M perpetuals on ``/fapi/v1`` (exchangeInfo, klines: the same bars, fundingRate).
    now_ms
        The exchange's clock: bars opening after it are not served (the bar containing it is, as
        the still-forming bar). ``None`` serves the generator's whole range.
    extra_markets
        More ``(symbol, status)`` markets for exchangeInfo only (e.g. ``("OLD/USDT", "BREAK")``).
    delisted
        Generator symbols listed with status BREAK whose klines end at the given open time (epoch ms):
        a delisted market whose history the exchange still serves.
    rules
        Per symbol, the ``tickSize``, ``stepSize`` or ``minNotional`` that replace :data:`RULES_DEFAULT`.
    funding
        Per symbol, a polars frame ``time, rate, mark`` served by ``/fapi/v1/fundingRate`` (Binance's
        rows ``symbol, fundingTime, fundingRate, markPrice``); None: the generator's funding.
    mark_prices
        False: ``markPrice`` is served empty (``""``), as Binance does for its oldest records.
    """

    def __init__(
        self,
        gen: SyntheticSource,
        *,
        now_ms: int | None = None,
        extra_markets: tuple[tuple[str, str], ...] = (("ETH/BTC", "TRADING"), ("OLD/USDT", "BREAK")),
        delisted: dict[str, int] | None = None,
        rules: dict[str, dict[str, str]] | None = None,
        funding: dict[str, Any] | None = None,
        mark_prices: bool = True,
    ) -> None:
        delisted = dict(delisted or {})
        rules = rules or {}
        markets = [_market(s, "BREAK" if s in delisted else "TRADING", rules.get(s)) for s in gen.symbols()]
        markets += [_market(s, status, rules.get(s)) for s, status in extra_markets]
        self.state = _State(gen=gen, now_ms=now_ms, markets=markets, delisted=delisted)
        # USD-M perpetuals: the generator's symbols, each with the funding given (default: the generator's, on demand)
        self.state.funding = dict(funding) if funding is not None else dict.fromkeys(gen.symbols())
        self.state.mark_prices = mark_prices
        self.state.perp_markets = [
            _perp_market(s, "BREAK" if s in delisted else "TRADING", rules.get(s)) for s in gen.symbols()
        ]
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ExchangeServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.state = self.state
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.stop.set()
        assert self._httpd is not None
        assert self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:54321``."""
        assert self._httpd is not None, "use the server as a context manager"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        """What replaces ccxt binance's ``urls['api']['public']`` (``.../api/v3``)."""
        return self.url + API_PREFIX

    def fault(
        self,
        kind: str,
        count: int = 1,
        *,
        endpoint: str = "klines",
        retry_after: int | None = None,
        sleep_s: float = 2.0,
    ) -> None:
        """Queue ``count`` faults of ``kind`` (one of :data:`FAULT_KINDS`) for the next matching requests."""
        if kind not in FAULT_KINDS:
            msg = f"unknown fault {kind!r}: use one of {FAULT_KINDS}"
            raise ValueError(msg)
        with self.state.lock:
            self.state.faults.extend(Fault(kind, endpoint, retry_after, sleep_s) for _ in range(count))

    @property
    def log(self) -> list[RequestRecord]:
        """Every request so far, in arrival order."""
        with self.state.lock:
            return list(self.state.log)

    def funding_requests(self) -> list[RequestRecord]:
        """The fundingRate requests so far."""
        return [r for r in self.log if r.path.endswith("/fundingRate")]

    def klines(self) -> list[RequestRecord]:
        """The klines requests so far."""
        return [r for r in self.log if r.path.endswith("/klines")]

    def clear(self) -> None:
        """Forget the request log (faults stay queued)."""
        with self.state.lock:
            self.state.log.clear()
