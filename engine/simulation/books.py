"""A book's inputs to one window's simulation and the order remainders it carries between windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.config.exit_rules import ExitRules
from engine.simulation.stops import StopState


@dataclass(frozen=True)
class Pending:
    """Order remainders not filled yet (the market execution's participation cap, docs/EXECUTION.md).

    Attributes
    ----------
    shares : np.ndarray
        (n_cols,) float64 signed shares still to trade (+ buy, - sell), 0 where nothing is pending.
    reason : np.ndarray
        (n_cols,) int8 reason code of the order they belong to (0 rebalance, else an exit kind).
    ambiguous : np.ndarray
        (n_cols,) bool, True for the rest of a stop exit in a bar that held both stop loss and take profit.
    """

    shares: np.ndarray
    reason: np.ndarray
    ambiguous: np.ndarray

    @classmethod
    def none(cls, n_cols: int) -> Pending:
        """Nothing pending."""
        return cls(np.zeros(n_cols), np.zeros(n_cols, dtype=np.int8), np.zeros(n_cols, dtype=np.bool_))

    def __bool__(self) -> bool:
        """Whether any remainder is pending."""
        return bool(np.any(self.shares != 0))


@dataclass(frozen=True)
class GridBook:
    """One book of an exit-rule grid in a window: its rules, weights and carried state.

    The window's ``SimulationContext`` holds what the books share (prices, carry prices,
    ambiguity policy) and is validated once; a book's own inputs are checked by the simulator.
    ``carry_pending`` (the market execution only) holds the order remainders carried in.
    """

    exit_rules: ExitRules | None
    weights: np.ndarray
    init_cash: float
    carry_shares: np.ndarray | None
    carry_state: StopState | None = None
    carry_pending: Pending | None = None
