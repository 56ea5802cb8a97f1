"""The allocator's per-window array work as numba kernels (docs/PORTFOLIO.md, "Speed").

Each window the allocator reads its winners' past returns and drifts the previous book to the
ranking bar (:class:`engine.strategy.weights.Allocator`). In numpy that is a dozen small array
calls a window, each paying numpy's call overhead on a 30 x 50 block; these kernels do the same
element-wise arithmetic in one pass. Every value is the same IEEE operation on the same operands as
the numpy expression it replaces (a division, then a subtraction; no reduction), so the results
are equal bit for bit (tests/test_book_kernels.py holds them to the numpy expressions).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def window_returns_nb(close: np.ndarray, lo: int, hi: int, cols: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """Return the simple returns of columns ``cols`` over the close rows ``[lo, hi)``, rows with a non-finite return dropped.

    The numbers of :func:`engine.strategy.covariance.returns_of` on ``close[lo:hi][:, cols]``:
    ``close[t + 1] / close[t] - 1`` (a zero or missing close gives a non-finite return, so its row
    is dropped), as a C-ordered (rows, len(cols)) array.
    """
    p = cols.size
    rows = max(hi - lo - 1, 0)
    out = np.empty((rows, p))
    k = 0
    for i in range(rows):
        ok = True
        for j in range(p):
            c = cols[j]
            v = close[lo + i + 1, c] / close[lo + i, c] - 1.0
            out[k, j] = v
            if not np.isfinite(v):
                ok = False
        if ok:
            k += 1
    return out[:k].copy()


@njit(cache=True, error_model="numpy")
def growth_nb(
    close: np.ndarray, open_: np.ndarray, start: int, end: int, cols: np.ndarray
) -> np.ndarray:  # pragma: no cover - numba
    """Return each column's last finite close in rows ``[start, end)`` over its open at row ``start`` (1 where it has none).

    The drift of a held weight from the previous window's first open to this ranking bar's close:
    a symbol whose bars stop (delisted) keeps its last close; one without any close in the span
    keeps its weight (growth 1).
    """
    p = cols.size
    out = np.ones(p)
    for j in range(p):
        c = cols[j]
        for t in range(end - 1, start - 1, -1):
            if np.isfinite(close[t, c]):
                out[j] = close[t, c] / open_[start, c]
                break
    return out
