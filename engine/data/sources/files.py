"""Bars from a folder of the user's own OHLCV files: freqtrade folders, csv/parquet, TradingView.

File names (the grammar, also in docs/DATA.md), matched case-sensitively on the file's stem:

- freqtrade spot: ``{BASE}_{QUOTE}-{tf}.{feather|parquet|json|csv}``, e.g. ``BTC_USDT-5m.feather``;
- freqtrade futures: ``{BASE}_{QUOTE}_{SETTLE}-{tf}-futures.{ext}``, e.g. ``BTC_USDT_USDT-1h-futures.feather``
  (served as ``BASE/QUOTE``);
- plain: ``{BASE}_{QUOTE}.{csv|parquet}`` or ``{BASE}-{QUOTE}.{csv|parquet}``, interval read from
  the bars (the smallest step between two consecutive bars);
- TradingView chart-data export: ``{EXCHANGE}_{BASEQUOTE}, {resolution}.csv``, e.g.
  ``BINANCE_BTCUSDT, 60.csv`` or ``BINANCE_ETHBTC, 1D.csv`` (resolution: minutes, or ``D``/``W``),
  the pair split at a known quote suffix (USDT, USDC, BTC, ETH, ...).

Anything else (freqtrade ``-trades``, ``-mark``, ``-funding_rate`` files, notes, hidden files) is
not imported, and every such file is listed with its reason (:meth:`FilesSource.skipped`).

Columns: ``open, high, low, close, volume`` (case-insensitive) plus one time column named ``date``
(freqtrade), ``timestamp``, ``time`` (TradingView, epoch seconds) or ``open_time`` (Binance
dumps), holding the bar open time as a datetime (naive means UTC), an ISO-8601 string, or epoch
numbers. The unit of epoch numbers is read from their size: below 1e11 seconds, below 1e14
milliseconds, below 1e17 microseconds, else nanoseconds. freqtrade json is a list of
``[ms, open, high, low, close, volume]`` rows.

Any interval the run needs that is a whole multiple of a file's interval is built from that
file exactly (:func:`bars_resample`): polars ``group_by_dynamic``, epoch-aligned, left-closed,
labelled by the bucket's open; open = first, high = max, low = min, close = last, volume = sum.
A coarse bar is built only from a complete bucket (every finer bar present); an incomplete
bucket (a gap, the first or last partial day) is dropped, never extrapolated.

Each file is read and validated whole once per source, so a bad bar is reported with its symbol,
interval, timestamp and file even if it lies outside the requested range.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from engine.config import CcxtData, FilesData, SyntheticData
from engine.core.errors import DataError
from engine.core.units import UNIT_MS, interval_ms
from engine.data.bars import bars_resample
from engine.data.sources.base import DataSource, UniversePlan
from engine.data.sources.files_plan import files_nothing_read, files_plan, folder_pairs
from engine.data.sources.files_read import TIME_COLUMNS as TIME_COLUMNS
from engine.data.sources.files_read import ohlcv_load, ohlcv_read

if TYPE_CHECKING:
    from engine.data.sources.files_funding import FundingFiles

SUFFIXES = (".csv", ".parquet", ".feather", ".json")
_TF = r"([1-9]\d*[mhdw])"
_SPOT = re.compile(rf"^([A-Z0-9]{{1,20}})_([A-Z0-9]{{1,20}})-{_TF}$")
_FUTURES = re.compile(rf"^([A-Z0-9]{{1,20}})_([A-Z0-9]{{1,20}})_([A-Z0-9]{{1,20}})-{_TF}-futures$")
_PLAIN = re.compile(r"^([A-Z0-9]{1,20})[_-]([A-Z0-9]{1,20})$")
_TV = re.compile(r"^([A-Z0-9]+)_([A-Z0-9]+), ?([1-9]\d*|[1-9]?\d*[DW])$")
_NOT_BARS = re.compile(r"-(trades|mark|funding_rate|index|premiumIndex)$")
# Quotes recognised at the end of a TradingView pair (longest first, so BTCUSDT is BTC/USDT).
TV_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USDP", "EUR", "TRY", "USD", "DAI", "BTC", "ETH", "BNB")
# Epoch magnitude thresholds: 1e11 s is the year 5138, 1e11 ms is 1973, and so on per unit.
HASH_CHUNK = 1 << 20  # bytes read per step when a file's content is hashed


def file_digest(path: Path) -> str:
    """Return the blake2b-128 hex digest of a file's bytes, streamed in 1 MiB chunks.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as fh:
    ...     file_digest(Path(fh.name))
    'cae66941d9efbd404e4d88758ea67670'
    """
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One importable file: its pair, its interval (None: read from the bars) and its layout."""

    path: Path
    symbol: str
    interval: str | None
    layout: str


