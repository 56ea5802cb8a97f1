"""Validated contexts handed between stages, and the simulation stage that calls vectorbt.

``SelectionContext`` (what the ranking chose) and ``AllocationContext`` (how much of each) carry
the run's ``ExitRules`` so a window's rules are validated next to the decisions they act on;
``SimulationStage.execute`` takes them from there and hands them to the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, model_validator

from engine.config import CostsConfig
from engine.config.exit_rules import ExitRules
from engine.simulation.books import GridBook as GridBook
from engine.simulation.books import Pending
from engine.simulation.market import ExecutionRules, Frictions, market_simulate
from engine.simulation.stops import StopState
from engine.simulation.vbt import PriceBlock, SimResult, VectorBTSimulator


class SelectionContext(BaseModel):
    """A window's winners, in rank order, with their scores."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(ge=0)
    winners: list[str]
    scores: dict[str, float]
    exit_rules: ExitRules | None = None


class AllocationContext(BaseModel):
    """Target weights of a window's winners (long only, summing to at most 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: dict[str, float]
    exit_rules: ExitRules | None = None
    leverage: float = Field(default=1.0, ge=1.0)
    """The weights' absolute sum may reach it (1: no leverage)."""
    signed: bool = False
    """Whether the weights may be negative (a short leg, docs/LONG_SHORT.md)."""

    @model_validator(mode="after")
    def _weights_valid(self) -> AllocationContext:
        if self.signed:
            if any(not math.isfinite(w) for w in self.weights.values()):
                msg = "weights must be finite"
                raise ValueError(msg)
            if sum(abs(w) for w in self.weights.values()) > self.leverage + 1e-9:
                msg = f"the absolute weights must sum to at most the leverage {self.leverage:g}"
                raise ValueError(msg)
            return self
        if any(not math.isfinite(w) or w < 0 for w in self.weights.values()):
            msg = "weights must be finite and >= 0 (long only)"
            raise ValueError(msg)
        if sum(self.weights.values()) > 1.0 + 1e-9:
            msg = "weights must sum to at most 1 (no leverage)"
            raise ValueError(msg)
        return self


class SimulationContext(BaseModel):
    """Everything one window's simulation needs: prices, target weights, carried state."""

    # the arrays and state objects are typed, not validated (SkipValidation): _shapes checks them
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    selection: SelectionContext
    allocation: AllocationContext
    prices: SkipValidation[PriceBlock]
    """A :class:`PriceBlock` of the window's columns on the finest loaded grid."""
    weights: SkipValidation[npt.NDArray[np.float64]]
    """(n_bars, n_cols) target weights, NaN where no order is placed."""
    init_cash: float = Field(ge=0)
    carry_shares: SkipValidation[npt.NDArray[np.float64] | None] = None
    carry_price: SkipValidation[npt.NDArray[np.float64] | None] = None
    carry_state: SkipValidation[StopState | None] = None
    """A :class:`StopState` of the carried positions (cost basis, trailing peak, opening time)."""
    carry_pending: SkipValidation[Pending | None] = None
    """A :class:`~engine.simulation.books.Pending` of carried order remainders (market execution only)."""
    ambiguity: Literal["pessimistic", "optimistic"] = "pessimistic"
    held_reweights: Literal["all", "first_bar"] = "all"
    """``first_bar``: only the window's first bar (the rebalance) re-weights a held position;
    later entries of a held symbol (a signal's "already long") are dropped."""

    @model_validator(mode="after")
    def _shapes(self) -> SimulationContext:
        if not isinstance(self.prices, PriceBlock):
            msg = "prices must be a PriceBlock"
            raise TypeError(msg)
        if np.shape(self.weights) != self.prices.close.shape:
            msg = f"weights shape {np.shape(self.weights)} != prices shape {self.prices.close.shape}"
            raise ValueError(msg)
        if self.carry_state is not None and not isinstance(self.carry_state, StopState):
            msg = "carry_state must be a StopState"
            raise TypeError(msg)
        return self


class SimulationStage:
    """Runs one window's simulation through :class:`VectorBTSimulator`."""

    def __init__(self, costs: CostsConfig, vbt_engine: str = "rust") -> None:
        self.simulator = VectorBTSimulator(fees=costs.fees, slippage=costs.slippage, engine=vbt_engine)

    def execute(self, ctx: SimulationContext) -> SimResult:
        """Simulate the context; ``exit_rules`` null means the rebalance mode."""
        book = GridBook(ctx.allocation.exit_rules, ctx.weights, ctx.init_cash, ctx.carry_shares, ctx.carry_state)
        return self.execute_grid(ctx, [book])[0]

    def execute_grid(self, ctx: SimulationContext, books: list[GridBook]) -> list[SimResult]:
        """Simulate several books on the window's prices (an exit-rule grid) in one vectorbt call.

        ``ctx`` is the window's context (its own rules and weights are those of the first book);
        each book brings its exit rules, weights and carried state.
        """
        return self.simulator.simulate_grid(
            ctx.prices,
            [b.weights for b in books],
            [b.exit_rules for b in books],
            init_cash=[b.init_cash for b in books],
            carry_shares=[b.carry_shares for b in books],
            carry_price=ctx.carry_price,
            carry_state=[b.carry_state for b in books],
            ambiguity=ctx.ambiguity,
            held_reweights=ctx.held_reweights,
        )


FrictionSource = Frictions | Callable[[SimulationContext], Frictions]
"""A window's frictions, or what builds them from the window's context."""


class MarketStage:
    """Runs one window's simulation through the market execution (:mod:`engine.simulation.market`).

    Parameters
    ----------
    costs : CostsConfig
        Fees and fixed slippage.
    frictions : Frictions or callable
        The window's :class:`Frictions`, or a function of the window's :class:`SimulationContext`
        returning them (quote volumes and sigma differ per window).
    rules : ExecutionRules
        Participation cap, leftover policy and impact coefficient.
    margin : (leverage, maintenance margin) or None
        Isolated margin of a perpetual market (liquidation, docs/LONG_SHORT.md); None: spot.
    """

    def __init__(
        self,
        costs: CostsConfig,
        frictions: FrictionSource,
        rules: ExecutionRules,
        margin: tuple[float, float] | None = None,
    ) -> None:
        self.fees, self.slippage = float(costs.fees), float(costs.slippage)
        self.frictions = frictions
        self.rules = rules
        self.margin = margin

    def execute(self, ctx: SimulationContext) -> SimResult:
        """Simulate the context's one book (its carried remainders included)."""
        book = GridBook(
            ctx.allocation.exit_rules, ctx.weights, ctx.init_cash, ctx.carry_shares, ctx.carry_state, ctx.carry_pending
        )
        return self.execute_grid(ctx, [book])[0]

    def execute_grid(self, ctx: SimulationContext, books: list[GridBook]) -> list[SimResult]:
        """Simulate several books on the window's prices in one kernel call (see ``SimulationStage``)."""
        fr = self.frictions if isinstance(self.frictions, Frictions) else self.frictions(ctx)
        return market_simulate(
            ctx.prices,
            books,
            fr,
            self.rules,
            fees=self.fees,
            slippage=self.slippage,
            carry_price=ctx.carry_price,
            ambiguity=ctx.ambiguity,
            held_reweights=ctx.held_reweights,
            margin=self.margin,
        )
