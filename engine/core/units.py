"""Time units and durations, defined once: epoch milliseconds, ``"<count><m|h|d|w>"`` text, dates.

Every timestamp inside the engine is an ``int`` of epoch milliseconds (UTC); numpy's
``datetime64[ns]`` arrays meet them through :data:`MS_NS`. Dates become epoch milliseconds (and
back) only through the functions here.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

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


def duration_to_ns(text: str) -> int:
    """Parse a duration such as ``"12h"`` or ``"5d"`` into nanoseconds.

    >>> duration_to_ns("1m")
    60000000000
    """
    return duration_ms(text) * MS_NS


def date_ms(day: date | str) -> int:
    """Epoch milliseconds of ``day`` at 00:00 UTC (a date, or ISO text; a naive time is read as UTC).

    >>> date_ms("1970-01-02"), date_ms(date(1970, 1, 2))
    (86400000, 86400000)
    """
    when = datetime.fromisoformat(str(day))
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)


def ms_datetime(ms: int) -> datetime:
    """Return the UTC datetime of an epoch-millisecond timestamp."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def ms_date(ms: int) -> date:
    """UTC date of an epoch-millisecond timestamp.

    >>> ms_date(86_400_000)
    datetime.date(1970, 1, 2)
    """
    return ms_datetime(ms).date()


def ms_iso(ms: int) -> str:
    """ISO 8601 text of an epoch-millisecond timestamp (UTC).

    >>> ms_iso(0)
    '1970-01-01T00:00:00+00:00'
    """
    return ms_datetime(ms).isoformat()
