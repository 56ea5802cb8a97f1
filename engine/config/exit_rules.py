"""Exit rules: when a held position is cut between rebalances.

Orthogonal to allocation: ranking and weights decide *what* to hold, exit rules decide *when* a
position is closed before the next rebalance. ``None`` (no rules) is the legacy rebalance mode.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.core.errors import ConfigError
from engine.core.units import duration_to_ns as duration_to_ns  # re-exported for the config's users

if TYPE_CHECKING:
    from engine.config import RunConfig

log = logging.getLogger(__name__)


class ExitRules(BaseModel):
    """Stop loss, take profit, trailing stop and maximum holding time of a long position.

    Stop loss and take profit are fractions of the position's cost basis: the size-weighted
    average of its buy fills (slippage included) since it opened; sells leave it unchanged. The
    trailing peak and the holding clock run from the opening. All of it is carried across
    walk-forward windows: a rebalance that keeps a position changes its quantity (and, on a
    top-up, its basis), never resets its stops (docs/EXIT_RULES.md, "State across windows").
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    sl_stop: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Stop loss: exit when price falls this fraction below the cost basis (0 < x < 1)."""
    tp_stop: float | None = Field(default=None, gt=0.0)
    """Take profit: exit when price rises this fraction above the cost basis (x > 0)."""
    sl_trail: bool | float = False
    """Trailing stop: ``true`` makes ``sl_stop`` trail the highest high since the position opened; a fraction
    (0 < x < 1) adds a separate trailing stop at that distance while ``sl_stop`` stays fixed."""
    max_holding: str | None = None
    """Close the position at the open of the first bar opening at or after its opening time + this
    duration ('20d'), across windows; at least one bar of the simulation interval."""

    @field_validator("sl_trail")
    @classmethod
    def _trail_range(cls, value: bool | float) -> bool | float:
        if not isinstance(value, bool) and not 0.0 < value < 1.0:
            msg = "must be true/false or a fraction with 0 < x < 1"
            raise ValueError(msg)
        return value

    @field_validator("max_holding", mode="before")
    @classmethod
    def _holding_is_text(cls, value: object) -> object:
        if value is not None and not isinstance(value, str):
            msg = f"invalid duration {value!r}: use a positive integer followed by m, h, d or w (e.g. '5d')"
            raise ValueError(msg)
        return value

    @field_validator("max_holding")
    @classmethod
    def _holding_format(cls, value: str | None) -> str | None:
        if value is not None:
            duration_to_ns(value)
        return value

    @model_validator(mode="after")
    def _trail_needs_stop(self) -> ExitRules:
        if self.sl_trail is True and self.sl_stop is None:
            msg = "sl_trail=true makes sl_stop trail, so sl_stop must be set (or give sl_trail a fraction)"
            raise ValueError(msg)
        return self

    @property
    def trail_fraction(self) -> float | None:
        """Distance of the trailing stop below the running high, or None without one."""
        if self.sl_trail is True:
            return self.sl_stop
        if self.sl_trail is False:
            return None
        return float(self.sl_trail)

    @property
    def fixed_sl(self) -> float | None:
        """Distance of the fixed (non-trailing) stop loss, or None without one."""
        return None if self.sl_trail is True else self.sl_stop

    @property
    def max_holding_ns(self) -> int | None:
        """``max_holding`` in nanoseconds, or None."""
        return None if self.max_holding is None else duration_to_ns(self.max_holding)

    @property
    def active(self) -> bool:
        """Whether any rule can close a position."""
        return any(x is not None for x in (self.fixed_sl, self.tp_stop, self.trail_fraction, self.max_holding))


def grid_combos(cfg: RunConfig) -> list[ExitRules | None]:
    """Return the valid exit rules of ``cfg.grid`` (invalid combinations are reported and skipped)."""
    combos, invalid = cfg.grid.combos(cfg.exit_rules)
    if not combos:
        msg = f"the exit-rule grid yields 0 valid combinations ({len(invalid)} invalid, e.g. {invalid[0]}): fix the grid values"
        raise ConfigError(msg)
    for reason in invalid:
        log.warning("grid combination skipped: %s", reason)
    rules = [ExitRules.model_validate(c) for c in combos]
    return [r if r.active else None for r in rules]
