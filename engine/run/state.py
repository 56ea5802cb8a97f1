"""The typed state a walk-forward folds over, and what each window step gives back.

A book (one exit-rule combination, or the single book of a plain run) owns cash and, per symbol,
a :class:`Position` with its risk state. A :class:`FoldState` holds every book of a pass between
two windows; it is a value: a step returns a new one and never changes the one it was given, so
the state at any window start can be kept (to resume a pass) by keeping a reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from engine.config.exit_rules import ExitRules
from engine.core.jsontypes import Record
from engine.run.trades import TRADE_KINDS
from engine.simulation.stops import Ambiguity


@dataclass(frozen=True)
class Position:
    """An open position of a book, carried from window to window.

    ``basis`` (size-weighted average buy fill since the position opened, slippage included),
    ``peak`` (highest price since it opened) and ``opened_ms`` (open time of its opening bar) are
    the risk state its stops reference; NaN / 0 in a book without exit rules (not tracked).
    """

    qty: float
    basis: float
    peak: float
    opened_ms: int


@dataclass(frozen=True)
class Book:
    """One portfolio between two windows: its exit rules, cash and open positions."""

    rules: ExitRules | None
    cash: float
    positions: Mapping[str, Position] = field(default_factory=dict)
    pending: Mapping[str, tuple[float, int, bool]] = field(default_factory=dict)
    """Order remainders not yet filled (the market stage's participation cap), by symbol: signed
    shares, reason code, ambiguous."""


@dataclass(frozen=True)
class FoldState:
    """Every book of a pass between two windows, and the last close of every symbol seen.

    ``last_price`` marks a carried position whose symbol has no bar at a window's start;
    ``last_bar_ms`` is the open time of the last bar simulated.
    """

    books: tuple[Book, ...]
    last_price: Mapping[str, float] = field(default_factory=dict)
    last_bar_ms: int = 0

    def subset(self, idx: list[int]) -> FoldState:
        """Return the state of the books ``idx`` only (the same prices and clock)."""
        return FoldState(tuple(self.books[i] for i in idx), self.last_price, self.last_bar_ms)


@dataclass(frozen=True)
class PassSpec:
    """What distinguishes one pass over the windows from another."""

    ambiguity: Ambiguity
    interval: str
    """Bars the pass simulates on (stops and fills)."""
    light: bool = False
    """Keep only the state and the final equity (a sensitivity pass)."""


@dataclass(frozen=True)
class WindowOutput:
    """What one window step gives back for one book (a light pass keeps only the counts and equity)."""

    final_equity: float
    n_ambiguous: int
    stop_exits: np.ndarray | None
    """Stop exits per exit-kind code (``bincount`` over ``TRADE_KINDS``), None when there were none."""
    equity_ts: np.ndarray | None = None
    equity: np.ndarray | None = None
    exposure: np.ndarray | None = None
    orders: dict[str, np.ndarray] | None = None
    audit: Record | None = None
    costs: Mapping[str, float] | None = None
    """What each friction took in the window (the market stage only): fees, slippage, impact, spread, ..."""
    funding: dict[str, np.ndarray] | None = None
    """The window's funding payments (a perpetual run only: engine/run/funding.py)."""


@dataclass
class BookOutput:
    """A book's window outputs of a whole pass, gathered in window order by the fold."""

    equity_ts: list[np.ndarray] = field(default_factory=list)
    equity: list[np.ndarray] = field(default_factory=list)
    exposure: list[np.ndarray] = field(default_factory=list)
    orders: list[dict[str, np.ndarray]] = field(default_factory=list)
    audit: list[Record] = field(default_factory=list)
    n_ambiguous: int = 0
    stop_exits: np.ndarray = field(default_factory=lambda: np.zeros(len(TRADE_KINDS), dtype=np.int64))
    """Stop exits found per exit-kind code (all passes keep this, light ones included)."""
    ambiguous_windows: list[int] = field(default_factory=list)
    final_equity: float = float("nan")
    costs: dict[str, float] | None = None
    """The windows' costs summed (the market stage only)."""
    funding: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Each window's funding payments (a perpetual run only)."""

    def add(self, window: int, w: WindowOutput) -> None:
        """Append one window's output."""
        self.final_equity = w.final_equity
        if w.stop_exits is not None:
            self.stop_exits += w.stop_exits
        if w.n_ambiguous:
            self.ambiguous_windows.append(window)
        self.n_ambiguous += w.n_ambiguous
        if w.equity_ts is not None:
            assert w.equity is not None and w.exposure is not None and w.audit is not None
            self.equity_ts.append(w.equity_ts)
            self.equity.append(w.equity)
            self.exposure.append(w.exposure)
            self.audit.append(w.audit)
        if w.orders is not None:
            self.orders.append(w.orders)
        if w.funding is not None:
            self.funding.append(w.funding)
        if w.costs is not None:
            self.costs = {k: (self.costs or {}).get(k, 0.0) + float(v) for k, v in w.costs.items()}


@dataclass(frozen=True)
class Pass:
    """A pass's result: the final state, each book's outputs, and the state at every window start."""

    spec: PassSpec
    state: FoldState
    outputs: tuple[BookOutput, ...]
    starts: tuple[FoldState, ...]
    """The state at the start of each window folded (empty for a light pass)."""
