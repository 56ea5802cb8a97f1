"""Perpetual futures over ccxt (``data=ccxt data.market=perp``): funding history and the REST hosts.

**Funding.** ``fetchFundingRateHistory(symbol, since, limit, {"until": ...})`` returns ccxt's
funding rate history structures, ``{symbol, fundingRate, timestamp, datetime, info}``, oldest
first; ``fundingRate`` is the fraction paid per funding interval at ``timestamp`` (positive: longs
pay shorts). The walk is the bars' walk (:meth:`engine.data.sources.ccxt_source.CcxtSource.ohlcv_fetch`):
forward from ``start`` by pages of ``data.limit``, each page continuing 1 ms after its last funding
time (funding times are irregular, so there is no grid step), rows before ``since`` ignored, an
empty page asked once more before it is taken as the end; duplicates keep the copy served last;
every request goes through the source's retries (429/418 with ``Retry-After``, 5xx, timeouts).
The mark price at the funding time is taken from the exchange's own record where it gives one
(Binance's ``fundingRate`` rows carry ``markPrice``: ``info['markPrice']``), else null.

**Hosts.** A perpetual's endpoints live on other hosts than spot's (Binance: ``fapi.binance.com``),
so with ``data.market=perp`` ``data.api_url``'s scheme, host and port replace those of every REST
URL of the exchange, their paths kept (:func:`api_origin_apply`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any  # Any: _mark reads the exchange's raw JSON record
from urllib.parse import urlsplit

import polars as pl

from engine.core.errors import DataError
from engine.core.jsontypes import Record

if TYPE_CHECKING:
    import ccxt

    from engine.data.sources.ccxt_source import CcxtSource


def api_origin_apply(exchange: ccxt.Exchange, api_url: str) -> None:
    """Point every REST URL of ``exchange`` at ``api_url``'s scheme, host and port, keeping each path."""
    parts = urlsplit(api_url)
    if not parts.scheme or not parts.netloc:
        msg = f"data.api_url={api_url!r} is not a URL: give scheme and host, e.g. http://127.0.0.1:8080"
        raise DataError(msg)
    origin = f"{parts.scheme}://{parts.netloc}"

    def moved(url: object) -> object:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return url
        u = urlsplit(url)
        return origin + u.path + (f"?{u.query}" if u.query else "")

    api = exchange.urls.get("api")
    if isinstance(api, str):
        exchange.urls["api"] = moved(api)
    elif isinstance(api, dict):
        exchange.urls["api"] = {k: moved(v) for k, v in api.items()}
    else:
        msg = f"cannot apply data.api_url to ccxt {exchange.id}: its urls['api'] is {type(api).__name__}; remove data.api_url"
        raise DataError(msg)


def _mark(info: Any) -> float | None:  # Any: the exchange's raw JSON record
    value = info.get("markPrice") if isinstance(info, dict) else None
    try:
        x = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return x if x is not None and x > 0 else None


def funding_history(src: CcxtSource, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
    """Return the funding of the perpetual ``symbol`` with funding time in ``[start_ms, end_ms)``.

    None when the exchange has no funding history endpoint (``has['fetchFundingRateHistory']``).
    """
    src._market_check(symbol)
    exchange = src.exchange
    if not exchange.has.get("fetchFundingRateHistory"):
        return None
    unified = src.unified(symbol)
    stop = min(end_ms, int(src.clock_ms()))
    rows: list[tuple[int, float, float | None]] = []
    since, empties = start_ms, 0
    while since < stop:

        def page_fetch(s: int = since) -> list[Record]:  # ccxt's funding structures (JSON)
            page: list[Record] = exchange.fetch_funding_rate_history(unified, s, src.cfg.limit, {"until": stop - 1})
            return page

        page = [
            r
            for r in src._call(f"fetch_funding_rate_history since {since}", page_fetch, symbol)
            if int(r["timestamp"]) >= since
        ]
        if not page:
            empties += 1
            if empties > src.empty_page_retries:
                break
            src.sleep(src.backoff_base_s)  # one empty answer may be a glitch; two mean no more funding
            continue
        empties = 0
        rows.extend((int(r["timestamp"]), float(r["fundingRate"]), _mark(r.get("info"))) for r in page)
        since = max(int(r["timestamp"]) for r in page) + 1
    frame = pl.DataFrame(rows, schema={"time": pl.Int64, "rate": pl.Float64, "mark": pl.Float64}, orient="row")
    return frame.filter((pl.col("time") >= start_ms) & (pl.col("time") < stop))
