"""Simulation core: stop exits (numba) and the vectorbt rebalance simulator."""

from engine.simulation.stops import (
    EXIT_KIND_NAMES,
    MAX_HOLDING,
    STOP_LOSS,
    TAKE_PROFIT,
    TRAILING,
    StopExits,
    StopState,
    find_stop_exits,
    stop_exits_nb,
)
from engine.simulation.vbt import PriceBlock, SimResult, VectorBTSimulator

__all__ = [
    "EXIT_KIND_NAMES",
    "MAX_HOLDING",
    "STOP_LOSS",
    "TAKE_PROFIT",
    "TRAILING",
    "PriceBlock",
    "SimResult",
    "StopExits",
    "StopState",
    "VectorBTSimulator",
    "find_stop_exits",
    "stop_exits_nb",
]
