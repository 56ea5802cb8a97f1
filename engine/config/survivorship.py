"""The survivorship audit (``survivorship.*``): what the run would show on today's survivors only."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SurvivorshipConfig(BaseModel):
    """Settings of the survivorship audit (docs/SURVIVORSHIP.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    audit: bool = True
    """Walk the same books a second time over the survivors-only universe (the symbols whose bars
    reach the data's last bar) and write the comparison to metrics.json's ``survivorship`` block
    and the report; false: no second walk, no block."""
