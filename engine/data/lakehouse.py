"""The Hive-partitioned parquet store: ``{root}/{kind}/interval={i}/symbol={BASE_QUOTE}/data.parquet``.

``kind`` is ``bars`` (the daily universe) or ``mtf`` (finer bars, fetched lazily for winners).
Every write is atomic (temp file in the same directory, then ``os.replace``) and serialised per
partition by an advisory file lock, so a killed process leaves no partial parquet and two
processes writing the same symbol merge instead of clobbering each other. Each partition keeps a
coverage record (``_coverage.json``) of the time ranges already fetched, including ranges that
held no bars, so a second identical request fetches nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from engine.data.bars import BAR_SCHEMA, bars_validate, interval_ms, symbol_from_dir, symbol_to_dir
from engine.errors import DataError

KINDS = ("bars", "mtf")
DATA_FILE = "data.parquet"
COVERAGE_FILE = "_coverage.json"


def ranges_merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of half-open ``[start, end)`` ranges, sorted and coalesced."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def ranges_missing(have: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """Parts of ``[start, end)`` not covered by ``have`` (which must be merged)."""
    missing: list[tuple[int, int]] = []
    cursor = start
    for lo, hi in have:
        if hi <= cursor:
            continue
        if lo >= end:
            break
        if lo > cursor:
            missing.append((cursor, min(lo, end)))
        cursor = max(cursor, hi)
        if cursor >= end:
            break
    if cursor < end:
        missing.append((cursor, end))
    return missing


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temp file and rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as indented, key-sorted JSON (stable bytes for the same content), atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def parquet_write_atomic(df: pl.DataFrame, path: Path) -> None:
    """Write a parquet file atomically with settings fixed for byte-identical output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.write_parquet(tmp, compression="zstd", compression_level=3, statistics=True, row_group_size=1 << 20)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Lakehouse:
    """Paths, atomic writes, coverage and lazy scans of the parquet store rooted at ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def partition(self, kind: str, interval: str, symbol: str) -> Path:
        """Directory of one (kind, interval, symbol) partition."""
        if kind not in KINDS:
            msg = f"unknown lakehouse kind {kind!r}: use one of {KINDS}"
            raise DataError(msg)
        interval_ms(interval)  # rejects anything that is not a plain interval (no path tricks)
        return self.root / kind / f"interval={interval}" / f"symbol={symbol_to_dir(symbol)}"

    def glob(self, kind: str, interval: str) -> str:
        """Glob over every symbol's parquet of one kind and interval (for polars and DuckDB)."""
        return str(self.root / kind / f"interval={interval}" / "symbol=*" / "*.parquet")

    def symbols(self, kind: str, interval: str) -> list[str]:
        """Symbols with a data file, sorted."""
        base = self.root / kind / f"interval={interval}"
        if not base.is_dir():
            return []
        return sorted(
            symbol_from_dir(p.name.removeprefix("symbol="))
            for p in base.iterdir()
            if p.name.startswith("symbol=") and (p / DATA_FILE).is_file()
        )

    @contextlib.contextmanager
    def locked(self, kind: str, interval: str, symbol: str) -> Iterator[Path]:
        """Hold the partition's exclusive lock (blocks while another process writes it)."""
        part = self.partition(kind, interval, symbol)
        part.mkdir(parents=True, exist_ok=True)
        with (part / ".lock").open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield part
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def coverage(self, kind: str, interval: str, symbol: str) -> list[tuple[int, int]]:
        """Fetched ``[start_ms, end_ms)`` ranges of a partition (empty if none)."""
        path = self.partition(kind, interval, symbol) / COVERAGE_FILE
        if not path.is_file() or not path.with_name(DATA_FILE).is_file():
            return []  # a deleted data file voids its coverage, so the next run refetches it
        try:
            return [(int(a), int(b)) for a, b in json.loads(path.read_text())["ranges"]]
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"corrupt coverage record {path}: delete it and the run refetches that partition"
            raise DataError(msg) from exc

    def read(self, kind: str, interval: str, symbol: str) -> pl.DataFrame:
        """All bars of one partition (an empty frame with the bar schema if none)."""
        path = self.partition(kind, interval, symbol) / DATA_FILE
        if not path.is_file():
            return pl.DataFrame(schema=BAR_SCHEMA)
        try:
            return pl.read_parquet(path)
        except Exception as exc:
            msg = f"corrupt parquet {path}: delete the file and rerun to refetch it ({exc.__class__.__name__})"
            raise DataError(msg) from exc

    def write(
        self,
        kind: str,
        interval: str,
        symbol: str,
        bars: pl.DataFrame,
        covered: list[tuple[int, int]] | None = None,
        *,
        replace: bool = False,
    ) -> int:
        """Merge ``bars`` into a partition and extend its coverage; returns rows added.

        Under the partition lock: read what is there, union, drop duplicate timestamps (existing
        rows win, so concurrent writers of the same range are idempotent), validate, write atomically.
        """
        bars = bars_validate(bars, symbol, interval)
        with self.locked(kind, interval, symbol) as part:
            for stale in part.glob(".*.tmp-*"):  # left by a process killed mid-write
                stale.unlink(missing_ok=True)
            old = pl.DataFrame(schema=BAR_SCHEMA) if replace else self.read(kind, interval, symbol)
            merged = (
                pl.concat([old, bars], how="vertical")
                .unique(subset="timestamp", keep="first", maintain_order=True)
                .sort("timestamp")
            )
            added = merged.height - old.height
            if added or replace or not (part / DATA_FILE).is_file():
                parquet_write_atomic(merged, part / DATA_FILE)
            if covered:
                have = [] if replace else self.coverage(kind, interval, symbol)
                ranges = ranges_merge(have + covered)
                atomic_write_bytes(part / COVERAGE_FILE, json.dumps({"ranges": ranges}).encode())
        return added

    def scan(self, kind: str, interval: str) -> pl.LazyFrame:
        """Lazy scan of every symbol of one kind and interval, with ``symbol`` as a column."""
        if not self.symbols(kind, interval):
            msg = (
                f"no {interval} data under {self.root / kind}: run the ingest task or use the "
                "synthetic source (data=synthetic) to generate it"
            )
            raise DataError(msg)
        return pl.scan_parquet(self.glob(kind, interval), hive_partitioning=True).with_columns(
            pl.col("symbol").cast(pl.String).str.replace("_", "/", literal=True)
        )
