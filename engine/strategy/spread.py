"""Bid-ask spreads estimated from OHLC bars: the EDGE estimator of Ardia, Guidotti and Kroencke (2024).

EDGE ("Efficient estimation of bid-ask spreads from open, high, low, and close prices", Journal of
Financial Economics 161, 103916, doi:10.1016/j.jfineco.2024.103916) estimates the squared *full*
spread ``S**2`` (ask minus bid over the mid price) from log open, high, low, close and their values
one bar earlier, as the minimum-variance weighting of two unbiased moment conditions. This module
is a numpy port of the reference implementation, the ``edge`` function of the ``bidask`` package
(version 2.1.0), written column-wise so one call estimates every symbol of a window:

* ``o, h, l, c`` are log prices, ``m = (h + l) / 2`` the log mid-range; each bar ``t >= 1`` is paired
  with bar ``t - 1`` (``h1, l1, c1, m1``);
* returns ``r1 = m - o``, ``r2 = o - m1``, ``r3 = m - c1``, ``r4 = c1 - m1``, ``r5 = o - c1``;
* ``tau = (h != l) | (l != c1)`` (the bar traded at more than one price), and the indicators
  ``o != h``, ``o != l``, ``c1 != h1``, ``c1 != l1``, each times ``tau``; ``pt`` is the mean of ``tau``,
  ``po`` the sum of the means of the two open indicators, ``pc`` of the two close indicators;
* ``d_k = r_k - tau * mean(r_k) / pt`` (k = 1, 3, 5), ``x1 = -4/po d1 r2 - 4/pc d3 r4``,
  ``x2 = -4/po d1 r5 - 4/pc d5 r4``; with ``e_i``, ``v_i`` the mean and (population) variance of
  ``x_i``, ``S**2 = (v2 e1 + v1 e2) / (v1 + v2)`` when ``v1 + v2 > 0``, else ``(e1 + e2) / 2``.

Every mean ignores NaN (a missing bar, or a bar whose neighbour is missing, drops out of the terms it
enters), exactly as ``numpy.nanmean`` in the reference.

Not estimable (NaN): fewer than 3 bars, fewer than two bars with ``tau = 1`` (flat or missing bars),
or ``po = 0`` or ``pc = 0`` (every open, or every previous close, at the bar's extreme).

Negative estimates: sampling noise can make the estimate of ``S**2`` negative (more likely the
smaller the true spread is relative to the volatility). Like the package's default (``sign=False``)
:func:`edge_spread` then returns ``sqrt(|S**2|)``, a positive spread; with ``sign=True`` it returns
``-sqrt(|S**2|)`` (the paper's signed root, meant for averaging many estimates without the
upward bias of a truncation at zero). The trading cost (:func:`half_spreads`) uses the default,
unsigned estimate: a fill always pays a spread, never receives one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = ["edge_spread", "edge_spreads", "half_spreads"]

FloatArray = npt.NDArray[np.float64]


def _nanmean(x: FloatArray) -> FloatArray:
    """Column means ignoring NaN (NaN for an all-NaN column), as ``numpy.nanmean(x, axis=0)`` without its warning."""
    ok = ~np.isnan(x)
    mean: FloatArray = np.where(ok, x, 0.0).sum(axis=0) / ok.sum(axis=0)
    return mean


def _flag(a: FloatArray, b: FloatArray) -> FloatArray:
    """Return ``a != b`` as 1.0/0.0, NaN where either is NaN."""
    return np.where(np.isnan(a) | np.isnan(b), np.nan, (a != b).astype(np.float64))


def edge_spreads(
    open: npt.ArrayLike, high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, *, sign: bool = False
) -> FloatArray:
    """Return the EDGE full spread of every column of ``(n_bars, k)`` OHLC arrays (see the module docstring).

    Parameters
    ----------
    open, high, low, close
        Prices, ascending in time, one column per series (a 1-d array is one series). NaN marks a
        missing bar. Prices must be positive (a zero or negative price has no log).
    sign
        Return ``-sqrt(|S**2|)`` for a negative estimate of ``S**2`` instead of ``sqrt(|S**2|)``.

    Returns
    -------
    numpy.ndarray
        Shape ``(k,)``: each column's spread as a fraction of the price (0.01 = 1 %), NaN where not
        estimable.
    """
    arrays = [np.asarray(x, dtype=np.float64) for x in (open, high, low, close)]
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays) or len(shape) not in (1, 2):
        msg = f"open, high, low, close must be arrays of one shape, (n,) or (n, k); got {[a.shape for a in arrays]}"
        raise ValueError(msg)
    k = 1 if len(shape) == 1 else shape[1]
    if shape[0] < 3:
        return np.full(k, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        o, h, l, c = (np.log(a).reshape(shape[0], k) for a in arrays)  # noqa: E741 (the paper's names)
        m = (h + l) / 2.0
        h1, l1, c1, m1 = h[:-1], l[:-1], c[:-1], m[:-1]
        o, h, l, m = o[1:], h[1:], l[1:], m[1:]  # noqa: E741
        r1, r2, r3, r4, r5 = m - o, o - m1, m - c1, c1 - m1, o - c1
        tau = np.where(np.isnan(h) | np.isnan(l) | np.isnan(c1), np.nan, ((h != l) | (l != c1)).astype(np.float64))
        pt = _nanmean(tau)
        po = _nanmean(tau * _flag(o, h)) + _nanmean(tau * _flag(o, l))
        pc = _nanmean(tau * _flag(c1, h1)) + _nanmean(tau * _flag(c1, l1))
        missing = (np.where(np.isnan(tau), 0.0, tau).sum(axis=0) < 2) | (po == 0) | (pc == 0)
        d1 = r1 - _nanmean(r1) / pt * tau
        d3 = r3 - _nanmean(r3) / pt * tau
        d5 = r5 - _nanmean(r5) / pt * tau
        x1 = -4.0 / po * d1 * r2 + -4.0 / pc * d3 * r4
        x2 = -4.0 / po * d1 * r5 + -4.0 / pc * d5 * r4
        e1, e2 = _nanmean(x1), _nanmean(x2)
        v1 = _nanmean(x1**2) - e1**2
        v2 = _nanmean(x2**2) - e2**2
        vt = v1 + v2
        s2 = np.where(vt > 0, (v2 * e1 + v1 * e2) / vt, (e1 + e2) / 2.0)
    s = np.sqrt(np.abs(s2))
    if sign:
        s = s * np.sign(s2)
    return np.where(missing, np.nan, s)


def edge_spread(
    open: npt.ArrayLike, high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, *, sign: bool = False
) -> float:
    """Return the EDGE full spread of one OHLC series, as ``bidask.edge(open, high, low, close, sign)`` does.

    Parameters
    ----------
    open, high, low, close
        1-d price arrays of one length, ascending in time; NaN marks a missing bar.
    sign
        Return the signed root for a negative estimate (see the module docstring).

    Returns
    -------
    float
        The spread as a fraction of the price (0.01 = 1 %); NaN where not estimable.

    Examples
    --------
    >>> o, h = [10, 10.2, 10.1, 10.3, 10.2], [10.4, 10.5, 10.4, 10.6, 10.5]
    >>> l, c = [9.9, 10.0, 9.9, 10.1, 10.0], [10.1, 10.2, 10.2, 10.3, 10.4]
    >>> round(edge_spread(o, h, l, c), 6), round(edge_spread(o, h, l, c, sign=True), 6)
    (0.006843, -0.006843)
    """
    arrays = [np.asarray(x, dtype=np.float64) for x in (open, high, low, close)]
    if any(a.ndim != 1 or a.shape != arrays[0].shape for a in arrays):
        msg = f"open, high, low, close must be 1-d arrays of one length; got shapes {[a.shape for a in arrays]}"
        raise ValueError(msg)
    return float(edge_spreads(*arrays, sign=sign)[0])


def half_spreads(bars: pl.DataFrame, symbols: Sequence[str], start_ms: int, window: int, step_ms: int) -> FloatArray:
    """Return each symbol's EDGE half-spread over the ``window`` bars completed before ``start_ms``.

    Only bars that have closed by ``start_ms`` enter (open time ``t`` with ``t + step_ms <= start_ms``),
    so a window's spread never reads its own bars. The estimator sees the grid of the last ``window``
    bar times before ``start_ms`` (open times ``last - (window - 1) * step_ms .. last``): a bar missing
    from ``bars`` is a missing bar (NaN) there, never a neighbour of the bars around the gap.

    Parameters
    ----------
    bars
        Long frame with ``symbol``, ``timestamp`` (the bar's open, Datetime or epoch ms) and ``open``,
        ``high``, ``low``, ``close`` columns; other symbols, times and columns are ignored.
    symbols
        The columns of the result, in this order.
    start_ms
        The window's start (epoch ms): bars closing after it are not read.
    window
        Number of bar times read (at least 3 for an estimate).
    step_ms
        The bars' interval in ms (bar open times are multiples of it).

    Returns
    -------
    numpy.ndarray
        Shape ``(len(symbols),)``: half the full EDGE spread (the cost of one fill as a fraction of the
        mid price), the unsigned estimate; NaN where not estimable (too few, flat or missing bars), for
        the caller to replace by a stated fallback.
    """
    k = len(symbols)
    grid = np.full((4, window, k), np.nan)
    last = (start_ms // step_ms) * step_ms - step_ms  # the last bar opened at it closes by start_ms
    first = last - (window - 1) * step_ms
    ts = pl.col("timestamp")
    epoch = ts.dt.epoch("ms") if isinstance(bars.schema["timestamp"], pl.Datetime) else ts.cast(pl.Int64)
    code = {s: j for j, s in enumerate(symbols)}
    part = bars.lazy().select(
        pl.col("symbol").replace_strict(code, default=-1, return_dtype=pl.Int64).alias("col"),
        ((epoch - first) // step_ms).alias("row"),
        ((epoch - first) % step_ms).alias("off"),
        *(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close")),
    )
    part = part.filter((pl.col("col") >= 0) & (pl.col("row") >= 0) & (pl.col("row") < window) & (pl.col("off") == 0))
    got = part.collect()
    rows, cols = got.get_column("row").to_numpy(), got.get_column("col").to_numpy()
    for i, c in enumerate(("open", "high", "low", "close")):
        grid[i, rows, cols] = got.get_column(c).to_numpy()
    return edge_spreads(grid[0], grid[1], grid[2], grid[3]) / 2.0
