"""The market a run trades in: participation cap, impact, spread, exchange limits, capacity capitals.

Every setting defaults to off: with :meth:`ExecutionConfig.is_frictionless` true the run uses the
frictionless vectorbt stage and its artefacts are byte-identical to a run without this section
(docs/EXECUTION.md). With a friction on, the run uses the market stage
(``engine.simulation.market.MarketStage``).
"""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_MONEY = 1e15
"""Largest capital of the capacity list (the bound of ``backtest.init_cash``)."""
MIN_CASH = 1.0
"""Smallest capital of the capacity list (the bound of ``backtest.init_cash``)."""
DEFAULT_CAPITALS = (1e4, 1e5, 1e6, 1e7, 1e8)
"""Starting capitals of ``task=capacity`` when ``execution.capacity`` is null."""
IMPACT_K_SOURCE = (
    "square-root law, cost = Y * sigma * sqrt(Q/V) with Y of order 1: Toth et al. (2011), 'Anomalous price "
    "impact and the critical nature of liquidity in financial markets', Phys. Rev. X 1, 021006; "
    "Bouchaud, Bonart, Donier, Gould (2018), 'Trades, Quotes and Prices', ch. 12 (Y between 0.5 and 1)"
)
"""Where the default ``impact_k`` = 1.0 comes from (the conservative end of the measured range)."""


class ExecutionConfig(BaseModel):
    """How target weights meet the market: frictions on the fills, all off by default."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_participation: float | None = Field(default=None, gt=0.0, le=1.0)
    """Largest fraction of a bar's traded quote volume (close x volume) one symbol's fills may take on
    that bar; null: no cap."""
    leftover: Literal["carry", "drop"] = "carry"
    """What happens to the part of an order above the cap: it keeps filling on the next bars (carry)
    or is dropped (drop, counted in metrics.json's costs.dropped_quote)."""
    impact: Literal["none", "sqrt"] = "none"
    """Price impact: none, or the square-root model impact_k x sigma x sqrt(Q / V) of the price."""
    impact_k: float = Field(default=1.0, ge=0.0, le=100.0)
    """Coefficient k of the square-root impact (1.0: see ``IMPACT_K_SOURCE``)."""
    sigma_window: int = Field(default=30, ge=2, le=1000)
    """Past base bars of the Parkinson volatility that scales the impact (docs/EXECUTION.md)."""
    spread: Literal["fixed", "edge"] = "fixed"
    """Half-spread paid on every fill: ``half_spread`` (fixed) or estimated per symbol and window from
    the past ``spread_window`` base bars with the EDGE estimator (edge)."""
    half_spread: float = Field(default=0.0, ge=0.0, lt=0.1)
    """The fixed half-spread, a fraction of the price (spread=fixed; 0: none)."""
    spread_window: int = Field(default=30, ge=3, le=1000)
    """Past base bars the EDGE estimator reads (spread=edge)."""
    min_notional: float = Field(default=0.0, ge=0.0, le=MAX_MONEY)
    """Smallest order in the quote currency (default for symbols the markets do not name; 0: none)."""
    amount_step: float = Field(default=0.0, ge=0.0, le=MAX_MONEY)
    """Order amounts (base units) round down to a multiple of it (default; 0: none)."""
    price_tick: float = Field(default=0.0, ge=0.0, le=MAX_MONEY)
    """Fill prices round to a multiple of it against the trader (default; 0: none)."""
    markets_file: str | None = None
    """A JSON/YAML file of per-symbol limits (min_notional, amount_step, price_tick, active); null: the
    exchange's markets for data=ccxt, else the defaults above (docs/EXECUTION.md)."""
    delisting_haircut: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Fraction of the last real price lost on the forced exit of a delisted holding.

    A holding whose bars end is sold at the first bar after its last one, at its last close
    x (1 - delisting_haircut) (then slippage and fees as on any sell). 0.0 (the default): at the
    last close, as before this setting existed.
    """
    capacity: list[float] | None = None
    """Starting capitals (quote currency) of a capacity curve: the same walk-forward as books of one
    pass; on a backtest it adds capacity.parquet/json; null: none (task=capacity: 1e4 .. 1e8)."""

    @field_validator("capacity")
    @classmethod
    def _capitals(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        if not value:
            msg = "needs at least one capital, e.g. [1e4,1e6,1e8], or null for no capacity curve"
            raise ValueError(msg)
        bad = [v for v in value if not MIN_CASH <= v <= MAX_MONEY]
        if bad:
            msg = f"capitals {bad} are outside [{MIN_CASH:g}, {MAX_MONEY:g}]: give starting capitals such as [1e4,1e6,1e8]"
            raise ValueError(msg)
        if any(b <= a for a, b in itertools.pairwise(value)):
            msg = f"{value} must be strictly increasing (sorted, each capital once), e.g. {sorted(set(value))}"
            raise ValueError(msg)
        return [float(v) for v in value]

    def is_frictionless(self) -> bool:
        """Return whether every friction is off (the run keeps the vectorbt stage, byte-identical artefacts).

        ``capacity`` and ``delisting_haircut`` are not frictions of the fills: they leave the stage as it is.
        """
        return (
            self.max_participation is None
            and (self.impact == "none" or self.impact_k == 0.0)
            and self.spread == "fixed"
            and self.half_spread == 0.0
            and self.min_notional == 0.0
            and self.amount_step == 0.0
            and self.price_tick == 0.0
            and self.markets_file is None
        )

    def capitals(self) -> list[float]:
        """Return the capacity curve's capitals (``DEFAULT_CAPITALS`` when none are set)."""
        return list(self.capacity) if self.capacity is not None else list(DEFAULT_CAPITALS)

    def history_bars(self) -> int:
        """Return the past base bars the frictions read before a window (sigma and spread windows)."""
        return max(self.sigma_window, self.spread_window if self.spread == "edge" else 0)
