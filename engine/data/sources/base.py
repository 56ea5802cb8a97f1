"""The one interface every data backend implements, and the shared work done once above them.

Backends only know how to produce bars for ``(symbol, interval, [start_ms, end_ms))``
(:meth:`DataSource.ohlcv_fetch`, the one method with their own logic) and state their facts as
attributes and methods of this class. The shared work lives once, here and in
:class:`engine.data.ingest.IngestionService`, the way freqtrade's ``IDataHandler.ohlcv_load``
wraps each handler's ``_ohlcv_load``: :meth:`DataSource.ohlcv_load` trims what a backend served to
the asked span and to what is final, and validates it against the bar contract (one error shape
for every backend: ``"{symbol} {interval}: {problem} at {timestamp} ..."``); the ingestion service
adds the missing ranges, the coverage record, the gap count and the one atomic write. Nothing
above this interface branches on a backend's name or class (``tests/test_data_contract.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import polars as pl

from engine.core.units import DAY_MS, date_ms
from engine.data.bars import bars_conform, bars_validate

if TYPE_CHECKING:
    from datetime import date

    from engine.config import CcxtData, FilesData, SyntheticData
    from engine.data.markets import MarketRow


@dataclass
class UniversePlan:
    """What a universe ingest will read: symbols, range, and the files that cannot be imported."""

    symbols: list[str]
    start_ms: int
    end_ms: int
    bad: list[str] = field(default_factory=list)
    span: tuple[int, int] | None = None
    """First and last bar the source holds (files: read from them), when it knows them before a fetch."""


class DataSource(ABC):
    """A backend that serves OHLCV bars in the bar contract of :mod:`engine.data.bars`."""

    name: str = "base"
    market: str = "spot"
    """``data.market``: ``perp`` adds the market to the identity and lets :meth:`funding_fetch` serve funding."""
    run_ingest: ClassVar[Literal["all", "universe", "none"]] = "universe"
    """What a run ingests before it ranks: ``all`` the symbols the source serves (a generated
    universe, so a run's store is always whole), the ``universe`` (``universe.symbols``, else all),
    or ``none`` (the bars must be ingested first with ``task=ingest``: a run never fetches them)."""
    range_from_config: ClassVar[bool] = False
    """True when ``data.start``/``data.end`` give the data's range, so a run's windows can be counted
    before any bar is read (:func:`engine.run.selection.windows_precheck`)."""
    market_rules_stored: ClassVar[bool] = False
    """True when the ingest stores the exchange's rules with the bars (:meth:`market_rows`), so a run
    that lacks them says so."""
    unreadable_fix: ClassVar[str] = (
        "delete the file it names and rerun `python -m engine task=ingest ...` to fetch it again"
    )
    """What to do about an unreadable file of this source's lakehouse (the end of a one-line error)."""
    funding_fix: ClassVar[str] = "python -m engine task=ingest data.market=perp with the same data settings"
    """How this source's perp data gets its funding (in the one-line error of a run that lacks it)."""

    @classmethod
    def from_config(cls, cfg: SyntheticData | CcxtData | FilesData) -> DataSource:
        """Build the source that ``cfg`` (this backend's ``data`` settings) describes."""
        raise NotImplementedError(cls.__name__)

    @classmethod
    def label(cls, cfg: SyntheticData | CcxtData | FilesData) -> str:
        """Where the bars of ``cfg`` come from, in words (for the console and the report)."""
        return f"the {cls.name} source"

    @classmethod
    def universe_named(cls, cfg: SyntheticData | CcxtData | FilesData) -> tuple[set[str], str] | None:
        """Return the symbols ``cfg`` can serve and the setting that names them, known without reading a bar.

        None when only the data can tell (an exchange's listing, a folder the import must judge).
        """
        return None

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

    def ohlcv_load(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        """Return the bars of ``symbol`` in ``[start_ms, end_ms)``, final, valid and sorted: the shared work.

        Calls the backend's :meth:`ohlcv_fetch`, conforms its frame to the bar schema, keeps the bars
        that open in the asked span and before :meth:`covered_until` (a still-forming bar is never
        stored), and validates them (:func:`engine.data.bars.bars_validate`: identical duplicates
        dropped with a warning; a duplicate timestamp with other values, a non-finite or
        non-positive price, high below low, an off-grid timestamp or an implausible price raise
        :class:`~engine.core.errors.DataError` naming symbol, interval and timestamp). Whatever the
        backend, the same bars give the same frame and the same fault the same error.
        """
        bars = bars_conform(self.ohlcv_fetch(symbol, interval, start_ms, end_ms))
        final = min(end_ms, self.covered_until(end_ms, interval))
        ms = bars.get_column("timestamp").dt.epoch("ms")
        if bars.height and ms.null_count() == 0 and start_ms <= ms.min() and ms.max() < final:  # type: ignore[operator]
            return bars_validate(bars, symbol, interval)  # every bar in the span: the filter would keep them all
        ts = pl.col("timestamp").dt.epoch("ms")
        return bars_validate(bars.filter((ts >= start_ms) & (ts < final)), symbol, interval)

    def universe_plan(
        self, symbols: Sequence[str], interval: str, start: date | None, end: date | None
    ) -> UniversePlan:
        """Return what a universe ingest reads: ``symbols`` (empty: all) from ``start`` to ``end`` inclusive.

        A source whose dates can be null (files) reads its range from its data instead.
        """
        if start is None or end is None:
            msg = f"the {self.name} source needs data.start and data.end"
            raise NotImplementedError(msg)
        return UniversePlan(list(symbols) or self.symbols(), date_ms(start), date_ms(end) + DAY_MS)

    def nothing_read(self, plan: UniversePlan, interval: str) -> str | None:
        """Why an ingest of ``plan`` read no bar at all, where the source can tell better than the dates (None)."""
        return None

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

    def market_identity(self, identity: dict[str, object]) -> dict[str, object]:
        """``identity`` as it is on spot; on perp with the market and the funding layout's version added."""
        if self.market == "spot":
            return identity
        from engine.data.funding import FUNDING_VERSION

        return {**identity, "market": self.market, "funding_version": FUNDING_VERSION}

    def funding_fetch(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        """Funding of ``symbol`` with funding time in ``[start_ms, end_ms)`` (None: this source has none for it).

        Returns a frame with the columns of :data:`engine.data.funding.FUNDING_STORE_SCHEMA`
        (``time`` in epoch ms, ``rate`` a fraction per funding interval, ``mark`` nullable).
        """
        return None

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
