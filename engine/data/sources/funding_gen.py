"""The generator's funding rates (``data=synthetic data.market=perp``): every 8 h, leaning with momentum.

A perpetual's funding pays the gap between its price and the index: after a run-up longs crowd in,
the perp trades rich and longs pay shorts (a positive rate); after a sell-off the reverse. The
generator draws that lean as a function of the symbol's trailing return plus noise:

    rate(t) = clip(BASE + LEAN * log(p(t) / p(t - 3 d)) + NOISE * z(t), -CAP, CAP)

at every funding time ``t`` (00:00, 08:00, 16:00 UTC) inside the symbol's listed life, with
``p(t)`` the open of its 1h bar at ``t`` (the generator's bars open at the last close, so this is
the price at ``t``; before 3 days of life, the first open) and ``z`` standard normal draws from the
symbol's own stream (seed, symbol index, a fixed tag), so one seed gives the same rates, and a
symbol's rates do not depend on the others or on the span asked for. ``mark`` is ``p(t)``.

``BASE`` is the 0.01 % per 8 h that Binance's formula yields when the premium is zero (the interest
component); ``CAP`` is the 0.75 % clamp of many of its USDT-margined perpetuals.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.core.units import HOUR_MS
from engine.data.sources.synthetic import SymbolPath

FUNDING_EVERY_MS = 8 * HOUR_MS
BASE = 0.0001
LEAN = 0.01
NOISE = 0.0001
CAP = 0.0075
TRAIL_HOURS = 72
STREAM_TAG = 2_000_000


def funding_generate(path: SymbolPath, seed: int, index: int, start_ms: int, end_ms: int) -> pl.DataFrame:
    """Return the funding of one generated symbol with funding time in ``[start_ms, end_ms)``.

    Columns ``time`` (epoch ms), ``rate``, ``mark`` (see the module docstring).
    """
    ts = path.timestamp_ms
    if ts.size == 0:
        return pl.DataFrame(schema={"time": pl.Int64, "rate": pl.Float64, "mark": pl.Float64})
    first = int(ts[0])
    # every funding time of the whole life, drawn in one stream: independent of the span asked for
    at = np.arange(-(-first // FUNDING_EVERY_MS) * FUNDING_EVERY_MS, int(ts[-1]) + 1, FUNDING_EVERY_MS, dtype=np.int64)
    k = (at - first) // HOUR_MS
    price = path.open[k]
    trail = path.open[np.maximum(k - TRAIL_HOURS, 0)]
    z = np.random.default_rng([seed, index, STREAM_TAG]).standard_normal(at.size)
    rate = np.clip(BASE + LEAN * np.log(price / trail) + NOISE * z, -CAP, CAP)
    keep = (at >= start_ms) & (at < end_ms)
    return pl.DataFrame({"time": at[keep], "rate": rate[keep], "mark": price[keep]})
