"""The forced exit of a holding whose bars end: its price, moved against the holder by ``execution.delisting_haircut``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from engine.run.state import FoldState


def delisting_haircut(
    block: dict[str, np.ndarray], delist: np.ndarray, haircut: float, short: np.ndarray | None = None
) -> None:
    """Move the flat prices from each delist row on by ``haircut`` against the holder (in place): the forced exit's price.

    From a column's delist row on, its block holds its last close (no bar is left); with
    ``execution.delisting_haircut`` = h the sale of a long at that row fills at last close x (1 - h),
    the cover of a short (``short[j]``) at last close x (1 + h), before slippage and fees: the
    haircut is a loss on either side. h = 0 changes nothing.
    """
    if not haircut:
        return
    rows, cols = np.nonzero(delist)
    for r, j in zip(rows.tolist(), cols.tolist(), strict=True):
        factor = 1.0 + haircut if short is not None and short[j] else 1.0 - haircut
        for f in ("open", "high", "low", "close"):
            block[f][r:, j] *= factor


def columns_short(columns: list[str], weights: Mapping[str, float], state: FoldState) -> np.ndarray:
    """Return which of a window's columns are held short: a negative target, else a short position carried in."""
    out = np.zeros(len(columns), dtype=bool)
    for j, s in enumerate(columns):
        target = weights.get(s, 0.0)
        if target:
            out[j] = target < 0
        else:
            out[j] = any(b.positions[s].qty < 0 for b in state.books if s in b.positions)
    return out
