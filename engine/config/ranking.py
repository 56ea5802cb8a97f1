"""The strategy's settings: the ranking's factors and windows, and the trend-in-trend signal."""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from engine.config.book import RankingBook
from engine.config.fields import (
    _ALIASES,
    MAX_DAYS,
    MAX_MONEY,
    _bars_of,
    _day_aliases,
    _duration_checked,
    _duration_text,
    _Model,
    _setting,
)
from engine.config.renamed import setting_renamed
from engine.core.errors import ConfigError
from engine.core.units import interval_ms

USD_QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USDP", "DAI", "USD")
"""Quotes worth one US dollar: the liquidity floor's default applies to them only."""
DEFAULT_MIN_QUOTE_VOLUME_USD = 1.0e6


class TrendInTrend(BaseModel):
    """Parameters of the daily-trend / 4h pullback-reclaim signal."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trend_days: int = Field(default=50, ge=2)
    """Daily uptrend = daily close strictly above its ``trend_days``-day simple moving average."""
    ema_bars: int = Field(default=20, ge=2)
    """Span of the 4h close EMA (``ewm_mean(span=ema_bars, adjust=False)``)."""
    pullback: float = Field(default=0.02, gt=0.0, lt=0.5)
    """A 4h close at or below ``ema * (1 - pullback)`` arms the trigger."""
    reclaim: bool = True
    """True: enter when, once armed, a 4h close is back above the EMA; False: enter on the arming close."""


class FactorBars(NamedTuple):
    """The ranking's windows in bars of the base interval."""

    momentum: int
    vol: int
    liquidity: int
    min_history: int


def _equal_weights() -> dict[Literal["momentum", "vol_adj_momentum"], float]:
    """Return the default factor weights: half each."""
    return {"momentum": 0.5, "vol_adj_momentum": 0.5}


class RankingConfig(RankingBook, _Model):
    """Factors combined into one score per (ranking date, symbol); the top N are the winners."""

    top_n: int = Field(default=10, ge=1, le=20_000)
    """Winners held per window."""
    momentum_window: str = "30d"
    """Look-back of the momentum factor: close / close one window earlier - 1 (a duration, e.g. '30d', '3d',
    '36h'; a whole number of base bars)."""
    vol_window: str = "30d"
    """Window of the base bars' log-return volatility used by vol-adjusted momentum."""
    liquidity_window: str = "30d"
    """Window of the median quote volume used by the liquidity filter."""
    momentum_days: int | None = Field(default=None, ge=1, le=730)
    """Alias of momentum_window in days (``momentum_days=20`` is ``momentum_window=20d``)."""
    vol_days: int | None = Field(default=None, ge=1, le=730)
    """Alias of vol_window in days."""
    liquidity_days: int | None = Field(default=None, ge=1, le=730)
    """Alias of liquidity_window in days."""
    min_quote_volume: float | None = Field(default=None, ge=0.0, le=MAX_MONEY)
    """Symbols whose median daily quote volume (close x volume, in the pair's quote currency) is
    below this are not ranked. null: 1e6 for USD-pegged quotes (USDT, USDC, ...), no floor for
    any other quote (BTC, ETH, EUR, ...), so a BTC-quoted universe is never emptied."""
    min_dollar_volume: float | None = Field(default=None, ge=0.0, le=MAX_MONEY)
    """Deprecated alias of min_quote_volume (it always counted in the quote currency)."""
    min_history: str = "60d"
    """Listing age a symbol needs by the ranking bar to be ranked (its bars at the base interval)."""
    min_history_days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    """Alias of min_history in days."""
    weights: dict[Literal["momentum", "vol_adj_momentum"], Annotated[float, Field(ge=-1e6, le=1e6)]] = Field(
        default_factory=_equal_weights
    )
    """Weight of each factor's cross-sectional z-score in the score."""

    @model_validator(mode="before")
    @classmethod
    def _deprecated_alias(cls, data: object) -> object:
        data = _day_aliases(data, ("momentum_window", "vol_window", "liquidity_window", "min_history"))
        return setting_renamed(
            data,
            "min_dollar_volume",
            "min_quote_volume",
            warning="ranking.min_dollar_volume is deprecated: it counts in the quote currency; use ranking.min_quote_volume",
            conflict="set ranking.min_quote_volume only (ranking.min_dollar_volume is its deprecated alias)",
        )

    def quote_volume_floor(self, quote: str) -> float:
        """Return the liquidity floor of pairs quoted in ``quote`` (see ``min_quote_volume``)."""
        if self.min_quote_volume is not None:
            return self.min_quote_volume
        return DEFAULT_MIN_QUOTE_VOLUME_USD if quote in USD_QUOTES else 0.0

    @field_validator("momentum_window", "vol_window", "liquidity_window", "min_history")
    @classmethod
    def _window_durations(cls, value: str, info: ValidationInfo) -> str:
        # the bound of the day-count alias: 730 days for a factor window, MAX_DAYS for the listing age
        return _duration_checked(value, _ALIASES[str(info.field_name)][1])

    @model_validator(mode="after")
    def _weights_not_all_zero(self) -> RankingConfig:
        if not any(w != 0 for w in self.weights.values()):
            msg = f"ranking.weights={dict(self.weights)} needs at least one non-zero factor weight"
            raise ValueError(msg)
        return self

    def bars(self, interval: str) -> FactorBars:
        """Return the factor windows and the listing age in bars of the base ``interval``.

        ``ConfigError`` naming the setting when one is not a whole number of bars, is too short
        for its factor, or the listing age does not cover the longest factor window.
        """
        iv = interval_ms(interval)
        out = {}
        for key, least in (("momentum_window", 2), ("vol_window", 2), ("liquidity_window", 1), ("min_history", 1)):
            out[key] = _bars_of(_setting(self, "ranking", key), getattr(self, key), iv, interval, least)
        need = max(out["momentum_window"], out["vol_window"], out["liquidity_window"]) + 1
        if out["min_history"] < need:
            msg = (
                f"{_setting(self, 'ranking', 'min_history')} is {out['min_history']} {interval} bars, too short: it "
                f"must be >= {need} bars (the longest factor window + 1 bar), e.g. "
                f"'{_duration_text(need * iv)}'"
            )
            raise ConfigError(msg)
        return FactorBars(out["momentum_window"], out["vol_window"], out["liquidity_window"], out["min_history"])
