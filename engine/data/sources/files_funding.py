"""Funding rates from a folder of files (``data=files data.market=perp``), beside the bars in ``data.path``.

Three layouts, each named in docs/PERPETUALS.md ("Data"):

- freqtrade futures: ``{BASE}_{QUOTE}_{SETTLE}-{tf}-funding_rate.{feather|parquet|json|csv}`` holds
  the funding rates as OHLCV candles whose ``open`` is the rate of the funding at the candle's open
  time (``date``); ``{BASE}_{QUOTE}_{SETTLE}-{tf}-mark.{ext}`` holds mark-price candles, whose ``open``
  at a funding time is that funding's mark (freqtrade's funding fee: amount x mark open x rate open);
  served as ``BASE/QUOTE``. A funding time with no mark candle opening at it has a null mark.
- one csv for every pair: ``funding.csv`` with the columns ``symbol`` (``BASE/QUOTE``), a time
  column (``time``, ``timestamp``, ``date``, ``funding_time``: ISO-8601 or epoch s/ms/us/ns), ``rate``
  and optionally ``mark``;
- one csv per pair: ``{BASE}_{QUOTE}-funding.csv`` with the time column, ``rate`` and optionally ``mark``.

ccxt's names are read too: ``fundingRate`` and ``markPrice`` for ``rate`` and ``mark``, and its linear
perpetual ``BASE/QUOTE:QUOTE`` for ``BASE/QUOTE`` (a ``fetchFundingRateHistory`` export as it is).

Column names are case-insensitive. Two files giving one pair's funding are refused (keep one), as
is a funding time a file gives twice with different values; a time given twice alike is dropped
with a warning (rates that look like percentages are named by each run:
:func:`engine.run.funding.funding_units_warn`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import polars as pl

from engine.core.errors import DataError, EngineError
from engine.core.symbols import symbol_check
from engine.core.units import ms_datetime
from engine.data.funding import funding_validate

_TF = r"[1-9]\d*[mhdw]"
_FT = re.compile(rf"^([A-Z0-9]{{1,20}})_([A-Z0-9]{{1,20}})(?:_([A-Z0-9]{{1,20}}))?-{_TF}-(funding_rate|mark)$")
_PAIR_CSV = re.compile(r"^([A-Z0-9]{1,20})_([A-Z0-9]{1,20})-funding$")
ALL_PAIRS = "funding.csv"
TIME_NAMES = ("time", "timestamp", "date", "funding_time", "fundingtime", "open_time")
SUFFIXES = (".feather", ".parquet", ".json", ".csv")
ALIASES = {"rate": ("fundingrate", "funding_rate"), "mark": ("markprice", "mark_price")}
"""Other names of the rate and mark columns (lower-cased), as ccxt's ``fetchFundingRateHistory`` rows and exchanges name them."""
log = logging.getLogger(__name__)


def duplicates_check(frame: pl.DataFrame, value: str, symbol: str, path: Path) -> None:
    """Refuse a funding time ``frame`` gives twice with different ``value`` s; warn about exact copies (then dropped)."""
    dup = frame.filter(pl.col("time").is_not_null() & pl.col("time").is_duplicated())
    if dup.height == 0:
        return
    distinct = dup.select("time", value).unique()
    clash = distinct.filter(pl.col("time").is_duplicated()).get_column("time")
    if clash.len():
        at = ms_datetime(int(clash.sort()[0])).strftime("%Y-%m-%d %H:%M")
        msg = (
            f"{path}: funding of {symbol}: {clash.n_unique()} funding time(s) given twice with different {value} "
            f"values, the first at {at} UTC; keep one row per time"
        )
        raise DataError(msg)
    log.warning(
        "%s: funding of %s: %d duplicate row(s) of the same time and %s dropped",
        path,
        symbol,
        dup.height - distinct.height,
        value,
    )


def _lower(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    names = [c.strip().lower() for c in frame.columns]
    if len(set(names)) != len(names):
        msg = f"{path} has two columns of one name (names are case-insensitive): keep one of them"
        raise DataError(msg)
    return frame.rename(dict(zip(frame.columns, names, strict=True)))


def _times(frame: pl.DataFrame, path: Path) -> pl.Series:
    from engine.data.sources.files_read import _timestamps

    col = next((c for c in TIME_NAMES if c in frame.columns), None)
    if col is None:
        msg = f"{path}: no time column; name it one of {', '.join(TIME_NAMES)}"
        raise DataError(msg)
    return _timestamps(frame.get_column(col), path).dt.epoch("ms")


def _aliases(frame: pl.DataFrame) -> pl.DataFrame:
    """Rename ccxt's and exchanges' column names (``fundingRate``, ``markPrice``) to ``rate`` and ``mark``."""
    for name, aliases in ALIASES.items():
        found = next((a for a in aliases if a in frame.columns), None)
        if name not in frame.columns and found is not None:
            frame = frame.rename({found: name})
    return frame


def _linear(symbol: pl.Expr) -> pl.Expr:
    """Return ccxt's linear perpetual ``BASE/QUOTE:QUOTE`` as ``BASE/QUOTE``; any other symbol as it is."""
    parts = symbol.str.split(":")
    pair, settle = parts.list.first(), parts.list.get(1, null_on_oob=True)
    quote = pair.str.split("/").list.get(1, null_on_oob=True)
    return pl.when(settle.is_not_null() & (settle == quote) & (parts.list.len() == 2)).then(pair).otherwise(symbol)


def _read(path: Path) -> pl.DataFrame:
    from engine.data.sources.files_read import _read as read_any

    try:
        return _aliases(_lower(read_any(path), path))
    except DataError:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160]
        msg = f"cannot read {path} ({type(exc).__name__}: {detail}): re-export it or remove it from {path.parent}"
        raise DataError(msg) from exc


