"""Funding rates of perpetual futures in the lakehouse: ``{namespace}/funding/symbol={BASE_QUOTE}/data.parquet``.

A perp data identity (``data.market=perp``) keeps its funding beside its bars, in its own
namespace (:func:`engine.data.lakehouse.store_open`), one Hive partition per symbol holding the
columns ``time`` (Int64, the funding time in epoch ms UTC), ``rate`` (Float64, a fraction per
funding interval; positive: longs pay shorts) and ``mark`` (Float64, nullable: the mark price at
the funding time where the source gives it). Funding has no interval partition: its times are the
exchange's (every 8 h on most, 4 h or 1 h on some, and the schedule may change).

The partition is written like a bars partition (:class:`engine.data.lakehouse.Lakehouse`): one
object whose parquet footer carries its coverage record (the ranges already read, empty ones
included), merged with what is there (existing rows win), committed by one write through the
same :mod:`engine.data.storage` (temp file and rename under the partition's lock on a local
folder, one PUT on S3, read back and merged again if a concurrent writer replaced it). Readers
scan the committed ``data.parquet`` files lazily with polars.

:func:`funding_read` is what a run calls: the funding of its symbols over a span, after
:func:`funding_gaps` has checked that the store read funding wherever it read bars
(``data.funding_missing``: refuse, or assume zero with a warning). The sources' side is
:meth:`engine.data.sources.base.DataSource.funding_fetch`; :func:`funding_ingest` stores it.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import time
from collections.abc import Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING

import polars as pl
import pyarrow.parquet as pq

from engine.core.errors import DataError
from engine.core.symbols import symbol_from_dir, symbol_to_dir
from engine.core.units import DAY_MS, interval_ms, ms_datetime
from engine.data.lakehouse import (
    COVERAGE_KEY,
    DATA_FILE,
    READ_ATTEMPTS,
    WRITE_ATTEMPTS,
    Lakehouse,
    parquet_bytes,
    ranges_merge,
    ranges_missing,
    store_open,
)

if TYPE_CHECKING:
    from engine.config import RunConfig
    from engine.data.sources.base import DataSource

log = logging.getLogger(__name__)
_WARNED: set[tuple[str, tuple[str, ...]]] = set()

FUNDING_VERSION = 1
"""Part of a perp store's identity: bumped when the funding layout or the generator's funding changes."""
KIND = "funding"
GRACE_MS = DAY_MS
"""Funding times more than a day from a symbol's bars (before its first funding, after its last, or
between two) are a hole in the data, not a funding schedule (the longest schedule is 8 h)."""
FUNDING_STORE_SCHEMA: dict[str, pl.DataType] = {"time": pl.Int64(), "rate": pl.Float64(), "mark": pl.Float64()}
"""One symbol's partition (and what a source's ``funding_fetch`` returns)."""
FUNDING_SCHEMA: dict[str, pl.DataType] = {"symbol": pl.String(), **FUNDING_STORE_SCHEMA}
"""What :func:`funding_read` returns: sorted by symbol, time."""
MAX_RATE = 1.0
"""A rate is a fraction per funding interval: ``|rate| >= 1`` (100 % of the position every few hours) is
refused as a unit error (a percentage given as a number, a basis point count)."""


def funding_empty(*, with_symbol: bool = True) -> pl.DataFrame:
    """Return an empty funding frame (with or without the ``symbol`` column)."""
    return pl.DataFrame(schema=FUNDING_SCHEMA if with_symbol else FUNDING_STORE_SCHEMA)


def funding_validate(frame: pl.DataFrame, symbol: str, where: str) -> pl.DataFrame:
    """Return ``frame`` as the store's columns, sorted by time, duplicate times kept last; refuse bad values.

    ``where`` names the origin (a file, an exchange) in the one-line error: a null time, a rate that
    is not finite or not below :data:`MAX_RATE` in size, a mark that is not finite and positive.
    """
    cols = [c for c in FUNDING_STORE_SCHEMA if c not in frame.columns]
    if cols and cols != ["mark"]:
        msg = f"{where}: funding of {symbol} lacks the column(s) {', '.join(cols)}; give time, rate (and mark)"
        raise DataError(msg)
    if "mark" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias("mark"))
    try:
        frame = frame.select(pl.col(c).cast(t, strict=True) for c, t in FUNDING_STORE_SCHEMA.items())
    except pl.exceptions.PolarsError as exc:
        detail = " ".join(str(exc).split())[:160]
        msg = f"{where}: funding of {symbol}: a time, rate or mark is not a number ({detail}); fix the data"
        raise DataError(msg) from None
    frame = frame.unique(subset="time", keep="last", maintain_order=True).sort("time")
    checks = (
        (pl.col("time").is_null(), "a funding time is empty"),
        (~pl.col("rate").is_finite() | pl.col("rate").is_null(), "a rate is empty or not finite"),
        (
            pl.col("rate").abs() >= MAX_RATE,
            "a rate is 100 % or more per interval (rates are fractions: 0.0001 = 0.01 %)",
        ),
        (
            pl.col("mark").is_not_null() & ~(pl.col("mark").is_finite() & (pl.col("mark") > 0)),
            "a mark price is not > 0",
        ),
    )
    for bad, what in checks:
        rows = frame.filter(bad)
        if rows.height:
            t = rows.get_column("time")[0]
            at = "" if t is None else f" at {ms_datetime(int(t)).strftime('%Y-%m-%d %H:%M')} UTC"
            msg = f"{where}: funding of {symbol}: {what}{at} ({rows.height} row(s)); fix the data or remove the file"
            raise DataError(msg)
    return frame


class FundingStore:
    """The funding partitions of one namespace, through the lakehouse's storage."""

    def __init__(self, lakehouse: Lakehouse) -> None:
        self.lake = lakehouse
        self.storage = lakehouse.storage

    def partition(self, symbol: str) -> PurePath:
        """Folder of one symbol's funding."""
        return self.lake.root / KIND / f"symbol={symbol_to_dir(symbol)}"

    def symbols(self) -> list[str]:
        """Symbols with a committed funding partition, sorted."""
        base = self.lake.root / KIND
        return sorted(
            symbol_from_dir(p.parent.name.removeprefix("symbol="))
            for p in self.storage.find(base, DATA_FILE)
            if p.parent.parent == base and p.parent.name.startswith("symbol=")
        )

    def load(self, symbol: str, *, rows: bool = True) -> tuple[pl.DataFrame, list[tuple[int, int]] | None]:
        """One symbol's funding and covered ranges (None: no partition)."""
        frame, ranges = self._read(symbol, rows=rows)
        return (funding_empty(with_symbol=False) if frame is None else frame), ranges

    def _read(self, symbol: str, *, rows: bool) -> tuple[pl.DataFrame | None, list[tuple[int, int]] | None]:
        """:meth:`load` without building an empty frame where there are no rows (None): the coverage's read."""
        path = self.partition(symbol) / DATA_FILE
        attempts = 1 if self.storage.locking else READ_ATTEMPTS
        for attempt in range(attempts):  # S3 has no lock: a read may meet a replacement half-way
            try:
                payload = self.storage.read_bytes(path)
            except FileNotFoundError:
                return None, None
            try:
                meta = pq.read_metadata(io.BytesIO(payload)).metadata or {}
                frame = pl.read_parquet(io.BytesIO(payload)) if rows else None
                record = json.loads(meta[COVERAGE_KEY.encode()])
                return frame, [(int(a), int(b)) for a, b in record["ranges"]]
            except Exception as exc:
                if attempt + 1 < attempts:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                msg = (
                    f"unreadable funding in the lakehouse ({self.lake.url(path)}, {type(exc).__name__}): "
                    "delete that file (the next ingest or run reads it again) and rerun"
                )
                raise DataError(self.storage.redact(msg)) from exc
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def coverage(self, symbol: str) -> list[tuple[int, int]]:
        """Return the ranges whose funding was read (empty: none)."""
        return self._read(symbol, rows=False)[1] or []

    def write(self, symbol: str, frame: pl.DataFrame, covered: list[tuple[int, int]]) -> int:
        """Merge ``frame`` into the symbol's partition and extend its coverage; return the rows added."""
        self.lake._identity_commit()
        part = self.partition(symbol)
        added = 0
        with self.storage.locked(part):
            for _ in range(WRITE_ATTEMPTS):
                old, have = self.load(symbol)
                merged = (
                    pl.concat([old, frame.select(list(FUNDING_STORE_SCHEMA))], how="vertical")
                    .unique(subset="time", keep="first", maintain_order=True)
                    .sort("time")
                )
                added = max(added, merged.height - old.height)
                ranges = ranges_merge((have or []) + covered)
                if have is not None and merged.height == old.height and ranges == have:
                    break
                meta = {COVERAGE_KEY: json.dumps({"ranges": ranges}, sort_keys=True)}
                self.storage.write_bytes(part / DATA_FILE, parquet_bytes(merged, meta))
                back = self.coverage(symbol)  # S3 has no lock: another writer may have replaced it meanwhile
                if not any(ranges_missing(ranges_merge(back), a, b) for a, b in covered if b > a):
                    break
                log.info("%s: replaced by a concurrent writer; merging again", self.lake.url(part))
        return added

    def scan(self, symbols: Sequence[str], start_ms: int, end_ms: int) -> pl.LazyFrame:
        """Lazy scan of the committed partitions of ``symbols`` over ``[start_ms, end_ms)``."""
        glob = self.storage.scan_url(self.lake.root / KIND / "symbol=*" / DATA_FILE)
        dirs = [symbol_to_dir(s) for s in symbols]
        return (
            pl.scan_parquet(
                glob, hive_partitioning=True, hive_schema={"symbol": pl.String()}, **self.storage.polars_options()
            )
            .filter(pl.col("symbol").is_in(dirs) & (pl.col("time") >= start_ms) & (pl.col("time") < end_ms))
            .with_columns(pl.col("symbol").str.replace("_", "/", literal=True))
        )


