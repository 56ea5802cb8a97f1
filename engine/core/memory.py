"""Hand the C heap's free pages back to the system at a stage boundary (glibc's ``malloc_trim``).

numpy's arrays (a panel of bars, a window's price block), DuckDB's results and Python's larger
objects come from the C library's ``malloc``. glibc returns a freed block at once only when it was
mapped on its own, and it raises that threshold (up to 32 MB) each time it frees one such block: so
after the first stages most arrays live in the heap, and the pages of those freed later stay
resident until the top of the heap is free (~40 MB after the windows stage at 2,000 symbols,
docs/PERFORMANCE.md). :func:`heap_release` gives every free page of every arena back
(``malloc_trim(0)``, ~1 ms); where the C library is not glibc it does nothing. Polars' own
allocator (jemalloc) returns its pages by itself (``engine/__init__.py``). Numbers do not depend on it.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


@functools.cache
def _trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim  # the process's own libc: glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    return trim


def heap_release() -> None:
    """Return the C heap's free pages to the system (glibc); elsewhere a no-op."""
    trim = _trim()
    if trim is not None:
        trim(0)
