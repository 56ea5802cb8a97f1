"""The one interface every data backend implements.

Backends only know how to produce bars for ``(symbol, interval, [start_ms, end_ms))``; the shared
work (missing ranges, validation, atomic storage, coverage) lives once in
:class:`engine.data.ingest.IngestionService`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import polars as pl


class DataSource(ABC):
    """A backend that serves OHLCV bars in the bar contract of :mod:`engine.data.bars`."""

    name: str = "base"

    @abstractmethod
    def symbols(self) -> list[str]:
        """Symbols this source can serve, as ``BASE/QUOTE``."""

    @abstractmethod
    def intervals(self) -> tuple[str, ...]:
        """Intervals this source can serve, finest first (e.g. ``("1h", "4h", "1d")``)."""

    @abstractmethod
    def ohlcv_fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        """Bars of ``symbol`` whose open time lies in ``[start_ms, end_ms)`` (may be empty).

        Returns a frame with the columns of :data:`engine.data.bars.BAR_SCHEMA`.
        """

    def covered_until(self, end_ms: int, interval: str) -> int:
        """Latest time up to which a fetch is final (live sources cap it at the last closed bar)."""
        return end_ms
