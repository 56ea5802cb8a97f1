"""The building blocks of the settings: the base model, bounds, durations and day-count aliases.

Shared by every section of :mod:`engine.config.model`; nothing here knows a section.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from engine.config.renamed import setting_renamed
from engine.core.errors import ConfigError, EngineError
from engine.core.units import DAY_MS, UNIT_MS, duration_ms


def path_expand(value: str | None) -> str | None:
    """``~`` and ``$VAR``/``${VAR}`` expanded in a path setting (None stays None)."""
    return None if value is None else os.path.expandvars(os.path.expanduser(value))


def _each_checked(values: list[str], check: Callable[[str], object]) -> list[str]:
    """Run ``check`` on every value; its EngineError becomes the ValueError pydantic reports."""
    for v in values:
        try:
            check(v)
        except EngineError as exc:
            raise ValueError(str(exc)) from exc
    return values


# Upper bounds of the numeric settings: far beyond any sensible run, small enough that date and
# integer arithmetic cannot overflow (a window of 10,000 days from year 2000 still ends before 2100).
MAX_DAYS = 10_000
MAX_MONEY = 1e15
MIN_CASH = 1.0
"""Smallest ``backtest.init_cash`` (quote currency): one unit, e.g. 1 USDT."""
MAX_DURATION_NS = 100 * 365 * 86_400 * 10**9  # 100 years
MAX_TP = 1000.0  # a take profit at +100,000 %


_ALIASES = {
    "hold": ("hold_days", MAX_DAYS),
    "step": ("step_days", MAX_DAYS),
    "momentum_window": ("momentum_days", 730),
    "vol_window": ("vol_days", 730),
    "liquidity_window": ("liquidity_days", 730),
    "min_history": ("min_history_days", MAX_DAYS),
}
"""Duration settings with a day-count alias: setting -> (alias, largest day count)."""


def _day_aliases(data: object, names: tuple[str, ...]) -> object:
    """Map day-count aliases (``hold_days: 7``) onto their duration settings (``hold: 7d``).

    An alias that is set wins over its setting's value (the settings always carry the group's
    default) and stays set, so messages can name the key the user wrote. An alias out of its
    range is left for the field's own validation to name.
    """
    for name in names:
        alias, most = _ALIASES[name]
        data = setting_renamed(data, alias, name, functools.partial(_days_text, most=most), keep=True)
    return data


def _days_text(days: object, most: int) -> str | None:
    """``"<days>d"`` for a day count in 1..``most``; None for anything else (the alias field names it)."""
    return f"{days}d" if isinstance(days, int) and not isinstance(days, bool) and 1 <= days <= most else None


def _setting(model: BaseModel, section: str, name: str) -> str:
    """Return ``section.key=value`` of a duration setting as the user gave it (its alias if set)."""
    alias = _ALIASES.get(name, (None, 0))[0]
    days = getattr(model, alias, None) if alias else None
    return f"{section}.{alias}={days}" if days is not None else f"{section}.{name}={getattr(model, name)!r}"


def _duration_checked(value: str, max_days: int) -> str:
    """Return a duration setting as given, or raise the ValueError pydantic reports."""
    try:
        ms = duration_ms(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if ms > max_days * DAY_MS:
        msg = f"{value!r} is longer than {max_days} days: give a duration such as '30d'"
        raise ValueError(msg)
    return value


def _duration_text(ms: int) -> str:
    """Shortest ``<count><unit>`` text of a duration in milliseconds (``86400000`` -> ``'1d'``)."""
    for unit in ("w", "d", "h", "m"):
        if ms % UNIT_MS[unit] == 0:
            return f"{ms // UNIT_MS[unit]}{unit}"
    return f"{ms}ms"


def _bars_of(label: str, value: str, iv: int, interval: str, least: int) -> int:
    """Return a duration setting in bars of the base interval; ``ConfigError`` naming ``label`` otherwise."""
    ms = duration_ms(value)
    if ms % iv:
        lo, hi = ms // iv * iv, (ms // iv + 1) * iv
        near = " or ".join(f"'{_duration_text(x)}'" for x in (lo, hi) if x > 0)
        msg = (
            f"{label} is not a whole number of backtest.interval={interval} bars: use a multiple of "
            f"{interval}, e.g. {near}"
        )
        raise ConfigError(msg)
    if ms // iv < least:
        msg = f"{label} is {ms // iv} {interval} bar(s): it needs at least {least}, e.g. '{_duration_text(least * iv)}'"
        raise ConfigError(msg)
    return ms // iv


class _Model(BaseModel):
    # allow_inf_nan=False: every float setting must be a finite number (inf/nan are user errors)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