def funding_ingest(
    lakehouse: Lakehouse,
    source: DataSource,
    symbols: Sequence[str],
    start_ms: int,
    end_ms: int,
    interval: str,
    *,
    warn: bool = True,
) -> list[str]:
    """Read the funding of ``symbols`` that the store lacks over the bars' range; return the symbols without any.

    The range is aligned to ``interval`` as the bars' is, so the store covers funding wherever it
    covers bars. A source that has no funding for a symbol (``funding_fetch`` None: no funding file,
    no perpetual market) writes nothing: :func:`funding_read` then refuses or assumes zero. ``warn``:
    name such symbols in a warning (the ingest task; a run's check names them in its error instead).
    """
    store = FundingStore(lakehouse)
    step = interval_ms(interval)
    lo, hi = start_ms // step * step, -(-end_ms // step) * step
    without: list[str] = []
    for symbol in symbols:
        for a, b in ranges_missing(ranges_merge(store.coverage(symbol)), lo, hi):
            frame = source.funding_fetch(symbol, a, b)
            if frame is None:
                without.append(symbol)
                break
            frame = funding_validate(frame, symbol, source.name)
            covered = _covered(lakehouse, interval, symbol, frame, a, min(b, source.covered_until(b, "1m")))
            if not covered and frame.height == 0:
                continue  # nothing read, nothing to record: the check names the symbol
            try:
                store.write(symbol, frame, covered)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                msg = (
                    f"cannot write the funding of {symbol} into {lakehouse.url(store.partition(symbol))}: the store "
                    f"lacks it and the lakehouse is read-only to this user ({exc.strerror}): add that data once as a "
                    "user who can write the lakehouse, or set paths.lakehouse_dir to a folder you own"
                )
                raise DataError(msg) from None
    if without:
        (log.warning if warn else log.info)(
            "%d perp symbol(s) without funding in the %s source: %s (a run refuses them unless data.funding_missing=zero)",
            len(without),
            source.name,
            _names(without),
        )
    return without


