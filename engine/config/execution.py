"""How target weights meet the market (``execution.*``).

Minimal on this branch: only ``delisting_haircut``. The full execution model (participation cap,
impact, spread, exchange limits, capacity) comes with its own branch and keeps this field as is.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ExecutionConfig(BaseModel):
    """Frictions of the fills; every one off by default (today's results byte for byte)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    delisting_haircut: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Fraction of the last real price lost on the forced exit of a delisted holding.

    A holding whose bars end is sold at the first bar after its last one, at its last close
    x (1 - delisting_haircut) (then slippage and fees as on any sell). 0.0 (the default): at the
    last close, as before this setting existed.
    """
