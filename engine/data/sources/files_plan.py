"""What a universe ingest of the user's files reads, and why one read nothing: the files backend's own part.

:meth:`FilesSource.universe_plan <engine.data.sources.files.FilesSource.universe_plan>` and
:meth:`~engine.data.sources.files.FilesSource.nothing_read` delegate here: the range comes from
``data.start``/``data.end`` or, when they are null, from the files themselves, and a file that
cannot be read or breaks the bar contract is left out with its message kept (the caller decides:
the ingest task imports the rest and exits 1, a run stops).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from engine.config import FilesData
from engine.core.errors import DataError
from engine.core.units import DAY_MS, date_ms
from engine.data.sources.base import UniversePlan

if TYPE_CHECKING:
    from datetime import date

    from engine.data.sources.files import FilesSource


def files_plan(
    source: FilesSource, symbols: Sequence[str], interval: str, start: date | None, end: date | None
) -> UniversePlan:
    """Read and validate every file that serves the universe (``symbols``; empty: every pair in the quote)."""
    problem = source.interval_problem(interval)
    if problem is not None:
        raise DataError(problem)
    wanted = list(symbols) or source.symbols()
    good: list[str] = []
    bad = [why if str(path) in why else f"{path}: {why}" for path, why in source.unreadable()]
    lo: int | None = None
    hi: int | None = None
    for symbol in wanted:
        try:
            frame = source.load(symbol, interval)
        except DataError as exc:
            bad.append(str(exc))
            continue
        good.append(symbol)
        if frame.height:
            # a loaded frame met the bar contract: its timestamps are non-null
            first = cast(int, frame.get_column("timestamp").dt.epoch("ms").min())
            last = cast(int, frame.get_column("timestamp").dt.epoch("ms").max())
            lo = first if lo is None else min(lo, first)
            hi = last if hi is None else max(hi, last)
    span = (int(lo), int(hi)) if lo is not None and hi is not None else None
    start_ms = date_ms(start) if start is not None else (span[0] // DAY_MS * DAY_MS if span else 0)
    end_ms = date_ms(end) + DAY_MS if end is not None else (span[1] // DAY_MS * DAY_MS + DAY_MS if span else 0)
    return UniversePlan(good, start_ms, end_ms, bad, span)


def files_nothing_read(start: date | None, end: date | None, plan: UniversePlan, base: str) -> str:
    """One line naming what removed every bar of the files: refused files, the dates, or incomplete bars."""
    from engine.data.ingest import day_text

    if not plan.symbols:
        return "0 bars read: no symbol left to ingest (every file was refused, see above)"
    if plan.span is not None and (start is not None or end is not None):
        return (
            f"0 bars read: data.start={start} .. data.end={end} "
            f"removes every bar (the files span {day_text(plan.span[0])} .. {day_text(plan.span[1])}); "
            "widen the dates or drop them (null: the files' own range)"
        )
    if base == "1d":
        return (
            "0 daily bars read: no file holds a complete day (a day bar needs every finer bar of the day); "
            "give files that cover whole days"
        )
    return (
        f"0 {base} bars read: no file holds a complete {base} bar (it needs every finer bar inside it); "
        f"give files at {base} or finer"
    )


def folder_pairs(cfg: FilesData, named: list[str] | None) -> tuple[set[str], str] | None:
    """Return the pairs ``named`` by a folder's files that are in the run's quote, and where they come from.

    None when the folder is missing (``named`` None) or its quote is ambiguous: the import names that problem.
    """
    pairs = set(named or ())
    quotes = {s.split("/")[1] for s in pairs}
    quote = cfg.quote if cfg.quote is not None else (next(iter(quotes)) if len(quotes) == 1 else None)
    if quote is None or quote not in quotes:
        return None  # no folder, no importable file, or several quotes: the import says which
    return {s for s in pairs if s.endswith("/" + quote)}, f"the pairs of data.path={cfg.path}"