def _covered(
    lakehouse: Lakehouse, interval: str, symbol: str, frame: pl.DataFrame, a: int, final: int
) -> list[tuple[int, int]]:
    """Return the part of ``[a, final)`` whose funding was read: where the bars have funding around them.

    A source's funding that starts more than :data:`GRACE_MS` after the symbol's first bar in the
    range (or ends that long before its last) leaves the bars outside it uncovered, so
    :func:`funding_read` refuses them (or assumes zero, saying so) instead of paying nothing there
    silently. A gap of more than :data:`GRACE_MS` between two funding times inside is named in a warning.
    """
    if final <= a:
        return []
    bars = lakehouse.read("bars", interval, symbol).get_column("timestamp").dt.epoch("ms")
    bars = bars.filter((bars >= a) & (bars < final))
    if bars.len() == 0:
        return [(a, final)]
    if frame.height == 0:
        return []
    times = frame.get_column("time")
    first, last = int(times.min()), int(times.max())  # type: ignore[arg-type]
    lo = a if first <= int(bars.min()) + GRACE_MS else first  # type: ignore[arg-type]
    hi = final if last + GRACE_MS >= int(bars.max()) else last + 1  # type: ignore[arg-type]
    widest = int(times.diff().max() or 0)  # type: ignore[arg-type]
    if widest > GRACE_MS:
        log.warning(
            "%s: %.1f days without a funding time inside its funding data (nothing is paid there)",
            symbol,
            widest / DAY_MS,
        )
    return [(lo, hi)] if hi > lo else []