def _tv_interval(resolution: str) -> str:
    if resolution.endswith(("D", "W")):
        count = resolution[:-1] or "1"
        return f"{count}{resolution[-1].lower()}"
    minutes = int(resolution)
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def name_parse(path: Path) -> FileEntry | str:
    """Return the file's pair and interval from its name, or the reason it is not imported."""
    stem, suffix = path.stem, path.suffix
    if path.name.startswith("."):
        return "hidden file"
    if suffix not in SUFFIXES:
        return f"not a data file (formats: {', '.join(SUFFIXES)})"
    if _NOT_BARS.search(stem):
        return f"freqtrade {_NOT_BARS.search(stem).group(1)} file, not OHLCV bars"  # type: ignore[union-attr]
    if m := _SPOT.match(stem):
        return FileEntry(path, f"{m.group(1)}/{m.group(2)}", m.group(3), "freqtrade")
    if m := _FUTURES.match(stem):
        return FileEntry(path, f"{m.group(1)}/{m.group(2)}", m.group(4), "freqtrade futures")
    if suffix in (".csv", ".parquet") and (m := _PLAIN.match(stem)):
        return FileEntry(path, f"{m.group(1)}/{m.group(2)}", None, "plain")
    if suffix == ".csv" and (m := _TV.match(stem)):
        pair = m.group(2)
        quote = next((q for q in TV_QUOTES if pair.endswith(q) and len(pair) > len(q)), None)
        if quote is None:
            return f"TradingView export whose pair {pair} ends in no known quote ({', '.join(TV_QUOTES)})"
        return FileEntry(path, f"{pair[: -len(quote)]}/{quote}", _tv_interval(m.group(3)), "TradingView")
    return (
        "name does not follow BASE_QUOTE-tf.ext (freqtrade), BASE_QUOTE_SETTLE-tf-futures.ext, "
        "BASE_QUOTE.csv|parquet or 'EXCHANGE_PAIR, resolution.csv' (TradingView)"
    )


def expand_path(path: str) -> Path:
    """``~`` and ``$VARS`` expanded."""
    return Path(os.path.expandvars(os.path.expanduser(path)))


