"""The one interface every data backend implements.

Backends only know how to produce bars for ``(symbol, interval, [start_ms, end_ms))``; the shared
work (missing ranges, validation, atomic storage, coverage) lives once in
:class:`engine.data.ingest.IngestionService`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from engine.data.markets import MarketRow


class DataSource(ABC):
    """A backend that serves OHLCV bars in the bar contract of :mod:`engine.data.bars`."""

    name: str = "base"
    concurrent_fetch: bool = False
    """True: ``ohlcv_fetch`` is a pure, thread-safe computation, run ahead in worker threads by an ingest."""

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

    def interval_problem(self, interval: str) -> str | None:
        """Why this source cannot serve ``interval`` (None if it can)."""
        available = self.intervals()
        if interval in available:
            return None
        return f"interval {interval!r} is not available from the {self.name} source: available intervals are {', '.join(available)}"

    def identity(self) -> dict[str, object]:
        """Everything that changes the bytes this source serves: its store's namespace key.

        Two sources with equal identities share one lakehouse namespace; any difference gives
        each its own (see :func:`engine.data.lakehouse.store_open`).
        """
        return {"source": self.name}

    def origin(self, symbol: str, interval: str) -> object:
        """Fingerprint of what serves ``(symbol, interval)`` (a file's name, size and content hash), or None.

        When it differs from the one recorded in the store, the partition is re-imported whole.
        """
        return None

    def skipped(self) -> list[tuple[Path, str]]:
        """Files this source passed over (not a pair's bars), each with the reason; none for most sources."""
        return []

    def covered_until(self, end_ms: int, interval: str) -> int:
        """Latest time up to which a fetch is final (live sources cap it at the last closed bar)."""
        return end_ms

    def market_rows(self, symbols: Sequence[str]) -> tuple[dict[str, MarketRow], dict[str, object]] | None:
        """Return the exchange's rules of ``symbols`` and where they come from (None: no exchange rules).

        See :func:`engine.data.markets.markets_record`.
        """
        return None
