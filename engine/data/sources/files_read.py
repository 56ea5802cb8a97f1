"""Reading one OHLCV file (csv, parquet, feather, json) into the bar schema: columns, times, validation."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from engine.core.choices import Implausible
from engine.core.errors import DataError, EngineError
from engine.data.bars import BAR_SCHEMA, ImplausibleBars, bars_validate

TIME_COLUMNS = ("date", "timestamp", "time", "open_time")
"""Names of a file's time column, in the order one is looked for."""
_EPOCH_UNITS = ((1e11, 1000), (1e14, 1), (1e17, 1e-3))


def _read(path: Path) -> pl.DataFrame:
    if path.suffix == ".csv":
        return pl.read_csv(path)
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    if path.suffix == ".json":
        # freqtrade json: [[ms, open, high, low, close, volume], ...]
        rows = json.loads(path.read_text())
        cols = ["date", "open", "high", "low", "close", "volume"]
        return pl.DataFrame(rows, schema=cols, orient="row") if rows else pl.DataFrame(schema=cols)
    # freqtrade writes feather with pandas (Arrow IPC v2, lz4/zstd): polars reads it directly.
    return pl.read_ipc(path)


def _timestamps(col: pl.Series, path: Path) -> pl.Series:
    """Return a time column of any supported encoding as UTC ms datetimes."""
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


def ohlcv_read(path: Path) -> pl.DataFrame:
    """Read and normalise one file to the bar columns (not yet validated); failures name the file."""
    try:
        raw = _read(path)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160]
        msg = (
            f"cannot read {path} ({type(exc).__name__}: {detail}): re-export it as valid "
            f"{path.suffix.lstrip('.')} or remove it from {path.parent}"
        )
        raise DataError(msg) from exc
    names: dict[str, list[str]] = {}
    for c in raw.columns:
        names.setdefault(c.strip().lower(), []).append(c)
    twins = [v for v in names.values() if len(v) > 1]
    if twins:
        shown = " and ".join(repr(c) for c in twins[0])
        msg = f"{path} has both {shown} columns (names are case-insensitive): keep one of them in the file"
        raise DataError(msg)
    raw = raw.rename({c: c.strip().lower() for c in raw.columns})
    time_col = next((c for c in TIME_COLUMNS if c in raw.columns), None)
    missing = [c for c in BAR_SCHEMA if c != "timestamp" and c not in raw.columns]
    if time_col is None or missing:
        need = ", ".join(missing + ([] if time_col else ["one of " + "/".join(TIME_COLUMNS)]))
        msg = f"{path}: missing column(s) {need}; the file needs a time column and open, high, low, close, volume"
        raise DataError(msg)
    if raw.height == 0:
        msg = f"{path} holds no bars (only a header): export the data again or remove the file"
        raise DataError(msg)
    try:
        ts = _timestamps(raw.get_column(time_col), path)
        return raw.select(
            ts.alias("timestamp"), *[pl.col(c).cast(pl.Float64, strict=True) for c in BAR_SCHEMA if c != "timestamp"]
        )
    except pl.exceptions.PolarsError as exc:
        detail = " ".join(str(exc).split())[:160]
        msg = f"{path}: cannot convert columns ({detail}); use numbers for prices/volume and ISO or epoch times"
        raise DataError(msg) from exc


def ohlcv_load(path: Path, symbol: str, interval: str, implausible: Implausible = "error") -> pl.DataFrame:
    """Read, normalise and validate one file; every failure names the file and the fix.

    ``implausible`` (``data.implausible``): what to do with bars priced implausibly far from
    their neighbours (:func:`engine.data.bars.bars_implausible`): refuse the file, or drop them.
    """
    frame = ohlcv_read(path)
    try:
        return bars_validate(frame, symbol, interval, implausible)
    except ImplausibleBars as exc:
        msg = f"{exc}, or set data.implausible=drop to drop them (file {path})"
        raise DataError(msg) from exc
    except EngineError as exc:
        msg = f"{exc} (file {path})"
        raise DataError(msg) from exc
