"""Bars from a folder of the user's own OHLCV files: csv, parquet, freqtrade feather.

File naming (freqtrade's, for every format): ``{BASE}_{QUOTE}-{timeframe}.{csv|parquet|feather}``,
e.g. ``BTC_USDT-4h.csv``, ``ETH_USDT-1d.parquet``, ``BTC_USDT-4h.feather``. Other files in the
folder (freqtrade's ``-trades`` and ``-futures`` files, notes) are ignored.

Columns: ``open, high, low, close, volume`` plus one time column named ``date`` (freqtrade),
``timestamp``, ``time`` or ``open_time`` (Binance dumps), case-insensitive, holding the bar open
time as a datetime (naive means UTC), an ISO-8601 string, or epoch numbers. The unit of epoch
numbers is read from their size: below 1e11 seconds, below 1e14 milliseconds, below 1e17
microseconds (Binance dumps since 2025), else nanoseconds.

Each file is read and validated whole once per source, so a bad bar is reported with its symbol,
interval, timestamp and file even if it lies outside the requested range.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from engine.config import FilesData
from engine.data.bars import BAR_SCHEMA, bars_validate, interval_ms
from engine.data.sources.base import DataSource
from engine.errors import DataError, EngineError

SUFFIXES = (".csv", ".parquet", ".feather")
TIME_COLUMNS = ("date", "timestamp", "time", "open_time")
_NAME = re.compile(r"^([A-Z0-9]{1,20})_([A-Z0-9]{1,20})-([1-9]\d*[mhdw])$")
# Epoch magnitude thresholds: 1e11 s is the year 5138, 1e11 ms is 1973, and so on per unit.
_EPOCH_UNITS = ((1e11, 1000), (1e14, 1), (1e17, 1e-3))


class FilesSource(DataSource):
    """Serves bars from ``{BASE}_{QUOTE}-{timeframe}.{csv,parquet,feather}`` files in ``cfg.path``.

    Examples
    --------
    >>> from engine.config import FilesData
    >>> src = FilesSource(FilesData(path="data/import"))  # doctest: +SKIP
    >>> src.symbols(), src.intervals()  # doctest: +SKIP
    (['BTC/USDT'], ('4h', '1d'))
    """

    name = "files"

    def __init__(self, cfg: FilesData) -> None:
        self.cfg = cfg
        self.root = Path(cfg.path)
        self._frames: dict[Path, pl.DataFrame] = {}

    def files(self) -> dict[tuple[str, str], Path]:
        """Importable files by ``(symbol, interval)``; two files for one key is an error."""
        if not self.root.is_dir():
            msg = f"data folder {self.root} does not exist: create it or set data.path to the folder of your files"
            raise DataError(msg)
        found: dict[tuple[str, str], Path] = {}
        for path in sorted(self.root.iterdir()):
            match = _NAME.match(path.stem)
            if path.suffix not in SUFFIXES or match is None or not path.is_file():
                continue
            key = (f"{match.group(1)}/{match.group(2)}", match.group(3))
            if key in found:
                msg = f"two files for {key[0]} {key[1]} in {self.root}: {found[key].name} and {path.name}; keep one"
                raise DataError(msg)
            found[key] = path
        return found

    def symbols(self) -> list[str]:
        """Symbols with at least one file, quoted in ``cfg.quote``."""
        return sorted({s for s, _ in self.files() if s.endswith("/" + self.cfg.quote)})

    def intervals(self) -> tuple[str, ...]:
        """Timeframes that appear in file names, finest first."""
        return tuple(sorted({i for _, i in self.files()}, key=interval_ms))

    def ohlcv_fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        """Bars of the file for ``(symbol, interval)`` with open time in ``[start_ms, end_ms)``."""
        path = self.files().get((symbol, interval))
        if path is None:
            stem = symbol.replace("/", "_") + f"-{interval}"
            msg = f"no file for {symbol} {interval} in {self.root}: add {stem}.csv, {stem}.parquet or {stem}.feather"
            raise DataError(msg)
        frame = self._frames.get(path)
        if frame is None:
            frame = self._frames[path] = ohlcv_load(path, symbol, interval)
        lo = pl.lit(start_ms).cast(pl.Datetime("ms", "UTC"))
        hi = pl.lit(end_ms).cast(pl.Datetime("ms", "UTC"))
        return frame.filter((pl.col("timestamp") >= lo) & (pl.col("timestamp") < hi))


def _read(path: Path) -> pl.DataFrame:
    if path.suffix == ".csv":
        return pl.read_csv(path)
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    # freqtrade writes feather with pandas (Arrow IPC v2, lz4/zstd): polars reads it directly.
    return pl.read_ipc(path)


def _timestamps(col: pl.Series, path: Path) -> pl.Series:
    """A time column of any supported encoding as UTC ms datetimes."""
    dtype = col.dtype
    if dtype == pl.String:
        parsed = col.str.strip_chars().str.to_datetime(time_unit="ms", strict=True)
        col = parsed
        dtype = col.dtype
    if isinstance(dtype, pl.Datetime):
        col = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
        return col.dt.cast_time_unit("ms")
    if isinstance(dtype, pl.Date):
        return col.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
    if dtype.is_numeric():
        peak = col.abs().max()
        factor: float = 1e-6
        for limit, f in _EPOCH_UNITS:
            if peak is not None and float(peak) < limit:  # type: ignore[arg-type]
                factor = f
                break
        return (col.cast(pl.Float64) * factor).round(0).cast(pl.Int64).cast(pl.Datetime("ms", "UTC"))
    msg = f"{path}: time column {col.name!r} has type {dtype}; store epoch seconds/ms or ISO-8601 datetimes"
    raise DataError(msg)


def ohlcv_load(path: Path, symbol: str, interval: str) -> pl.DataFrame:
    """Read, normalise and validate one file; every failure names the file and the fix."""
    try:
        raw = _read(path)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160]
        msg = (
            f"cannot read {path} ({type(exc).__name__}: {detail}): re-export it as valid "
            f"{path.suffix.lstrip('.')} or remove it from {path.parent}"
        )
        raise DataError(msg) from exc
    raw = raw.rename({c: c.strip().lower() for c in raw.columns})
    time_col = next((c for c in TIME_COLUMNS if c in raw.columns), None)
    missing = [c for c in BAR_SCHEMA if c != "timestamp" and c not in raw.columns]
    if time_col is None or missing:
        need = ", ".join(missing + ([] if time_col else ["one of " + "/".join(TIME_COLUMNS)]))
        msg = f"{path}: missing column(s) {need}; the file needs a time column and open, high, low, close, volume"
        raise DataError(msg)
    try:
        ts = _timestamps(raw.get_column(time_col), path)
        frame = raw.select(
            ts.alias("timestamp"), *[pl.col(c).cast(pl.Float64, strict=True) for c in BAR_SCHEMA if c != "timestamp"]
        )
    except pl.exceptions.PolarsError as exc:
        detail = " ".join(str(exc).split())[:160]
        msg = f"{path}: cannot convert columns ({detail}); use numbers for prices/volume and ISO or epoch times"
        raise DataError(msg) from exc
    try:
        return bars_validate(frame, symbol, interval)
    except EngineError as exc:
        msg = f"{exc} (file {path})"
        raise DataError(msg) from exc
