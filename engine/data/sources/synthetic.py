"""The offline default source: a deterministic generator of a crypto-like universe.

Each symbol is drawn as 1h bars from its own random stream (``seed``, symbol index), so one
symbol's fine bars can be regenerated alone and agree exactly with the daily bars written for the
whole universe: 4h and 1d are aggregated from the same 1h draw. The draw has a common market
factor with regime-switching drift, per-symbol beta, volatility clustering (an AR(1) log-volatility),
fat tails (Student-t, 4 degrees of freedom), trending and mean-reverting regimes, late listings,
early delistings and volume that rises with volatility and absolute returns.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl
from scipy.signal import lfilter

from engine.data.bars import interval_ms, symbol_check
from engine.data.sources.base import DataSource
from engine.errors import EngineError

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_T_DF = 4.0
_MAJORS = ("BTC", "ETH", "SOL", "BNB", "XRP")


def universe_names(n_symbols: int, quote: str = "USDT") -> list[str]:
    """Symbol names of a generated universe: a few majors, then ``AAA``, ``AAB``, ..."""
    names = list(_MAJORS[: min(n_symbols, len(_MAJORS))])
    k = 0
    while len(names) < n_symbols:
        base = "".join(chr(65 + (k // 26**p) % 26) for p in (2, 1, 0))
        names.append(base)
        k += 1
    return [f"{b}/{quote}" for b in names]


def _date_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def _student_t(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_t(_T_DF, n) / np.sqrt(_T_DF / (_T_DF - 2.0))


def _regimes(rng: np.random.Generator, n_days: int, mean_days: float) -> np.ndarray:
    """Regime id per day: segments of geometric length, returned as segment index per day."""
    lengths = rng.geometric(1.0 / mean_days, size=n_days // 5 + 2)
    return np.repeat(np.arange(lengths.size), lengths)[:n_days]


@dataclass(frozen=True)
class SymbolPath:
    """One symbol's 1h bars as numpy arrays over its listed life."""

    timestamp_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


