"""The bar contract: schema, intervals, symbols and validation shared by every source.

A bar is ``timestamp`` (UTC bar open time, ms precision on disk), ``open, high, low, close,
volume`` (float64) with ``low <= open, close <= high``, finite prices > 0 and a finite volume >= 0,
strictly increasing in time, and plausible prices: no open, high, low or close more than
:data:`IMPLAUSIBLE_FACTOR` times above or below the median close of the :data:`IMPLAUSIBLE_WINDOW`
bars centred on it (see :func:`bars_implausible`).
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from engine.core.choices import Implausible
from engine.core.errors import DataError
from engine.core.units import interval_ms

BAR_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("ms", "UTC"),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}
PRICE_COLUMNS = ("open", "high", "low", "close")
IMPLAUSIBLE_FACTOR = 1000.0
"""A price more than this many times above, or below 1/this of, its neighbours' median close is implausible."""
IMPLAUSIBLE_WINDOW = 21
"""Bars of the centred window whose median close a bar's prices are compared with (the bar included)."""
IMPLAUSIBLE_PROBLEM = (
    f"implausible price (open, high, low or close over {IMPLAUSIBLE_FACTOR:g}x or under 1/{IMPLAUSIBLE_FACTOR:g} "
    f"of the median close of the {IMPLAUSIBLE_WINDOW} bars around it)"
)


def bars_conform(df: pl.DataFrame) -> pl.DataFrame:
    """Cast a frame to the bar schema (columns in order, timestamps as UTC ms)."""
    if df.schema == BAR_SCHEMA:  # already the schema, columns in order (a generator's frame): nothing to cast
        return df
    missing = [c for c in BAR_SCHEMA if c not in df.columns]
    if missing:
        msg = f"bars lack columns {missing}: every bar needs timestamp, open, high, low, close, volume"
        raise DataError(msg)
    ts = df.get_column("timestamp")
    if ts.dtype == pl.Int64:
        ts = ts.cast(pl.Datetime("ms", "UTC"))
    elif isinstance(ts.dtype, pl.Datetime):
        ts = ts.dt.replace_time_zone("UTC") if ts.dtype.time_zone is None else ts.dt.convert_time_zone("UTC")
        ts = ts.dt.cast_time_unit("ms")
    else:
        msg = f"bars column 'timestamp' has type {ts.dtype}: use epoch milliseconds or a datetime"
        raise DataError(msg)
    return df.with_columns(ts.alias("timestamp")).select([pl.col(c).cast(t) for c, t in BAR_SCHEMA.items()])


class ImplausibleBars(DataError):
    """Bars priced implausibly far from their neighbours (see :func:`bars_implausible`)."""


def bars_implausible(df: pl.DataFrame) -> pl.Series:
    """Return the mask of bars with an implausible price, in ``df``'s row order (sorted by time).

    A bar is implausible when its open, high, low or close is more than
    :data:`IMPLAUSIBLE_FACTOR` times, or less than 1/:data:`IMPLAUSIBLE_FACTOR` of, the median
    close of the :data:`IMPLAUSIBLE_WINDOW` bars centred on it, the bar itself included (fewer at
    the ends of the series). The median holds while fewer than half of a window's bars are
    implausible, so one bad print (a price of 1e300 among 0.05) is caught, while a real wick
    (a low at a tenth of the close) passes. Expects positive finite prices.

    Examples
    --------
    >>> bars = pl.DataFrame({c: [0.05, 0.05, 5e300, 0.05] for c in PRICE_COLUMNS})
    >>> bars_implausible(bars).to_list()
    [False, False, True, False]
    """
    median = pl.col("close").rolling_median(window_size=IMPLAUSIBLE_WINDOW, center=True, min_samples=1)
    far = [(pl.col(c) > median * IMPLAUSIBLE_FACTOR) | (pl.col(c) < median / IMPLAUSIBLE_FACTOR) for c in PRICE_COLUMNS]
    return df.select(pl.any_horizontal(far).alias("implausible")).get_column("implausible")


