"""Renamed settings: one helper maps a deprecated or alias key onto the setting that replaced it.

Used in a model's ``mode="before"`` validator, on the raw input, before the fields are validated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

warned: set[str] = set()
"""Deprecation warnings already given in this process (each is given once)."""


def warn_once(message: str) -> None:
    """Log ``message`` as a warning of the ``engine`` logger, the first time only."""
    if message not in warned:
        warned.add(message)
        logging.getLogger("engine").warning(message)


def _same(value: object) -> object:
    return value


def setting_renamed(
    data: object,
    old: str,
    new: str,
    convert: Callable[[object], object | None] = _same,
    *,
    keep: bool = False,
    warning: str | None = None,
    conflict: str | None = None,
) -> object:
    """Return the raw settings ``data`` with the value of key ``old``, when set, moved onto key ``new``.

    Parameters
    ----------
    data : object
        The raw input of a model (a dict; anything else is returned as it is).
    old, new : str
        The old key and the key of the setting that replaced it.
    convert : callable, optional
        Turns the old value into the new one; None when it is out of range, which leaves ``data``
        unchanged for the old field's own validation to name.
    keep : bool, default False
        Keep the old key set (messages can then name the key the user wrote), else set it to None.
    warning : str, optional
        Deprecation warning, logged once per process when the old key is used.
    conflict : str, optional
        When given, setting both keys is a ``ValueError`` with this message; otherwise the old key
        wins (for a new key that always carries its group's default).

    Returns
    -------
    object
        ``data``, or a new dict with ``new`` set.
    """
    if not isinstance(data, dict) or data.get(old) is None:
        return data
    if conflict is not None and data.get(new) is not None:
        raise ValueError(conflict)
    value = convert(data[old])
    if value is None:
        return data
    if warning is not None:
        warn_once(warning)
    return {**data, new: value} if keep else {**data, new: value, old: None}