def funding_prepare(cfg: RunConfig, source: DataSource, lakehouse: Lakehouse) -> None:
    """Check every symbol's funding of a perp run.

    Every source reads funding with its bars (:func:`engine.data.ingest.universe_ingest`: the
    generator and files in the run's data step, exchanges at ``task=ingest``). The check is
    :func:`funding_read`'s, over the whole store: a run without funding for a symbol stops here,
    before any window is planned (or warns once with ``data.funding_missing=zero``).
    """
    base = cfg.backtest.interval
    symbols = lakehouse.symbols("bars", base)
    funding_read(cfg, symbols, 0, 0, lakehouse=lakehouse, gaps_span=(-(2**62), 2**62))


def funding_gaps(lakehouse: Lakehouse, symbols: Sequence[str], interval: str, start_ms: int, end_ms: int) -> list[str]:
    """Symbols whose store read bars (at ``interval``) but not funding somewhere in ``[start_ms, end_ms)``."""
    store = FundingStore(lakehouse)
    gaps = []
    for symbol in symbols:
        have = ranges_merge(store.coverage(symbol))
        bars = ranges_merge(lakehouse.coverage("bars", interval, symbol))
        need = [(max(a, start_ms), min(b, end_ms)) for a, b in bars if min(b, end_ms) > max(a, start_ms)]
        if any(ranges_missing(have, a, b) for a, b in need):
            gaps.append(symbol)
    return gaps


def _names(symbols: Sequence[str]) -> str:
    return ", ".join(symbols[:10]) + (f" and {len(symbols) - 10} more" if len(symbols) > 10 else "")


def funding_read(
    cfg: RunConfig,
    symbols: Sequence[str],
    start_ms: int,
    end_ms: int,
    lakehouse: Lakehouse | None = None,
    *,
    gaps_span: tuple[int, int] | None = None,
    checked: Lakehouse | None = None,
) -> pl.DataFrame:
    """Return the funding of ``symbols`` with funding time in ``[start_ms, end_ms)``, sorted by symbol, time.

    Columns :data:`FUNDING_SCHEMA`: ``symbol`` (Utf8), ``time`` (Int64, epoch ms UTC), ``rate``
    (Float64, a fraction per funding interval, positive: longs pay shorts), ``mark`` (Float64, null
    where the source gave no mark price). A symbol without funding in the span has no rows.

    A symbol whose store read bars but no funding somewhere in the span: with
    ``data.funding_missing=error`` (the default) one :class:`~engine.core.errors.DataError` line
    naming the symbols and the fix (exit 2); with ``zero`` a warning line saying funding is assumed
    zero for them. On spot data (``data.market=spot``) there is no funding: an error.
    ``lakehouse`` defaults to the store of ``cfg.data``; ``gaps_span`` (default the span read) is
    where the check looks. ``checked``: a store whose every symbol's funding this run checked over
    the whole store already (:func:`funding_prepare`, in the plan's data step): read from that same
    store with ``funding_missing=error``, a check of fewer symbols over a shorter span can only pass,
    so it is not made again.
    """
    data = cfg.data
    if not data.is_perp():
        msg = "funding is read only for perpetual futures: set data.market=perp (the data's market is spot)"
        raise DataError(msg)
    if lakehouse is None:
        from engine.data.sources.registry import source_from_config

        lakehouse = store_open(cfg.paths.lakehouse_dir, source_from_config(data).identity())
    lo, hi = gaps_span or (start_ms, end_ms)
    done = checked is not None and checked.url() == lakehouse.url() and data.funding_missing == "error"
    gaps = [] if done else funding_gaps(lakehouse, symbols, cfg.backtest.interval, lo, hi)
    if gaps and data.funding_missing == "error":
        msg = (
            f"no funding data for {len(gaps)} perp symbol(s) where the store has their bars: {_names(gaps)}; "
            f"ingest it with the same data settings ({_fix(data.source)}), or set data.funding_missing=zero "
            "to assume zero funding for them"
        )
        raise DataError(msg)
    if gaps and (lakehouse.url(), tuple(gaps)) not in _WARNED:
        _WARNED.add((lakehouse.url(), tuple(gaps)))  # once per store and symbols: the plan checks, then the book reads
        log.warning(
            "data.funding_missing=zero: funding is assumed zero where the store has none, for %d symbol(s): %s",
            len(gaps),
            _names(gaps),
        )
    store = FundingStore(lakehouse)
    present = set(store.symbols())
    wanted = [s for s in symbols if s in present]
    if not wanted or end_ms <= start_ms:
        return funding_empty()
    frame = store.scan(wanted, start_ms, end_ms).select(list(FUNDING_SCHEMA)).collect()
    return frame.cast(FUNDING_SCHEMA).sort("symbol", "time")  # type: ignore[arg-type]


def _fix(source: str) -> str:
    """Return how the data of ``data.source=source`` gets its funding (its backend says)."""
    from engine.data.sources.registry import source_class

    return source_class(source).funding_fix
