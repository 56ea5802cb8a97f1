"""Progress bars for long work: shown on a terminal, silent in CI, in pipes or with ``quiet``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

T = TypeVar("T")


def progress_enabled(quiet: bool = False) -> bool:
    """Whether to draw bars: only on a TTY, never with ``quiet`` or under CI."""
    return not quiet and sys.stderr.isatty() and not os.environ.get("CI")


def progress_iter(items: Iterable[T], label: str, *, quiet: bool = False) -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar when :func:`progress_enabled`."""
    if not progress_enabled(quiet):
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = len(items) if isinstance(items, Sized) else None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=total)
        for item in items:
            yield item
            bar.advance(task)