def bars_validate(df: pl.DataFrame, symbol: str, interval: str, implausible: Implausible = "error") -> pl.DataFrame:
    """Check the bar contract; raise :class:`DataError` naming symbol, interval and timestamp.

    Policy: nothing is repaired silently. Duplicate rows that are identical are dropped (exchanges
    resend pages); any other violation is rejected. Bars with an implausible price
    (:func:`bars_implausible`) raise :class:`ImplausibleBars`, or with ``implausible="drop"`` are
    dropped with a warning naming them and how many.
    """
    conformed = bars_conform(df)
    if _bars_plainly_valid(conformed, interval):  # the usual case, in numpy: every check below passes
        return conformed
    df = conformed.unique(maintain_order=True).sort("timestamp")
    if df.height < conformed.height:  # said, not silent: the numbers are the same either way
        logging.getLogger(__name__).warning(
            "%s %s: %d identical duplicate bar(s) dropped", symbol, interval, conformed.height - df.height
        )

    def fail(problem: str, mask: pl.Expr | pl.Series, error: type[DataError] = DataError) -> None:
        bad = df.filter(mask)
        if bad.height:
            ts = bad.get_column("timestamp")[0]
            msg = f"{symbol} {interval}: {problem} at {ts} ({bad.height} bar(s)); fix or remove these bars"
            raise error(msg)

    nan_any = pl.any_horizontal([pl.col(c).is_nan() | pl.col(c).is_null() for c in BAR_SCHEMA if c != "timestamp"])
    step = interval_ms(interval)
    checks = [
        ("NaN or missing value", nan_any | pl.col("timestamp").is_null()),
        ("duplicate timestamp with different values", pl.col("timestamp").is_duplicated()),
        (
            "infinite price or volume",
            pl.any_horizontal([pl.col(c).is_infinite() for c in BAR_SCHEMA if c != "timestamp"]),
        ),
        ("price <= 0", pl.any_horizontal([pl.col(c) <= 0 for c in PRICE_COLUMNS])),
        ("volume < 0", pl.col("volume") < 0),
        (
            "high below low/open/close or low above open/close",
            (pl.col("high") < pl.max_horizontal("open", "close", "low"))
            | (pl.col("low") > pl.min_horizontal("open", "close")),
        ),
        (f"timestamp not aligned to the {interval} grid", (pl.col("timestamp").dt.epoch("ms") % step) != 0),
    ]
    # one pass tells whether any check fails (the common case: none); the first that does is then named
    flags = df.select([mask.any().alias(str(i)) for i, (_, mask) in enumerate(checks)]).row(0)
    for (problem, mask), flagged in zip(checks, flags, strict=True):
        if flagged:
            fail(problem, mask)
    far = bars_implausible(df)
    if implausible == "error":
        if far.any():
            fail(IMPLAUSIBLE_PROBLEM, far, ImplausibleBars)
    elif far.any():
        times = df.filter(far).get_column("timestamp")
        shown = ", ".join(str(t) for t in times.head(5)) + (", ..." if times.len() > 5 else "")
        logging.getLogger(__name__).warning(
            "%s %s: %d bar(s) with an implausible price dropped (data.implausible=drop): %s",
            symbol,
            interval,
            times.len(),
            shown,
        )
        df = df.filter(~far)
    return df


def _bars_plainly_valid(df: pl.DataFrame, interval: str) -> bool:
    """Return True only when :func:`bars_validate` would return ``df`` (conformed) unchanged and raise nothing.

    Each check of :func:`bars_validate`, restated in numpy on the whole columns: no null, strictly
    increasing timestamps (so no duplicate, already sorted: ``unique`` and ``sort`` keep the frame
    as it is), on the interval's grid, finite prices > 0 and a finite volume >= 0, the high/low
    order, and no implausible price by the bounds that hold whatever the rolling medians are (each
    median close lies between the smallest and the largest close; ``x * F`` and ``x / F`` round
    monotonically, so ``high.max() <= close.min() * F`` and ``close.max() / F <= low.min()`` leave no
    price beyond any median's bounds). False (any doubt) sends the frame through the polars checks,
    which name the fault, so a frame gets the same result and the same error either way.
    """
    if df.height == 0 or any(s.null_count() for s in df.get_columns()):
        return False
    ts = df.get_column("timestamp").dt.epoch("ms").to_numpy()
    o, h, lo, c, v = (df.get_column(name).to_numpy() for name in ("open", "high", "low", "close", "volume"))
    if df.height > 1 and not bool((ts[1:] > ts[:-1]).all()):
        return False
    if bool((ts % interval_ms(interval)).any()):
        return False
    prices = (o, h, lo, c)
    if not all(bool(np.isfinite(a).all()) for a in (*prices, v)):
        return False
    if not (all(bool((a > 0).all()) for a in prices) and bool((v >= 0).all())):
        return False
    if bool(((h < np.maximum(np.maximum(o, c), lo)) | (lo > np.minimum(o, c))).any()):
        return False
    return bool(h.max() <= c.min() * IMPLAUSIBLE_FACTOR and c.max() / IMPLAUSIBLE_FACTOR <= lo.min())


def bars_gaps(df: pl.DataFrame, interval: str) -> int:
    """Return the number of missing bars between the first and last timestamp (reported, not an error)."""
    if df.height < 2:
        return 0
    ts = df.get_column("timestamp").dt.epoch("ms")
    span = (ts.max() - ts.min()) // interval_ms(interval) + 1  # type: ignore[operator]
    return int(span) - df.height


def bars_resample(bars: pl.DataFrame, src: str, dst: str) -> pl.DataFrame:
    """Coarser bars built exactly from finer ones; only complete buckets are kept.

    Buckets are epoch-aligned (``timestamp // dst * dst``), left-closed and labelled by their
    open; open = first, high = max, low = min, close = last, volume = sum (summed like numpy's
    ``reshape(-1, k).sum(axis=1)``, so bars aggregated by the generator are matched bit for bit).
    A bucket with any finer bar missing is dropped.
    """
    step, fine = interval_ms(dst), interval_ms(src)
    if step % fine:
        msg = f"cannot build {dst} bars from {src} bars: {dst} is not a whole multiple of {src}"
        raise DataError(msg)
    k = step // fine
    if k == 1:
        return bars
    agg = (
        bars.sort("timestamp")
        .group_by_dynamic("timestamp", every=f"{step}ms", closed="left", label="left", start_by="window")
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.len().alias("_n"),
        )
        .filter(pl.col("_n") == k)
    )
    # volume of the complete buckets: each is k consecutive rows of the sorted fine bars
    bucket = (bars.get_column("timestamp").dt.epoch("ms") // step) * step
    keep = bucket.is_in(agg.get_column("timestamp").dt.epoch("ms").implode())
    volume = bars.sort("timestamp").get_column("volume").filter(keep).to_numpy().reshape(-1, k).sum(axis=1)
    return agg.select("timestamp", "open", "high", "low", "close").with_columns(pl.Series("volume", volume))
