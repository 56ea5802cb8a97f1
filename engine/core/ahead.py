"""Results of a function over items, in order, computed a few items ahead by worker threads."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ahead(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Generator[R, None, None]:
    """Yield ``fn(item)`` for every item, in order, while up to ``2 * workers`` later ones are computed.

    For work that releases the GIL (numpy, polars) done while the caller handles earlier results:
    the results are the same as ``map(fn, items)`` and come in the same order; at most
    ``2 * workers`` are held at once, so memory stays bounded however many items there are. An
    exception in ``fn`` is raised where its result would have been yielded. ``workers``: default
    the number of CPUs (1: no thread, a plain ``map``). A caller that may stop early closes the
    generator itself (``contextlib.closing``): left to the garbage collector, it could be finalised in
    one of its own worker threads, whose pool cannot join that thread.
    """
    n = workers or os.cpu_count() or 1
    if n <= 1:
        yield from map(fn, items)
        return
    pending: deque[Future[R]] = deque()
    it = iter(items)
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="ahead") as pool:
        try:
            for item in it:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * n:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