class FundingFiles:
    """The funding files of one folder, by pair: found once, read once per file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rates: dict[str, Path] = {}
        self._marks: dict[str, Path] = {}
        self._all: Path | None = None
        self._frames: dict[str, pl.DataFrame] = {}
        self._scanned = False

    def _put(self, where: dict[str, Path], symbol: str, path: Path) -> None:
        if symbol in where:
            self._twice(symbol, where[symbol], path)
        where[symbol] = path

    def _twice(self, symbol: str, one: Path, other: Path) -> None:
        msg = (
            f"two funding files for {symbol} in {self.root}: {one.name} and {other.name}; "
            "keep one (move the other out of the folder, or its rows out of funding.csv)"
        )
        raise DataError(msg)

    def scan(self) -> None:
        """Find the funding and mark files of the folder (once)."""
        if self._scanned or not self.root.is_dir():
            self._scanned = True
            return
        self._scanned = True
        for path in sorted(self.root.iterdir()):
            if not path.is_file() or path.suffix not in SUFFIXES or path.name.startswith("."):
                continue
            if path.name == ALL_PAIRS:
                self._all = path
            elif (m := _FT.match(path.stem)) is not None:
                self._put(
                    self._rates if m.group(4) == "funding_rate" else self._marks, f"{m.group(1)}/{m.group(2)}", path
                )
            elif path.suffix == ".csv" and (m := _PAIR_CSV.match(path.stem)) is not None:
                self._put(self._rates, f"{m.group(1)}/{m.group(2)}", path)

    def used(self) -> set[Path]:
        """Every file this reader takes (not 'skipped' on perp data)."""
        self.scan()
        return {*self._rates.values(), *self._marks.values(), *([self._all] if self._all else [])}

    def _all_symbols(self) -> set[str]:
        return set(self._all_frame().get_column("symbol").unique().to_list()) if self._all else set()

    def _all_frame(self) -> pl.DataFrame:
        if "*" not in self._frames:
            assert self._all is not None
            raw = _read(self._all)
            if "symbol" in raw.columns:
                raw = raw.with_columns(_linear(pl.col("symbol").cast(pl.String)).alias("symbol"))
            if "symbol" not in raw.columns or "rate" not in raw.columns:
                msg = f"{self._all}: funding.csv needs the columns symbol, time, rate (and optionally mark)"
                raise DataError(msg)
            for s in raw.get_column("symbol").cast(pl.String).unique().to_list():
                try:
                    symbol_check(str(s))
                except EngineError as exc:
                    msg = f"{self._all}: {exc}"
                    raise DataError(msg) from None
            cols = [pl.col("symbol").cast(pl.String), pl.col("rate")]
            cols += [pl.col("mark")] if "mark" in raw.columns else []
            self._frames["*"] = raw.select(*cols).with_columns(_times(raw, self._all).alias("time"))
        return self._frames["*"]

    def funding(self, symbol: str) -> pl.DataFrame | None:
        """Every funding row of ``symbol`` in the folder, validated (None: the folder has none for it)."""
        self.scan()
        if symbol in self._frames:
            return self._frames[symbol]
        try:
            return self._funding(symbol)
        except pl.exceptions.PolarsError as exc:
            detail = " ".join(str(exc).split())[:160]
            msg = f"funding of {symbol} in {self.root}: cannot convert its columns ({detail}); use numbers and ISO or epoch times"
            raise DataError(msg) from None

    def _funding(self, symbol: str) -> pl.DataFrame | None:
        path = self._rates.get(symbol)
        if path is not None and self._all is not None and symbol in self._all_symbols():
            self._twice(symbol, path, self._all)
        if path is not None:
            raw = _read(path)
            freqtrade = _FT.match(path.stem) is not None
            rate = "open" if freqtrade else "rate"
            if rate not in raw.columns:
                msg = f"{path}: no {rate!r} column ({'freqtrade stores the rate as the candle open' if freqtrade else 'give time, rate and optionally mark'})"
                raise DataError(msg)
            cols = [pl.col(rate).alias("rate")]
            if not freqtrade and "mark" in raw.columns:
                cols.append(pl.col("mark"))
            frame = raw.select(cols).with_columns(_times(raw, path).alias("time"))
        elif self._all is not None and symbol in self._all_symbols():
            path = self._all
            frame = self._all_frame().filter(pl.col("symbol") == symbol).drop("symbol")
        else:
            return None
        duplicates_check(frame, "rate", symbol, path)
        frame = funding_validate(frame, symbol, str(path))
        mark_path = self._marks.get(symbol)
        if mark_path is not None and frame.get_column("mark").null_count() == frame.height:
            marks = _read(mark_path)
            if "open" not in marks.columns:
                msg = (
                    f"{mark_path}: a freqtrade mark file needs OHLCV columns (its open is the mark at the funding time)"
                )
                raise DataError(msg)
            marks = marks.select(_times(marks, mark_path).alias("time"), pl.col("open").cast(pl.Float64).alias("mark"))
            duplicates_check(marks, "mark", symbol, mark_path)
            marks = marks.unique(subset="time", keep="last")
            frame = funding_validate(frame.drop("mark").join(marks, on="time", how="left"), symbol, str(mark_path))
        self._frames[symbol] = frame
        return frame

    def fetch(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        """Return the rows of ``symbol`` with funding time in ``[start_ms, end_ms)`` (None: no funding file for it)."""
        frame = self.funding(symbol)
        if frame is None:
            return None
        return frame.filter((pl.col("time") >= start_ms) & (pl.col("time") < end_ms))
