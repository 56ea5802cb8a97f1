"""Isolated margin: the liquidation level of a leveraged position (numba), docs/LONG_SHORT.md.

A position of ``q`` shares entered at ``E`` (its cost basis) with leverage ``L`` posts the margin
``M = |q| E / L``. Its margin balance at price ``P`` is ``M + q (P - E)`` and it is liquidated when
that falls to the maintenance margin ``mm |q| P`` (``costs.maintenance_margin``):

    long:   P_liq = E (1 - 1 / L) / (1 - mm)
    short:  P_liq = E (1 + 1 / L) / (1 + mm)

The level is a stop of the position: it is found on the finest bars loaded like a stop loss,
through the stop rules (a gap fills at the open, a bar that holds the level and the take profit
is ambiguous, stop first), and the exit's kind is ``liquidation`` wherever the liquidation level
is nearer than the stop loss. The fill is at the level (or the open on a gap), with slippage and
fees like any exit; the maintenance margin left stays with the book (no liquidation fee is
charged, as freqtrade's backtests do). A long at leverage 1 has ``P_liq = 0``: never liquidated.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def liquidation_fraction(short: bool, leverage: float, mm: float) -> float:
    """Return the distance of the liquidation level from the basis, as a stop fraction of the basis.

    ``basis * (1 - f)`` for a long, ``basis * (1 + f)`` for a short, as the stops' ``sl_stop``.
    """
    if short:
        return (1.0 + 1.0 / leverage) / (1.0 + mm) - 1.0
    return 1.0 - (1.0 - 1.0 / leverage) / (1.0 - mm)


def liquidation_price(entry: float, short: bool, leverage: float, mm: float) -> float:
    """Return the liquidation price of a position entered at ``entry`` (the formula of the module docstring)."""
    f = float(liquidation_fraction(short, leverage, mm))
    return entry * (1.0 + f) if short else entry * (1.0 - f)


@njit(cache=True)
def stop_with_liquidation(fixed_sl: float, short: bool, leverage: float, mm: float) -> tuple[float, bool]:
    """Return the stop fraction the position exits at, and whether it is the liquidation level (nearer).

    ``leverage <= 0``: no margin market, the stop loss as it is.
    """
    if leverage <= 0.0:
        return fixed_sl, False
    f = liquidation_fraction(short, leverage, mm)
    if np.isnan(fixed_sl) or f < fixed_sl:
        return f, True
    return fixed_sl, False
