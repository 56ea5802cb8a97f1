"""Time units and durations, defined once: epoch milliseconds and ``"<count><m|h|d|w>"`` text."""

from __future__ import annotations

import re

from engine.core.errors import EngineError

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
MS_NS = 1_000_000
"""Nanoseconds per millisecond (numpy's datetime64[ns] against epoch milliseconds)."""
UNIT_MS = {"m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": WEEK_MS}
"""Milliseconds of each duration unit."""

_DURATION = re.compile(r"^([1-9]\d*)([mhdw])$")


def duration_ms(text: str) -> int:
    """Return a duration such as ``"12h"``, ``"5d"`` or ``"1w"`` in milliseconds.

    The text is a positive count and a unit m, h, d or w; ``ValueError`` with the allowed form
    otherwise.

    >>> duration_ms("4h")
    14400000
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        msg = f"invalid duration {text!r}: use a positive integer followed by m, h, d or w (e.g. '5d')"
        raise ValueError(msg)
    return int(match.group(1)) * UNIT_MS[match.group(2)]


def interval_ms(interval: str) -> int:
    """Length of an interval such as ``"4h"`` in milliseconds.

    >>> interval_ms("4h")
    14400000
    """
    try:
        return duration_ms(interval)
    except ValueError:
        msg = f"malformed interval {interval!r}: use a count and a unit m/h/d/w, e.g. '1h', '4h', '1d'"
        raise EngineError(msg) from None
