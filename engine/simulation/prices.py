"""The OHLC block a simulation runs on: the simulated columns' prices on one time grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PriceBlock:
    """OHLC of the simulated columns on one time grid.

    Attributes
    ----------
    open, high, low, close : np.ndarray
        (n_bars, n_cols) float64, finite and > 0, with ``low <= open, close <= high``.
    index : np.ndarray
        (n_bars,) datetime64[ns] bar open times, strictly increasing.
    columns : tuple of str
        One name per column.
    """

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    index: np.ndarray
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        """Validate shapes, dtypes and prices."""
        object.__setattr__(self, "columns", tuple(self.columns))
        shape = np.shape(self.open)
        if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
            msg = f"open must be a non-empty 2-D (n_bars, n_cols) array, got shape {shape}"
            raise ValueError(msg)
        for name in ("open", "high", "low", "close"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float64 or arr.shape != shape:
                msg = f"{name} must be a float64 array of shape {shape} (like open); convert with np.asarray(x, float)"
                raise ValueError(msg)
            if not (np.isfinite(arr).all() and (arr > 0).all()):
                msg = f"{name} holds non-finite or non-positive prices: drop or fill those bars first"
                raise ValueError(msg)
        if not (
            (self.low <= np.minimum(self.open, self.close)).all()
            and (self.high >= np.maximum(self.open, self.close)).all()
        ):
            msg = "bars must satisfy low <= open, close <= high"
            raise ValueError(msg)
        if (
            not isinstance(self.index, np.ndarray)
            or self.index.dtype != np.dtype("datetime64[ns]")
            or self.index.shape != (shape[0],)
        ):
            msg = f"index must be a datetime64[ns] array of length {shape[0]} (bar open times)"
            raise ValueError(msg)
        if shape[0] > 1 and not (np.diff(self.index.view(np.int64)) > 0).all():
            msg = "index must be strictly increasing"
            raise ValueError(msg)
        if len(self.columns) != shape[1]:
            msg = f"columns has {len(self.columns)} names for {shape[1]} price columns"
            raise ValueError(msg)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_bars, n_cols)``."""
        return self.open.shape