class FilesSource(DataSource):
    """Serves bars from the user's files in ``cfg.path`` (names: see the module docstring).

    Examples
    --------
    >>> from engine.config import FilesData
    >>> src = FilesSource(FilesData(path="data/import"))  # doctest: +SKIP
    >>> src.symbols(), src.intervals()  # doctest: +SKIP
    (['BTC/USDT'], ('4h', '1d'))
    """

    name = "files"
    funding_fix = "add BASE_QUOTE_QUOTE-8h-funding_rate.feather files or funding.csv to data.path, docs/PERPETUALS.md"
    unreadable_fix = (
        "delete the file it names and rerun `python -m engine task=ingest data=files ...` to re-import it from "
        "your files"
    )

    @classmethod
    def from_config(cls, cfg: SyntheticData | CcxtData | FilesData) -> FilesSource:
        """Return the source of the folder ``cfg.path``."""
        assert isinstance(cfg, FilesData)
        return cls(cfg)

    @classmethod
    def label(cls, cfg: SyntheticData | CcxtData | FilesData) -> str:
        """Return ``your files in PATH``."""
        assert isinstance(cfg, FilesData)
        return f"your files in {cfg.path}"

    @classmethod
    def universe_named(cls, cfg: SyntheticData | CcxtData | FilesData) -> tuple[set[str], str] | None:
        """Return the pairs the files of ``data.path`` are named for, in the run's quote (no file opened)."""
        assert isinstance(cfg, FilesData)
        root = expand_path(cfg.path)  # a missing folder: the import names it
        named = (
            [e.symbol for p in root.iterdir() if isinstance(e := name_parse(p), FileEntry)] if root.is_dir() else None
        )
        return folder_pairs(cfg, named)

    def __init__(self, cfg: FilesData) -> None:
        self.cfg = cfg
        self.market = cfg.market
        self.root = expand_path(cfg.path)
        self._frames: dict[Path, pl.DataFrame] = {}
        self._digests: dict[Path, str] = {}
        self._entries: dict[tuple[str, str], FileEntry] | None = None
        self._skipped: list[tuple[Path, str]] = []
        self._unreadable: list[tuple[Path, str]] = []
        self._quote: str | None = None
        self._funding_files: FundingFiles | None = None

    # ---- the folder -------------------------------------------------------------------------

    def _scan(self) -> dict[tuple[str, str], FileEntry]:
        """Return the importable files of every quote by ``(symbol, interval)``; two files for one key is an error."""
        if self._entries is not None:
            return self._entries
        if self.root.is_file():
            msg = f"data.path {self.root} is a file: set data.path to the folder that holds it ({self.root.parent})"
            raise DataError(msg)
        if not self.root.is_dir():
            msg = f"data folder {self.root} does not exist: create it or set data.path to the folder of your files"
            raise DataError(msg)
        found: dict[tuple[str, str], FileEntry] = {}
        skipped: list[tuple[Path, str]] = []
        unreadable: list[tuple[Path, str]] = []
        for path in sorted(self.root.iterdir()):
            if path.is_dir():
                skipped.append((path, "a folder (files are read from data.path itself, not its subfolders)"))
                continue
            entry = name_parse(path)
            if not isinstance(entry, str) and self.market == "perp" and entry.layout == "freqtrade":
                entry = "freqtrade spot bars: data.market=perp reads BASE_QUOTE_SETTLE-tf-futures files"
            if isinstance(entry, str):
                skipped.append((path, entry))
                continue
            if entry.interval is None:
                try:
                    entry = FileEntry(entry.path, entry.symbol, _interval_infer(self._load_raw(entry)), entry.layout)
                except DataError as exc:  # named as a pair's bars but unreadable: a bad file, not a stray one
                    unreadable.append((path, str(exc)))
                    continue
            key = (entry.symbol, str(entry.interval))
            if key in found:
                msg = (
                    f"two files for {key[0]} {key[1]} in {self.root}: {found[key].path.name} and {path.name}; "
                    "keep one (move the other out of the folder)"
                )
                raise DataError(msg)
            found[key] = entry
        self._entries, self._skipped, self._unreadable = found, skipped, unreadable
        return found

    def quotes(self) -> list[str]:
        """Quotes of the importable files."""
        return sorted({s.split("/")[1] for s, _ in self._scan()})

    @property
    def quote(self) -> str:
        """``data.quote``, or the files' one quote when it is not set."""
        if self._quote is None:
            quotes = self.quotes()
            if not quotes:
                names = ", ".join(f"{p.name} ({why})" for p, why in self._skipped[:5]) or "none"
                msg = f"no importable OHLCV file in {self.root} (files seen: {names}); see docs/DATA.md for the names"
                raise DataError(msg)
            if self.cfg.quote is None:
                if len(quotes) > 1:
                    msg = f"the files in {self.root} are quoted in {', '.join(quotes)}: choose one with data.quote=..."
                    raise DataError(msg)
                self._quote = quotes[0]
            elif self.cfg.quote not in quotes:
                msg = (
                    f"no file in {self.root} is quoted in data.quote={self.cfg.quote}: the files are quoted in "
                    f"{', '.join(quotes)}; set data.quote to one of them"
                )
                raise DataError(msg)
            else:
                self._quote = self.cfg.quote
        return self._quote

    def files(self) -> dict[tuple[str, str], Path]:
        """Return the importable files in the chosen quote by ``(symbol, interval)``."""
        quote = self.quote
        return {k: e.path for k, e in self._scan().items() if k[0].endswith("/" + quote)}

    def skipped(self) -> list[tuple[Path, str]]:
        """Every file of the folder that is not imported, with the reason (other quotes included)."""
        quote = self.quote
        other = [
            (e.path, f"quoted in {k[0].split('/')[1]}, not data.quote={quote}")
            for k, e in self._scan().items()
            if not k[0].endswith("/" + quote)
        ]
        if self.market == "perp":  # funding and mark files are read as funding (files_funding.py)
            used = self._funding().used()
            return sorted([x for x in self._skipped if x[0] not in used] + other)
        return sorted(self._skipped + other)

    def _funding(self) -> FundingFiles:
        from engine.data.sources.files_funding import FundingFiles

        if self._funding_files is None:
            self._funding_files = FundingFiles(self.root)
        return self._funding_files

    def funding_fetch(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame | None:
        """Funding of ``symbol`` from the folder's funding files (perp only; None: no file for it)."""
        if self.market != "perp":
            return None
        return self._funding().fetch(symbol, start_ms, end_ms)

    def unreadable(self) -> list[tuple[Path, str]]:
        """Files named as a pair's bars (no interval in the name) whose bars could not be read."""
        self._scan()
        return list(self._unreadable)

    def identity(self) -> dict[str, object]:
        """Return the folder's resolved path and the quote read from it."""
        return self.market_identity({"source": "files", "path": str(self.root.resolve()), "quote": self.quote})

    def symbols(self) -> list[str]:
        """Symbols with at least one file, quoted in the chosen quote."""
        return sorted({s for s, _ in self.files()})

    def intervals(self) -> tuple[str, ...]:
        """Intervals of the files, finest first (coarser multiples are built, see :meth:`interval_problem`)."""
        return tuple(sorted({i for _, i in self.files()}, key=interval_ms))

    def interval_problem(self, interval: str) -> str | None:
        """Why ``interval`` cannot be served (None if it can: a file's interval or a multiple of one)."""
        step = interval_ms(interval)
        have = self.intervals()
        if not have:
            return f"no file in {self.root} is quoted in {self.quote}"
        if step < interval_ms(have[0]):
            return (
                f"interval {interval!r} is finer than the finest file in {self.root} ({have[0]}): finer bars "
                f"cannot be built from coarser ones; use {have[0]} or a multiple of it"
            )
        if not any(step % interval_ms(i) == 0 for i in have):
            return f"interval {interval!r} is not a whole multiple of any file interval ({', '.join(have)})"
        return None

    def _entry_for(self, symbol: str, interval: str) -> FileEntry | None:
        """Return the file that serves ``(symbol, interval)``: its own, else the coarsest one it divides."""
        step = interval_ms(interval)
        files = {k: e for k, e in self._scan().items() if k[0] == symbol}
        if (symbol, interval) in files:
            return files[(symbol, interval)]
        usable = [e for (_, i), e in files.items() if step % interval_ms(i) == 0]
        return max(usable, key=lambda e: interval_ms(str(e.interval))) if usable else None

    def _digest(self, path: Path) -> str:
        """Content hash of ``path``, taken once per source and before its bars are first read.

        Hashing first means a file rewritten between the two steps is recorded with its older
        hash, so the next run sees a change and re-imports it (never the reverse).
        """
        if path not in self._digests:
            self._digests[path] = file_digest(path)
        return self._digests[path]

    def origin(self, symbol: str, interval: str) -> object:
        """Name, size and content hash of the file serving ``(symbol, interval)``: a change re-imports it.

        The content is hashed, not only stat'ed: a file rewritten in place with its size and
        modification time kept (``touch -r``) is still noticed.
        """
        entry = self._entry_for(symbol, interval)
        if entry is None:
            return None
        return {"file": entry.path.name, "size": entry.path.stat().st_size, "blake2b": self._digest(entry.path)}

    # ---- bars -------------------------------------------------------------------------------

    def _load_raw(self, entry: FileEntry) -> pl.DataFrame:
        return ohlcv_read(entry.path)

    def load(self, symbol: str, interval: str) -> pl.DataFrame:
        """Every validated bar of the file that serves ``(symbol, interval)``, at the file's interval."""
        entry = self._entry_for(symbol, interval)
        if entry is None:
            stem = symbol.replace("/", "_") + f"-{interval}"
            msg = f"no file for {symbol} {interval} in {self.root}: add {stem}.csv, {stem}.parquet or {stem}.feather"
            raise DataError(msg)
        frame = self._frames.get(entry.path)
        if frame is None:
            self._digest(entry.path)  # before the read: see _digest
            frame = self._frames[entry.path] = ohlcv_load(entry.path, symbol, str(entry.interval), self.cfg.implausible)
        return frame

    def ohlcv_fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        """Every bar of ``(symbol, interval)`` in its file, built if coarser (trimmed by :meth:`ohlcv_load`)."""
        entry = self._entry_for(symbol, interval)
        frame = self.load(symbol, interval)
        if entry is not None and entry.interval != interval:
            frame = bars_resample(frame, str(entry.interval), interval)
        return frame

    def universe_plan(
        self, symbols: Sequence[str], interval: str, start: date | None, end: date | None
    ) -> UniversePlan:
        """Read and validate every file of the universe; the range is the files' own where the dates are null."""
        return files_plan(self, symbols, interval, start, end)

    def nothing_read(self, plan: UniversePlan, interval: str) -> str:
        """Name what removed every bar of the files: refused files, the dates, or incomplete coarse bars."""
        return files_nothing_read(self.cfg.start, self.cfg.end, plan, interval)


def _interval_infer(raw: pl.DataFrame) -> str:
    """Return the interval of a file whose name has none: the smallest step between consecutive bars."""
    ts = raw.get_column("timestamp").dt.epoch("ms").sort().diff().drop_nulls()
    ts = ts.filter(ts > 0)
    if ts.len() == 0:
        msg = "too few bars to read its interval from; name it BASE_QUOTE-tf.ext (e.g. BTC_USDT-1h.csv)"
        raise DataError(msg)
    step = int(ts.min())  # type: ignore[arg-type]
    for unit, ms in sorted(UNIT_MS.items(), key=lambda u: -u[1]):
        if step % ms == 0:
            return f"{step // ms}{unit}"
    msg = f"bars {step} ms apart are not on a minute grid; name the file BASE_QUOTE-tf.ext"
    raise DataError(msg)
