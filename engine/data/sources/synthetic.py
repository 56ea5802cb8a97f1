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

import numpy as np
import polars as pl

from engine.config import CcxtData, FilesData, SyntheticData
from engine.core.errors import DataError, EngineError
from engine.core.symbols import symbol_check
from engine.core.units import DAY_MS, HOUR_MS, date_ms, interval_ms
from engine.data.bars import IMPLAUSIBLE_FACTOR, bars_implausible
from engine.data.sources.base import DataSource

_T_DF = 4.0
_MAJORS = ("BTC", "ETH", "SOL", "BNB", "XRP")
GENERATOR_VERSION = 2
REDRAWS = 10  # draws of a symbol whose daily prices come out implausible, before giving up
"""Bumped whenever the generator's bytes change for the same settings (part of the store identity).
2: names past ``ZZZ`` go on with four letters and skip the majors (1 repeated names after 1,020)."""


def _letters(k: int, width: int) -> str:
    return "".join(chr(65 + (k // 26**p) % 26) for p in range(width - 1, -1, -1))


def universe_names(n_symbols: int, quote: str = "USDT") -> list[str]:
    """Return the symbol names of a generated universe.

    The majors, then ``AAA``, ``AAB``, ... ``ZZZ``, ``AAAA``, ... skipping the majors' names, so
    every name is distinct for any ``n_symbols``.

    >>> universe_names(7)
    ['BTC/USDT', 'ETH/USDT', 'SOL/USDT', 'BNB/USDT', 'XRP/USDT', 'AAA/USDT', 'AAB/USDT']
    """
    names = list(_MAJORS[: min(n_symbols, len(_MAJORS))])
    width, k = 3, 0
    while len(names) < n_symbols:
        if k == 26**width:
            width, k = width + 1, 0
        base = _letters(k, width)
        k += 1
        if base not in _MAJORS:
            names.append(base)
    return [f"{b}/{quote}" for b in names]


def _student_t(rng: np.random.Generator, n: int) -> np.ndarray:
    draws: np.ndarray = rng.standard_t(_T_DF, n) / np.sqrt(_T_DF / (_T_DF - 2.0))
    return draws


def _regimes(rng: np.random.Generator, n_days: int, mean_days: float) -> np.ndarray:
    """Regime id per day: segments of geometric length, returned as segment index per day."""
    lengths = rng.geometric(1.0 / mean_days, size=n_days // 5 + 2)
    return np.repeat(np.arange(lengths.size), lengths)[:n_days]


def _daily_implausible(p: SymbolPath) -> bool:
    """Return True when the path's daily bars hold a price the bar contract refuses as implausible."""
    usable = p.close.size // 24 * 24
    if not usable:
        return False
    high = p.high[:usable].reshape(-1, 24).max(axis=1)
    low = p.low[:usable].reshape(-1, 24).min(axis=1)
    close = p.close[:usable].reshape(-1, 24)[:, -1]
    # every price lies in [low.min(), high.max()] and every median close in [close.min(), close.max()]:
    # within the factor of each other, no bar can be implausible (the usual case: no rolling median)
    if high.max() <= close.min() * IMPLAUSIBLE_FACTOR and close.max() <= low.min() * IMPLAUSIBLE_FACTOR:
        return False
    daily = pl.DataFrame({"open": p.open[:usable].reshape(-1, 24)[:, 0], "high": high, "low": low, "close": close})
    return bool(bars_implausible(daily).any())


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
    concurrent_fetch = True  # a symbol's bars are a pure function of (seed, symbol): drawn ahead in threads

    run_ingest = "all"  # a run generates the whole universe, so its store is always whole
    range_from_config = True
    funding_fix = "delete the store's folder so the generator writes it again"
    unreadable_fix = "delete the file it names and rerun (the run regenerates it)"

    @classmethod
    def from_config(cls, cfg: SyntheticData | CcxtData | FilesData) -> SyntheticSource:
        """Return the generator of ``cfg`` (seed, universe size, dates, quote)."""
        assert isinstance(cfg, SyntheticData)
        return cls(cfg.seed, cfg.n_symbols, cfg.start.isoformat(), cfg.end.isoformat(), cfg.quote)

    @classmethod
    def label(cls, cfg: SyntheticData | CcxtData | FilesData) -> str:
        """Return ``built-in synthetic universe (generated, not market data): N symbols, seed S``."""
        assert isinstance(cfg, SyntheticData)
        return f"built-in synthetic universe (generated, not market data): {cfg.n_symbols} symbols, seed {cfg.seed}"

    @classmethod
    def universe_named(cls, cfg: SyntheticData | CcxtData | FilesData) -> tuple[set[str], str] | None:
        """Return the generated universe's names (``data.n_symbols`` of them)."""
        assert isinstance(cfg, SyntheticData)
        return set(universe_names(cfg.n_symbols, cfg.quote)), f"data.n_symbols={cfg.n_symbols}"

    def __init__(self, seed: int, n_symbols: int, start: str, end: str, quote: str = "USDT") -> None:
        self.seed = int(seed)
        self.start, self.end, self.quote = str(start), str(end), quote
        self.start_ms = date_ms(start)
        self.end_ms = date_ms(end) + DAY_MS  # ``end`` is the last day, inclusive
        if self.end_ms <= self.start_ms + 30 * DAY_MS:
            msg = f"synthetic data range {start}..{end} is too short: give at least 30 days"
            raise EngineError(msg)
        self.n_days = (self.end_ms - self.start_ms) // DAY_MS
        self.n_hours = self.n_days * 24
        self._names = universe_names(n_symbols, quote)
        self._index = {s: i for i, s in enumerate(self._names)}

    def symbols(self) -> list[str]:
        """Return the generated universe's symbols, as ``BASE/QUOTE``."""
        return list(self._names)

    def identity(self) -> dict[str, object]:
        """Seed, universe, dates, quote and generator version: all that changes the generated bytes."""
        return self.market_identity(
            {
                "source": "synthetic",
                "generator_version": GENERATOR_VERSION,
                "seed": self.seed,
                "n_symbols": len(self._names),
                "start": self.start,
                "end": self.end,
                "quote": self.quote,
            }
        )

    def intervals(self) -> tuple[str, ...]:
        """Return the intervals built from the hourly paths, finest first."""
        return ("1h", "2h", "4h", "6h", "8h", "12h", "1d")

    @functools.cached_property
    def _market(self) -> np.ndarray:
        """Hourly log returns of the market factor: regime drift plus clustered fat-tailed noise.

        Drawn on the first symbol path asked for: a run on an existing store never pays it.
        """
        from scipy.signal import lfilter  # only generation needs it (~0.1 s of imports)

        rng = np.random.default_rng([self.seed, 1_000_000])
        regime = _regimes(rng, self.n_days, mean_days=90.0)
        drift_daily = rng.normal(0.0, 0.002, size=regime.max() + 1)[regime]
        logvol = lfilter([1.0], [1.0, -0.995], rng.normal(0.0, 0.05, self.n_hours))
        sigma = 0.0055 * np.exp(logvol - 0.5 * 0.25)
        returns: np.ndarray = np.repeat(drift_daily / 24.0, 24) + sigma * _student_t(rng, self.n_hours)
        return returns

    @functools.lru_cache(maxsize=64)  # noqa: B019 - the source lives for one run; bounded cache
    def path(self, symbol: str) -> SymbolPath:
        """Return the symbol's 1h bars over its listed life (deterministic in seed and symbol).

        A draw whose daily bars the bar contract would refuse as implausible (a fat-tailed shock
        in a mean-reverting regime can spike a price 1,000-fold for an hour: about one symbol in
        20,000) is drawn again from the stream ``(seed, symbol index, attempt)``. The first draw
        is the only one of every universe that generated before this rule, so their bytes are
        unchanged.
        """
        i = self._index.get(symbol_check(symbol))
        if i is None:
            msg = f"unknown symbol {symbol!r}: the synthetic universe has {self._names[0]} .. {self._names[-1]}"
            raise DataError(msg)  # as every backend says of a symbol it does not serve
        for attempt in range(REDRAWS):
            p = self._draw(i, np.random.default_rng([self.seed, i] if attempt == 0 else [self.seed, i, attempt]))
            if not _daily_implausible(p):
                return p
        msg = f"the synthetic generator drew implausible prices for {symbol} {REDRAWS} times: use another data.seed"
        raise EngineError(msg)

    def _draw(self, i: int, rng: np.random.Generator) -> SymbolPath:
        """One draw of symbol ``i``'s 1h bars from ``rng``."""
        from scipy.signal import lfilter

        n, n_days = self.n_hours, self.n_days
        beta = rng.uniform(0.6, 1.4) if i else 1.0
        base_vol = (0.004 if i == 0 else rng.uniform(0.005, 0.011)) * np.exp(-0.125)
        regime = _regimes(rng, n_days, mean_days=60.0)
        n_seg = regime.max() + 1
        trending = rng.random(n_seg) < (0.6 if rng.random() < 0.5 else 0.35)
        seg_drift = np.where(trending, rng.normal(0.0, 0.004, n_seg), 0.0)
        drift = np.repeat(seg_drift[regime] / 24.0, 24)
        mr = np.repeat((~trending)[regime].astype(np.float64), 24)
        # each step below is the operation of the formula in the comment above it, in its order, into
        # an array of the same draw that is not needed after it (a product's operands swapped at most,
        # which IEEE multiplication does not see): the same bits with a third of the temporary arrays
        logvol = lfilter([1.0], [1.0, -0.995], rng.normal(0.0, 0.04, n))
        # sigma = base_vol * exp(logvol); shock = sigma * t
        sigma = np.exp(logvol)
        sigma *= base_vol
        shock = _student_t(rng, n)
        shock *= sigma
        # walk = cumsum(beta * market + drift + (1 - mr) * shock)
        walk = beta * self._market
        walk += drift
        tmp = 1.0 - mr
        tmp *= shock
        walk += tmp
        np.cumsum(walk, out=walk)
        # revert = lfilter(mr * shock * 2)
        np.multiply(mr, shock, out=tmp)
        tmp *= 2.0
        revert = lfilter([1.0], [1.0, -0.97], tmp)
        p0 = 30_000.0 if i == 0 else float(np.exp(rng.uniform(np.log(0.05), np.log(2_000.0))))
        # close = p0 * exp(walk + revert)
        walk += revert
        close = np.exp(walk, out=walk)
        close *= p0
        open_ = np.concatenate(([p0], close[:-1]))
        # wick = 0.6 * sigma; high = max(open, close) * exp(|z| * wick); low = min(open, close) * exp(-|z'| * wick)
        wick = np.multiply(sigma, 0.6, out=sigma)
        z = np.abs(rng.normal(0.0, 1.0, n))
        z *= wick
        high = np.maximum(open_, close)
        high *= np.exp(z, out=z)
        z = np.abs(rng.normal(0.0, 1.0, n))
        np.negative(z, out=z)
        z *= wick
        low = np.minimum(open_, close)
        low *= np.exp(z, out=z)
        # ret = |diff(log(close), prepend=log(p0))|
        log_close = np.log(close)
        ret = np.empty_like(log_close)
        ret[0] = log_close[0] - np.log(p0)
        np.subtract(log_close[1:], log_close[:-1], out=ret[1:])
        np.abs(ret, out=ret)
        dollar = np.exp(rng.uniform(np.log(2e5), np.log(5e8))) / 24.0
        # volume = dollar * exp(0.5 * logvol + z) * (1 + 30 * ret) / close
        volume = np.multiply(logvol, 0.5, out=logvol)
        volume += rng.normal(0.0, 0.3, n)
        np.exp(volume, out=volume)
        volume *= dollar
        ret *= 30.0
        ret += 1.0
        volume *= ret
        volume /= close
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
        """Return the bars of ``symbol`` whose open time lies in ``[start_ms, end_ms)``."""
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
            if fn == "first":
                return m[:, 0]
            if fn == "last":
                return m[:, -1]
            out: np.ndarray = getattr(m, fn)(axis=1)  # only the reduction asked for
            return out

        ts = agg(p.timestamp_ms, "first")
        keep = (ts >= start_ms) & (ts < end_ms)  # in numpy: no polars query per symbol
        columns = {
            "open": agg(p.open, "first"),
            "high": agg(p.high, "max"),
            "low": agg(p.low, "min"),
            "close": agg(p.close, "last"),
            "volume": agg(p.volume, "sum"),
        }
        return pl.DataFrame(
            [
                pl.Series("timestamp", ts[keep]).cast(pl.Datetime("ms", "UTC")),
                *(pl.Series(name, a[keep]) for name, a in columns.items()),
            ]
        )

    def funding_fetch(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        """Funding every 8 h that leans with momentum (:mod:`engine.data.sources.funding_gen`); perp only."""
        if self.market != "perp":
            return None
        from engine.data.sources.funding_gen import funding_generate

        return funding_generate(self.path(symbol), self.seed, self._index[symbol_check(symbol)], start_ms, end_ms)
