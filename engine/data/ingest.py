"""IngestionService: the shared work above every backend.

It asks the lakehouse what is already covered, fetches only the missing ranges from the source,
validates the bars and writes them atomically. The daily universe lives under ``bars/``; finer
bars are fetched lazily, only for a window's winners, under ``mtf/``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engine.data.bars import bars_gaps, interval_ms
from engine.data.lakehouse import Lakehouse, ranges_missing
from engine.data.sources.base import DataSource
from engine.errors import DataError
from engine.progress import progress_iter

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one ingestion call did: requests made, rows written, gaps seen."""

    fetched: list[tuple[str, str, int, int]] = field(default_factory=list)
    rows_written: int = 0
    gaps: dict[tuple[str, str], int] = field(default_factory=dict)


class IngestionService:
    """Fetch what is missing from ``source`` into ``lakehouse``; never fetch a range twice."""

    def __init__(self, lakehouse: Lakehouse, source: DataSource, *, quiet: bool = True) -> None:
        self.lakehouse = lakehouse
        self.source = source
        self.quiet = quiet

    def interval_check(self, interval: str, base: str = "1d") -> None:
        """Reject an interval the source cannot serve or that is coarser than ``base``."""
        step = interval_ms(interval)
        available = self.source.intervals()
        if interval not in available:
            msg = (
                f"interval {interval!r} is not available from the {self.source.name} source: "
                f"available intervals are {', '.join(available)}"
            )
            raise DataError(msg)
        if step > interval_ms(base):
            msg = f"interval {interval!r} is coarser than the {base} base bars: use a finer interval, e.g. '4h'"
            raise DataError(msg)

    def _fetch(
        self, kind: str, symbols: Sequence[str], intervals: Iterable[str], start_ms: int, end_ms: int, label: str
    ) -> IngestReport:
        report = IngestReport()
        tasks: list[tuple[str, str, int, int]] = []
        for interval in intervals:
            step = interval_ms(interval)
            lo = start_ms // step * step
            hi = -(-end_ms // step) * step
            for symbol in symbols:
                have = self.lakehouse.coverage(kind, interval, symbol)
                tasks.extend((symbol, interval, a, b) for a, b in ranges_missing(have, lo, hi))
        for symbol, interval, a, b in progress_iter(tasks, label, quiet=self.quiet or not tasks):
            bars = self.source.ohlcv_fetch(symbol, interval, a, b)
            final_end = min(b, self.source.covered_until(b, interval))
            covered = [(a, final_end)] if final_end > a else []
            report.rows_written += self.lakehouse.write(kind, interval, symbol, bars, covered)
            report.fetched.append((symbol, interval, a, b))
            gaps = bars_gaps(bars, interval) if bars.height else 0
            if gaps:
                report.gaps[(symbol, interval)] = gaps
        for (symbol, interval), n in report.gaps.items():
            log.warning("%s %s: %d missing bar(s) inside the fetched range", symbol, interval, n)
        return report

    def fetch_universe(self, symbols: Sequence[str], start_ms: int, end_ms: int, interval: str = "1d") -> IngestReport:
        """Ingest the daily universe (``bars/``) for ``symbols`` over ``[start_ms, end_ms)``."""
        self.interval_check(interval)
        return self._fetch("bars", symbols, [interval], start_ms, end_ms, f"ingest {interval} universe")

    def fetch_mtf_for_candidates(
        self, candidates: Sequence[str], intervals: Sequence[str], start_ms: int, end_ms: int
    ) -> IngestReport:
        """Fetch finer bars (``mtf/``) only for ``candidates``, only where not already covered."""
        for interval in intervals:
            self.interval_check(interval)
        return self._fetch("mtf", candidates, intervals, start_ms, end_ms, "fetch MTF bars")
