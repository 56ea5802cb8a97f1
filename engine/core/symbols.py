"""Exchange symbols: ``BASE/QUOTE`` in upper-case letters and digits, ``BASE_QUOTE`` on disk.

Anything else that would reach a path or a query is refused.
"""

from __future__ import annotations

import re

from engine.core.errors import DataError, EngineError

# BASE/QUOTE of upper-case letters and digits: nothing that can escape a path or a SQL string.
_SYMBOL = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")
_SYMBOL_DIR = re.compile(r"^[A-Z0-9]{1,20}_[A-Z0-9]{1,20}$")


def symbol_check(symbol: str) -> str:
    """Return ``symbol`` if it is a safe exchange symbol like ``BTC/USDT``, else raise."""
    if not isinstance(symbol, str) or _SYMBOL.match(symbol) is None:
        msg = f"invalid symbol {symbol!r}: symbols are BASE/QUOTE in upper-case letters and digits (e.g. 'BTC/USDT')"
        raise EngineError(msg)
    return symbol


def symbol_to_dir(symbol: str) -> str:
    """On-disk name of a symbol: ``BTC/USDT`` -> ``BTC_USDT``."""
    return symbol_check(symbol).replace("/", "_")


def symbol_from_dir(name: str) -> str:
    """Inverse of :func:`symbol_to_dir`; rejects anything that is not ``BASE_QUOTE``."""
    if _SYMBOL_DIR.match(name) is None:
        msg = f"invalid symbol directory {name!r} in the lakehouse: expected BASE_QUOTE, e.g. BTC_USDT"
        raise DataError(msg)
    return name.replace("_", "/", 1)
