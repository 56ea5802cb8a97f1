"""The allocator's per-window kernels (engine/strategy/book_nb.py) equal the numpy expressions they
replace, bit for bit: the winners' returns over the covariance window and the held book's drift."""

from __future__ import annotations

import numpy as np

from engine.strategy.book_nb import growth_nb, window_returns_nb
from engine.strategy.covariance import returns_of


def _closes(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.05, (n, k)), axis=0))
    close[rng.random((n, k)) < 0.05] = np.nan  # gaps
    close[: int(rng.integers(0, n)), int(rng.integers(0, k))] = np.nan  # a late listing
    close[int(rng.integers(0, n)) :, int(rng.integers(0, k))] = np.nan  # a delisting
    close[int(rng.integers(0, n)), int(rng.integers(0, k))] = 0.0  # a zero close: infinite return
    return close


def test_window_returns_equal_returns_of_the_block() -> None:
    rng = np.random.default_rng(31)
    for _ in range(300):
        n, k = int(rng.integers(1, 80)), int(rng.integers(1, 20))
        close = _closes(rng, n, k)
        cols = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False).astype(np.int64)
        lo = int(rng.integers(0, n))
        hi = int(rng.integers(lo, n + 1))
        got = window_returns_nb(close, lo, hi, cols)
        want = returns_of(close[lo:hi][:, cols])
        assert got.shape == want.shape and got.flags.c_contiguous
        assert got.tobytes() == want.tobytes()  # the risk memo's key: the same bytes


def test_growth_equals_the_numpy_drift() -> None:
    rng = np.random.default_rng(32)
    for _ in range(300):
        n, k = int(rng.integers(2, 60)), int(rng.integers(1, 20))
        close = _closes(rng, n, k)
        open_ = close * rng.uniform(0.97, 1.03, close.shape)
        cols = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False).astype(np.int64)
        start = int(rng.integers(0, n - 1))
        end = int(rng.integers(start + 1, n + 1))
        block = close[start:end][:, cols]
        ok = np.isfinite(block)
        last = block[block.shape[0] - 1 - np.argmax(ok[::-1], axis=0), np.arange(cols.size)]
        with np.errstate(divide="ignore", invalid="ignore"):
            want = np.where(ok.any(axis=0), last / open_[start, cols], 1.0)
        np.testing.assert_array_equal(growth_nb(close, open_, start, end, cols), want)


def test_growth_by_hand() -> None:
    nan = np.nan
    close = np.array([[10.0, 5.0, nan], [11.0, nan, nan], [12.0, nan, nan]])
    open_ = np.array([[8.0, 4.0, 1.0], [9.0, 4.0, 1.0], [9.0, 4.0, 1.0]])
    # column 0: last close 12 over the open 8; column 1: delisted after row 0, 5 / 4; column 2: no close, 1
    np.testing.assert_array_equal(growth_nb(close, open_, 0, 3, np.array([0, 1, 2])), [1.5, 1.25, 1.0])