class SyntheticSource(DataSource):
    """Serves the generated universe for any interval that is a multiple of 1h."""

    name = "synthetic"

    def __init__(self, seed: int, n_symbols: int, start: str, end: str, quote: str = "USDT") -> None:
        self.seed = int(seed)
        self.start_ms = _date_ms(start)
        self.end_ms = _date_ms(end) + DAY_MS  # ``end`` is the last day, inclusive
        if self.end_ms <= self.start_ms + 30 * DAY_MS:
            msg = f"synthetic data range {start}..{end} is too short: give at least 30 days"
            raise EngineError(msg)
        self.n_days = (self.end_ms - self.start_ms) // DAY_MS
        self.n_hours = self.n_days * 24
        self._names = universe_names(n_symbols, quote)
        self._index = {s: i for i, s in enumerate(self._names)}
        self._market = self._market_draw()

    def symbols(self) -> list[str]:
        return list(self._names)

    def intervals(self) -> tuple[str, ...]:
        return ("1h", "2h", "4h", "6h", "8h", "12h", "1d")

    def _market_draw(self) -> np.ndarray:
        """Hourly log returns of the market factor: regime drift plus clustered fat-tailed noise."""
        rng = np.random.default_rng([self.seed, 1_000_000])
        regime = _regimes(rng, self.n_days, mean_days=90.0)
        drift_daily = rng.normal(0.0, 0.002, size=regime.max() + 1)[regime]
        logvol = lfilter([1.0], [1.0, -0.995], rng.normal(0.0, 0.05, self.n_hours))
        sigma = 0.0055 * np.exp(logvol - 0.5 * 0.25)
        return np.repeat(drift_daily / 24.0, 24) + sigma * _student_t(rng, self.n_hours)

    @functools.lru_cache(maxsize=64)  # noqa: B019 - the source lives for one run; bounded cache
    def path(self, symbol: str) -> SymbolPath:
        """The symbol's 1h bars over its listed life (deterministic in seed and symbol)."""
        i = self._index.get(symbol_check(symbol))
        if i is None:
            msg = f"unknown symbol {symbol!r}: the synthetic universe has {self._names[0]} .. {self._names[-1]}"
            raise EngineError(msg)
        rng = np.random.default_rng([self.seed, i])
        n, n_days = self.n_hours, self.n_days
        beta = rng.uniform(0.6, 1.4) if i else 1.0
        base_vol = (0.004 if i == 0 else rng.uniform(0.005, 0.011)) * np.exp(-0.125)
        regime = _regimes(rng, n_days, mean_days=60.0)
        n_seg = regime.max() + 1
        trending = rng.random(n_seg) < (0.6 if rng.random() < 0.5 else 0.35)
        seg_drift = np.where(trending, rng.normal(0.0, 0.004, n_seg), 0.0)
        drift = np.repeat(seg_drift[regime] / 24.0, 24)
        mr = np.repeat((~trending)[regime].astype(np.float64), 24)
        logvol = lfilter([1.0], [1.0, -0.995], rng.normal(0.0, 0.04, n))
        sigma = base_vol * np.exp(logvol)
        shock = sigma * _student_t(rng, n)
        walk = np.cumsum(beta * self._market + drift + (1.0 - mr) * shock)
        revert = lfilter([1.0], [1.0, -0.97], mr * shock * 2.0)
        p0 = 30_000.0 if i == 0 else float(np.exp(rng.uniform(np.log(0.05), np.log(2_000.0))))
        close = p0 * np.exp(walk + revert)
        open_ = np.concatenate(([p0], close[:-1]))
        wick = 0.6 * sigma
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 1.0, n)) * wick)
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 1.0, n)) * wick)
        ret = np.abs(np.diff(np.log(close), prepend=np.log(p0)))
        dollar = np.exp(rng.uniform(np.log(2e5), np.log(5e8))) / 24.0
        volume = dollar * np.exp(0.5 * logvol + rng.normal(0.0, 0.3, n)) * (1.0 + 30.0 * ret) / close
        first_day, last_day = 0, n_days
        if i >= len(_MAJORS):
            u = rng.random()
            if u < 0.10:
                first_day = int(rng.uniform(0.1, 0.7) * n_days)
            elif u < 0.17:
                last_day = int(rng.uniform(0.4, 0.95) * n_days)
        life = slice(first_day * 24, last_day * 24)
        ts = self.start_ms + np.arange(n, dtype=np.int64) * HOUR_MS
        return SymbolPath(ts[life], open_[life], high[life], low[life], close[life], volume[life])

    def ohlcv_fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        step = interval_ms(interval)
        if step % HOUR_MS or (DAY_MS % step and step % DAY_MS):
            msg = f"interval {interval!r} is not served by the synthetic source: use one of {self.intervals()}"
            raise EngineError(msg)
        p = self.path(symbol)
        k = step // HOUR_MS
        usable = p.timestamp_ms.size // k * k
        rows = usable // k

        def agg(a: np.ndarray, fn: str) -> np.ndarray:
            m = a[:usable].reshape(rows, k)
            return {
                "first": m[:, 0],
                "last": m[:, -1],
                "max": m.max(axis=1),
                "min": m.min(axis=1),
                "sum": m.sum(axis=1),
            }[fn]

        frame = pl.DataFrame(
            {
                "timestamp": agg(p.timestamp_ms, "first"),
                "open": agg(p.open, "first"),
                "high": agg(p.high, "max"),
                "low": agg(p.low, "min"),
                "close": agg(p.close, "last"),
                "volume": agg(p.volume, "sum"),
            }
        )
        return frame.filter((pl.col("timestamp") >= start_ms) & (pl.col("timestamp") < end_ms)).with_columns(
            pl.col("timestamp").cast(pl.Datetime("ms", "UTC"))
        )
