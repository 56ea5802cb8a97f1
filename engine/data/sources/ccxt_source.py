"""Bars from any ccxt exchange over its public REST API (no API keys).

Pagination walks forward from ``start`` with ``fetch_ohlcv(symbol, timeframe, since, limit)``:
each page continues at its last bar + one interval, so a short page in the middle of history is
not mistaken for the end. The walk ends when the next bar would open at or after ``end`` or after
the exchange's present, or when an empty page is confirmed by a second ask. Bars before ``since``
are ignored, so every page that counts moves ``since`` forward by at least one interval and the
loop is bounded by the number of bars in the range plus the empty-page re-asks.

Transient failures (ccxt's ``OperationFailed`` branch: 429/418 ``RateLimitExceeded`` /
``DDoSProtection``, 5xx ``ExchangeNotAvailable``, ``RequestTimeout``, other ``NetworkError``) are
retried with exponential backoff; a ``Retry-After`` header (Binance sends one with 429 and 418)
sets the wait instead. Rejections (ccxt's ``ExchangeError`` branch: bad symbol, bad interval) fail
at once. Either way the caller gets one :class:`~engine.core.errors.DataError` line naming the
exchange, symbol and interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import ccxt
import polars as pl

from engine.config import CcxtData, FilesData, SyntheticData
from engine.core.errors import DataError, EngineError
from engine.core.jsontypes import Record
from engine.core.symbols import symbol_check
from engine.core.units import interval_ms
from engine.data.bars import BAR_SCHEMA
from engine.data.markets import MODE_NAMES, MarketRow, ccxt_row
from engine.data.sources.base import DataSource

log = logging.getLogger(__name__)
T = TypeVar("T")

# ccxt splits its errors in two: OperationFailed (the request failed in transit or on the
# exchange's side; the same request may succeed later) and ExchangeError (the exchange rejected
# it; repeating cannot help). NetworkError and its 429/418/5xx/timeout subclasses sit under the first.
RETRYABLE: tuple[type[Exception], ...] = (ccxt.OperationFailed,)


def exchange_create(cfg: CcxtData) -> ccxt.Exchange:
    """Return a synchronous ccxt exchange for public spot data, configured from ``cfg``."""
    klass = getattr(ccxt, cfg.exchange, None)
    if cfg.exchange not in ccxt.exchanges or not isinstance(klass, type):
        msg = f"unknown ccxt exchange {cfg.exchange!r}: set data.exchange to a ccxt id such as binance, kraken, okx"
        raise DataError(msg)
    config: dict[str, object] = {
        "timeout": cfg.timeout_ms,
        "enableRateLimit": True,
        # Spot only: otherwise binance-like exchanges also load their futures and options markets.
        "options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}},
    }
    if cfg.market == "perp":  # linear perpetuals only (settled in the quote): ccxt's swap markets
        config["options"] = {"defaultType": "swap", "fetchMarkets": {"types": ["linear"]}}
    if cfg.rate_limit_ms is not None:
        config["rateLimit"] = cfg.rate_limit_ms
        config["enableRateLimit"] = cfg.rate_limit_ms > 0
    exchange: ccxt.Exchange = klass(config)
    if cfg.api_url and cfg.market == "perp":
        from engine.data.sources.ccxt_funding import api_origin_apply

        api_origin_apply(exchange, cfg.api_url)
    elif cfg.api_url:
        api_url_apply(exchange, cfg.api_url)
    return exchange


def api_url_apply(exchange: ccxt.Exchange, api_url: str) -> None:
    """Point the exchange's public REST base (and every URL that shares it) at ``api_url``.

    ccxt builds each request as ``urls['api'][<api name>] + '/' + path``; public market data of
    most exchanges uses the ``public`` entry (binance: ``https://api.binance.com/api/v3``, which
    serves ``exchangeInfo`` and ``klines``). Entries that start with the same base (binance's
    ``private``) are rewritten too, so no spot request can reach the real host; entries on other
    hosts (binance's ``fapiPublic``, ``sapi``) are left alone because their paths differ.
    """
    api = exchange.urls.get("api")
    name = exchange.id
    if isinstance(api, str):
        exchange.urls["api"] = api_url.rstrip("/")
        return
    if not isinstance(api, dict):
        msg = f"cannot apply data.api_url to ccxt {name}: its urls['api'] is {type(api).__name__}; remove data.api_url"
        raise DataError(msg)
    key = next((k for k in ("public", "rest", "spot") if isinstance(api.get(k), str)), None)
    if key is None:
        msg = (
            f"cannot apply data.api_url to ccxt {name}: urls['api'] has no 'public' or 'rest' URL "
            f"(keys: {', '.join(api)}); remove data.api_url for this exchange"
        )
        raise DataError(msg)
    old = str(api[key]).rstrip("/")
    new = api_url.rstrip("/")
    exchange.urls["api"] = {
        k: (new + v[len(old) :] if isinstance(v, str) and v.startswith(old) else v) for k, v in api.items()
    }


class CcxtSource(DataSource):
    """OHLCV bars from a ccxt exchange, paginated, deduplicated and retried.

    Parameters
    ----------
    cfg
        The ``data`` config (exchange id, symbols or quote, page size, retries, timeout, URL).
    sleep
        Called with seconds to wait between retries; tests pass a recorder so they never wait.
    backoff_base_s
        First retry wait; attempt ``k`` waits ``backoff_base_s * 2**k`` (capped at ``backoff_max_s``).
    clock_ms
        The present in epoch ms (defaults to the local clock); decides which bar is still forming.

    Attributes
    ----------
    retry_after_max_s
        A ``Retry-After`` longer than this (Binance IP bans last minutes to days) fails the fetch at
        once instead of blocking the run.
    empty_page_retries
        Times an empty page before ``end`` is asked again before it is taken as the end of data.

    Examples
    --------
    >>> from engine.config import CcxtData, FilesData, SyntheticData
    >>> src = CcxtSource(CcxtData(exchange="binance", symbols=["BTC/USDT"]))  # doctest: +SKIP
    >>> src.ohlcv_fetch("BTC/USDT", "4h", 1704067200000, 1704153600000).height  # doctest: +SKIP
    6
    """

    name = "ccxt"
    run_ingest = "none"
    range_from_config = True
    market_rules_stored = True
    funding_fix = "python -m engine task=ingest data=ccxt data.market=perp"
    unreadable_fix = "delete the file it names and rerun `python -m engine task=ingest data=ccxt ...` to refetch it"

    @classmethod
    def from_config(cls, cfg: SyntheticData | CcxtData | FilesData) -> CcxtSource:
        """Return the source of the exchange ``cfg.exchange``."""
        assert isinstance(cfg, CcxtData)
        return cls(cfg)

    @classmethod
    def label(cls, cfg: SyntheticData | CcxtData | FilesData) -> str:
        """Return ``ccxt exchange ID`` (and ``via URL`` with ``data.api_url``)."""
        assert isinstance(cfg, CcxtData)
        via = f" via {cfg.api_url}" if cfg.api_url else ""
        return f"ccxt exchange {cfg.exchange}{via}"

    def __init__(
        self,
        cfg: CcxtData,
        *,
        sleep: Callable[[float], None] = time.sleep,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.market = cfg.market
        self.exchange = exchange_create(cfg)
        self.name = f"ccxt {cfg.exchange}"
        self.sleep = sleep
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.clock_ms = clock_ms if clock_ms is not None else self.exchange.milliseconds
        self.retry_after_max_s = 300.0
        self.empty_page_retries = 1
        self._markets: dict[str, Record] | None = None  # ccxt's market records, the exchange's JSON

    def identity(self) -> dict[str, object]:
        """Exchange, REST host (no credentials, path or query) and quote."""
        from urllib.parse import urlsplit

        host = None
        if self.cfg.api_url:
            parts = urlsplit(self.cfg.api_url)
            host = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return self.market_identity(
            {"source": "ccxt", "exchange": self.cfg.exchange, "api_host": host, "quote": self.cfg.quote}
        )

    def close(self) -> None:
        """Close the HTTP session."""
        self.exchange.close()

    def __enter__(self) -> CcxtSource:
        """Return the source itself (its HTTP session is closed on exit)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the HTTP session."""
        self.close()

    def _label(self, symbol: str | None = None, interval: str | None = None) -> str:
        return " ".join(p for p in (f"ccxt {self.exchange.id}", symbol, interval) if p)

    def _retry_after_s(self, exc: Exception) -> float | None:
        """Seconds from the Retry-After header of the failed response, if ccxt kept one."""
        if not isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
            return None
        # ccxt stores the headers before it raises on the HTTP status, so on a 429/418 they are
        # the failed response's own (cleared before each call, so never a stale earlier value).
        headers = self.exchange.last_response_headers or {}
        value = headers.get("Retry-After") if hasattr(headers, "get") else None
        try:
            return max(0.0, float(value)) if value is not None else None
        except ValueError:
            return None

    def _call(self, what: str, fn: Callable[[], T], symbol: str | None = None, interval: str | None = None) -> T:
        """Run one exchange request with bounded retries; map every ccxt failure to DataError."""
        retries = self.cfg.max_retries
        for attempt in range(retries + 1):
            self.exchange.last_response_headers = None
            try:
                return fn()
            except RETRYABLE as exc:
                cause = _cause(exc)
                wait = self._retry_after_s(exc)
                if wait is not None and wait > self.retry_after_max_s:
                    msg = (
                        f"{self._label(symbol, interval)}: {cause} with Retry-After {wait:.0f} s "
                        f"(an IP ban?); rerun after that time, only missing ranges are fetched"
                    )
                    raise DataError(msg) from exc
                if attempt == retries:
                    msg = (
                        f"{self._label(symbol, interval)}: {cause} after {retries} retries; "
                        "rerun later (only missing ranges are fetched), or raise data.max_retries "
                        "or data.rate_limit_ms"
                    )
                    raise DataError(msg) from exc
                if wait is None:
                    wait = min(self.backoff_base_s * 2**attempt, self.backoff_max_s)
                log.info(
                    "%s: %s on %s, retry %d/%d in %.2f s",
                    self._label(symbol, interval),
                    cause,
                    what,
                    attempt + 1,
                    retries,
                    wait,
                )
                self.sleep(wait)
            except ccxt.BaseError as exc:
                msg = (
                    f"{self._label(symbol, interval)}: {what} rejected: {_cause(exc)}; "
                    "check the symbol, interval and data.exchange"
                )
                raise DataError(msg) from exc
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def markets(self) -> dict[str, Record]:
        """Return the exchange's spot markets by unified symbol (loaded once)."""
        if self._markets is None:
            self._markets = self._call("load_markets", self.exchange.load_markets)
        return self._markets

    def unified(self, symbol: str) -> str:
        """Return the ccxt symbol of ``symbol``: itself on spot, ``BASE/QUOTE:QUOTE`` (the linear perpetual) on perp."""
        return f"{symbol}:{symbol.split('/')[1]}" if self.cfg.market == "perp" else symbol

    def _market_check(self, symbol: str) -> None:
        symbol_check(symbol)
        if self.unified(symbol) not in self.markets():
            msg = (
                f"unknown symbol {symbol!r} on ccxt exchange {self.exchange.id}: "
                "fix data.symbols (spot markets as BASE/QUOTE, e.g. 'BTC/USDT')"
            )
            raise DataError(msg)

    def symbols(self) -> list[str]:
        """Return the configured symbols (each checked to exist), else every spot market in ``quote``.

        Inactive (delisted) markets are included: a universe of today's survivors only would
        overstate a backtest. The ingest keeps those whose history the exchange still serves and
        names them (:func:`engine.data.markets.markets_record`).
        """
        if self.cfg.symbols:
            for s in self.cfg.symbols:
                self._market_check(s)
            return list(self.cfg.symbols)
        return _quoted_symbols(self.markets(), self.cfg.market == "perp", self.cfg.quote, self._label())

    def intervals(self) -> tuple[str, ...]:
        """Return the exchange's timeframes that the bar contract supports (m/h/d/w), finest first."""
        usable = []
        for tf in self.exchange.timeframes or {}:
            try:
                usable.append((interval_ms(tf), tf))
            except EngineError:
                continue  # e.g. '1s' and '1M' (month): not a fixed grid the lakehouse supports
        return tuple(tf for _, tf in sorted(usable))

    def _bar_open_now(self, interval: str) -> int:
        step = interval_ms(interval)
        return self.clock_ms() // step * step

    def ohlcv_fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        """Return the bars of ``symbol`` served for ``[start_ms, end_ms)``, in the order served.

        The walk stops before the still-forming bar; :meth:`ohlcv_load` keeps only closed bars in the
        span and validates them like every backend's (a bar served twice with other values is an
        error, an identical copy is dropped with a warning).
        """
        self._market_check(symbol)
        inactive = self.markets()[self.unified(symbol)].get("active") is False
        if interval not in self.intervals():
            offered = ", ".join(self.intervals())
            msg = f"{self._label(symbol, interval)}: interval not offered by the exchange; use one of {offered}"
            raise DataError(msg)
        stop = min(end_ms, self._bar_open_now(interval))
        return _bars_frame(_ohlcv_walk(self, symbol, interval, start_ms, stop, inactive))

    def funding_fetch(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        """Funding history of the perpetual ``symbol`` (``fetchFundingRateHistory``); None on spot."""
        if self.cfg.market != "perp":
            return None
        from engine.data.sources.ccxt_funding import funding_history

        return funding_history(self, symbol, start_ms, end_ms)

    def covered_until(self, end_ms: int, interval: str) -> int:
        """``end_ms`` capped at the open time of the still-forming ``interval`` bar."""
        return min(end_ms, self._bar_open_now(interval))

    def market_rows(self, symbols: Sequence[str]) -> tuple[dict[str, MarketRow], dict[str, object]]:
        """Return the exchange's minimum notional, amount step, price tick and active flag of ``symbols``."""
        markets = self.markets()
        mode = int(self.exchange.precisionMode)
        rows = {s: ccxt_row(s, markets[self.unified(s)], mode) for s in symbols if self.unified(s) in markets}
        meta: dict[str, object] = {"exchange": self.exchange.id, "precision_mode": MODE_NAMES.get(mode, str(mode))}
        return rows, meta


def _quoted_symbols(markets: dict[str, Record], perp: bool, quote: str, label: str) -> list[str]:
    """Return the symbols of the spot (``perp``: linear perpetual) ``markets`` quoted in ``quote``, sorted.

    A perpetual ``BASE/QUOTE:QUOTE`` (settled in ``quote``) is named ``BASE/QUOTE``; a market whose
    name the lakehouse does not accept is skipped (logged at debug under ``label``).
    """
    found = []
    for symbol, m in markets.items():
        if not (m.get("swap" if perp else "spot") and m.get("quote") == quote):
            continue
        if perp:
            if not (m.get("linear") and m.get("settle") == quote):
                continue
            symbol = symbol.split(":")[0]
        try:
            found.append(symbol_check(symbol))
        except EngineError:
            log.debug("%s: skipping market %r, not a BASE/QUOTE symbol the lakehouse accepts", label, symbol)
    return sorted(found)


def _ohlcv_walk(
    src: CcxtSource, symbol: str, interval: str, start_ms: int, stop: int, inactive: bool
) -> list[list[float]]:
    """Return the ccxt OHLCV rows ``[ms, open, high, low, close, volume]`` of ``symbol`` from ``start_ms`` to ``stop``.

    The rows are walked page by page as the module docstring says. An ``inactive`` (delisted) market whose history the exchange no longer serves ends the walk.
    """
    step = interval_ms(interval)
    rows: list[list[float]] = []
    since = start_ms
    empties = 0
    while since < stop:
        limit = min(src.cfg.limit, -(-(stop - since) // step))

        def fetch_page(s: int = since, n: int = limit) -> list[list[float]]:
            page: list[list[float]] = src.exchange.fetch_ohlcv(src.unified(symbol), interval, s, n)  # untyped
            return page

        try:
            page = src._call(f"fetch_ohlcv since {since}", fetch_page, symbol, interval)
        except DataError as exc:
            # an exchange that no longer serves a delisted market's history rejects the request
            if not (inactive and isinstance(exc.__cause__, ccxt.ExchangeError)):
                raise
            log.info("%s: inactive market, history not served (%s)", src._label(symbol, interval), exc)
            break
        # Some exchanges ignore `since`; only bars at or after it move the walk forward.
        page = [r for r in page if int(r[0]) >= since]
        if not page:
            empties += 1
            if empties > src.empty_page_retries:
                break
            # One empty answer may be a glitch; two in a row mean no bars remain (delisted).
            src.sleep(src.backoff_base_s)
            continue
        empties = 0
        rows.extend(page)
        since = max(int(r[0]) for r in page) + step
    return rows


def _cause(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__} ({text[:160]})" if text else type(exc).__name__


def _bars_frame(rows: list[list[float]]) -> pl.DataFrame:
    """Turn ccxt OHLCV rows ``[ts, o, h, l, c, v]`` into bars, in the order served (duplicates kept)."""
    if not rows:
        return pl.DataFrame(schema=BAR_SCHEMA)
    cols = list(BAR_SCHEMA)
    frame = pl.DataFrame([r[:6] for r in rows], schema={c: pl.Float64 for c in cols}, orient="row")
    return frame.with_columns(pl.col("timestamp").cast(pl.Int64).cast(pl.Datetime("ms", "UTC")))
