"""IngestionService: the shared work above every backend.

It asks the lakehouse what is already covered, fetches only the missing ranges through the
source's :meth:`~engine.data.sources.base.DataSource.ohlcv_load` (the backend's bars trimmed and
validated once, the same way for every backend), counts the gaps, records the coverage and
writes each partition atomically; a lakehouse the user cannot write is one line, whatever the
storage. The daily universe lives under ``bars/``; finer bars are fetched lazily, only for a
window's winners, under ``mtf/``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from engine.core.ahead import ahead
from engine.core.errors import DataError
from engine.core.progress import progress_iter
from engine.core.units import interval_ms, ms_datetime
from engine.data.bars import bars_gaps
from engine.data.lakehouse import Lakehouse, ranges_missing
from engine.data.markets import markets_record
from engine.data.sources.base import DataSource, UniversePlan

if TYPE_CHECKING:
    from engine.config import RunConfig


log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one ingestion call did: requests made, rows written, gaps seen."""

    fetched: list[tuple[str, str, int, int]] = field(default_factory=list)
    bars_read: int = 0
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
        problem = self.source.interval_problem(interval)
        if problem is not None:
            raise DataError(problem)
        if step > interval_ms(base):
            msg = f"interval {interval!r} is coarser than the {base} base bars: use a finer interval, e.g. '4h'"
            raise DataError(msg)

    def _fetch(
        self, kind: str, symbols: Sequence[str], intervals: Iterable[str], start_ms: int, end_ms: int, label: str
    ) -> IngestReport:
        report = IngestReport()
        tasks: list[tuple[str, str, int, int]] = []
        stale: set[tuple[str, str]] = set()  # partitions whose source file changed: re-imported whole
        origins: dict[tuple[str, str], object] = {}
        for interval in intervals:
            step = interval_ms(interval)
            lo = start_ms // step * step
            hi = -(-end_ms // step) * step
            for symbol in symbols:
                origin = origins[(symbol, interval)] = self.source.origin(symbol, interval)
                have = self.lakehouse.coverage(kind, interval, symbol)
                if origin is not None and have and self.lakehouse.origin(kind, interval, symbol) != origin:
                    stale.add((symbol, interval))
                    have = []
                tasks.extend((symbol, interval, a, b) for a, b in ranges_missing(have, lo, hi))

        def fetch(task: tuple[str, str, int, int]) -> pl.DataFrame:
            return self.source.ohlcv_load(*task)  # trimmed and validated, once for every backend

        # a source whose fetches are pure computations (the generator) draws and validates the next
        # symbols in worker threads while this one writes, in the same order
        # closed in this thread when the loop stops early (a write refused): never by the collector in
        # a worker thread, whose pool cannot join itself
        fetched = ahead(fetch, tasks, workers=None if self.source.concurrent_fetch else 1)
        with contextlib.closing(fetched):
            for (symbol, interval, a, b), bars in progress_iter(
                zip(tasks, fetched, strict=True), label, quiet=self.quiet or not tasks
            ):
                report.bars_read += bars.height
                final_end = min(b, self.source.covered_until(b, interval))
                covered = [(a, final_end)] if final_end > a else []
                replace = (symbol, interval) in stale
                stale.discard((symbol, interval))
                if replace:
                    log.warning(
                        "%s %s: its source file changed since the last import; re-importing it", symbol, interval
                    )
                try:
                    report.rows_written += self.lakehouse.write(
                        kind,
                        interval,
                        symbol,
                        bars,
                        covered,
                        replace=replace,
                        origin=origins[(symbol, interval)],
                        validated=True,
                    )
                except OSError as exc:
                    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                        raise
                    part = self.lakehouse.url(self.lakehouse.partition(kind, interval, symbol))
                    why = (
                        "its source file changed"
                        if replace
                        else f"it lacks {day_text(a)} to {day_text(b)}, which this run needs"
                    )
                    msg = (
                        f"cannot write the partition {part} ({symbol} {interval}): {why}, and the lakehouse is "
                        f"read-only to this user ({exc.strerror}: {exc.filename}): add that data once as a user "
                        "who can write the lakehouse, or set paths.lakehouse_dir to a folder you own"
                    )
                    raise DataError(msg) from None
                report.fetched.append((symbol, interval, a, b))
                gaps = bars_gaps(bars, interval) if bars.height else 0
                if gaps:
                    report.gaps[(symbol, interval)] = gaps
        for (symbol, interval), n in report.gaps.items():
            why = (
                "a bar resampled from finer ones needs all of them"
                if kind == "mtf"
                else "the simulation carries the last price flat over them"
            )
            log.warning("%s %s: %d missing bar(s) inside the range read (%s)", symbol, interval, n, why)
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


def day_text(ms: int) -> str:
    """Return an epoch-ms time as ``YYYY-MM-DD HH:MM`` (UTC), as the ingest lines print it."""
    return ms_datetime(ms).strftime("%Y-%m-%d %H:%M")


class NothingRead(DataError):
    """An ingest whose filters (dates, quote, symbols) leave no bar at all."""


def nothing_read(cfg: RunConfig, plan: UniversePlan, source: DataSource) -> str:
    """One line naming the filter that removed every bar (the source's own reason where it has one)."""
    own = source.nothing_read(plan, cfg.backtest.interval)
    if own is not None:
        return own
    data = cfg.data
    quote = getattr(data, "quote", None)
    return (
        f"0 bars read from the {data.source} source for {len(plan.symbols)} symbol(s) between "
        f"data.start={getattr(data, 'start', None)} and data.end={getattr(data, 'end', None)}"
        + (f" (data.quote={quote})" if quote else "")
        + ": check the dates, universe.symbols and the quote"
    )


def universe_ingest(
    service: IngestionService, cfg: RunConfig, *, strict: bool, symbols: Sequence[str] | None = None
) -> tuple[IngestReport, UniversePlan]:
    """Ingest the universe's base bars (``backtest.interval``) of ``cfg.data`` through ``service`` (coverage-aware).

    ``symbols``: what to ingest (None: ``universe.symbols``, else every symbol the source serves).
    ``strict``: any unreadable or invalid file is an error (a run); otherwise the good files are
    imported and the bad ones returned in the plan (the ingest task names them and exits 1).
    """
    source = service.source
    data = cfg.data
    wanted = cfg.universe.symbols if symbols is None else symbols
    plan = source.universe_plan(wanted, cfg.backtest.interval, data.start, data.end)
    if strict:  # a run: the ingest task prints these itself
        for path, why in source.skipped():
            log.warning("skipped %s: %s", path.name, why)
    if strict and plan.bad:
        raise DataError(plan.bad[0])
    if plan.span is not None and (plan.span[1] < plan.start_ms or plan.span[0] >= plan.end_ms):
        raise NothingRead(nothing_read(cfg, plan, source))  # before anything is written
    if not plan.symbols:
        return IngestReport(), plan
    report = service.fetch_universe(plan.symbols, plan.start_ms, plan.end_ms, cfg.backtest.interval)
    # an exchange's rules (ccxt) stored with its bars; inactive markets it served no bars of are left out
    plan.symbols = markets_record(service.lakehouse, source, plan.symbols, cfg.backtest.interval)
    if report.fetched and report.bars_read == 0 and not service.lakehouse.symbols("bars", cfg.backtest.interval):
        raise NothingRead(nothing_read(cfg, plan, source))
    if cfg.data.is_perp():  # perpetual futures: their funding beside the bars (docs/PERPETUALS.md)
        from engine.data.funding import funding_ingest

        lake, base = service.lakehouse, cfg.backtest.interval
        funding_ingest(lake, source, plan.symbols, plan.start_ms, plan.end_ms, base, warn=not strict)
    return report, plan
