"""The exit-rule grid of ``task=grid`` and the walk-forward choice of ``task=wfo``."""

from __future__ import annotations

import itertools

from pydantic import Field, ValidationError, field_validator

from engine.config.exit_rules import ExitRules, duration_to_ns
from engine.config.fields import MAX_DURATION_NS, MAX_TP, _Model
from engine.core.choices import Objective
from engine.core.errors import ConfigError


class GridConfig(_Model):
    """Exit-rule grid of ``task=grid``: the product of the non-empty lists."""

    sl_stop: list[float | None] = Field(default_factory=list)
    tp_stop: list[float | None] = Field(default_factory=list)
    sl_trail: list[bool | float] = Field(default_factory=list)
    max_holding: list[str | None] = Field(default_factory=list)

    @field_validator("tp_stop")
    @classmethod
    def _tp_bounded(cls, value: list[float | None]) -> list[float | None]:
        if any(v is not None and v > MAX_TP for v in value):
            msg = f"every take profit must be <= {MAX_TP:g} (+{MAX_TP:.0%})"
            raise ValueError(msg)
        return value

    @field_validator("max_holding")
    @classmethod
    def _holding_bounded(cls, value: list[str | None]) -> list[str | None]:
        for v in value:
            if v is not None and duration_to_ns(v) > MAX_DURATION_NS:
                msg = f"{v!r} is longer than 100 years: give a duration such as '5d' or '2w'"
                raise ValueError(msg)
        return value

    def combos(self, base: ExitRules | None) -> tuple[list[dict[str, object]], list[str]]:
        """Every combination as ExitRules field values, and the reasons of invalid ones."""
        axes = {k: v for k, v in self.model_dump().items() if v}
        if not axes:
            msg = "task=grid needs at least one grid list, e.g. 'grid.sl_stop=[0.02,0.05]' or grid=sl_tp_27"
            raise ConfigError(msg)
        start = (base or ExitRules()).model_dump()
        combos, invalid = [], []
        for values in itertools.product(*axes.values()):
            combo = {**start, **dict(zip(axes, values, strict=True))}
            try:
                ExitRules.model_validate(combo)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(x) for x in err["loc"]) or "exit_rules"
                text = err["msg"].removeprefix("Value error, ")
                invalid.append(f"{dict(zip(axes, values, strict=True))}: {where} {text}")
                continue
            combos.append(combo)
        return combos, invalid


class WfoConfig(_Model):
    """Walk-forward optimisation of ``task=wfo`` over the exit-rule grid (docs/VALIDATION.md)."""

    objective: Objective = "sharpe"
    """What a combination is chosen by, over its per-window returns in the training windows."""
    train_windows: int = Field(default=12, ge=1)
    """Windows before each traded window that a choice looks at (all earlier ones when anchored)."""
    anchored: bool = False
    """true: train on every window since the first (expanding); false: the last train_windows."""
