"""The validated run configuration: one frozen pydantic model for the whole composed Hydra config.

Stages receive these settings objects, never a raw DictConfig. An invalid value or unknown key
fails at start-up with one line naming the key and what is allowed (see :func:`config_validate`).
The root :class:`RunConfig` and the backtest, portfolio and costs sections live here; the other
sections in their own modules (data, ranking, grid; the building blocks in ``fields``, the
messages in ``messages``), all re-exported under their names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from engine.config.book import MAX_LEVERAGE, CostsBook, PortfolioBook, book_check
from engine.config.data import CcxtData, DataConfig, FilesData, PathsConfig, SyntheticData, UniverseConfig
from engine.config.execution import ExecutionConfig
from engine.config.exit_rules import ExitRules, duration_to_ns
from engine.config.fields import (
    _ALIASES,
    MAX_DAYS,
    MAX_DURATION_NS,
    MAX_MONEY,
    MAX_TP,
    MIN_CASH,
    _bars_of,
    _day_aliases,
    _duration_checked,
    _duration_text,
    _each_checked,
    _Model,
    _setting,
    path_expand,
)
from engine.config.grid import GridConfig, WfoConfig
from engine.config.messages import message_of
from engine.config.portfolio import PortfolioRisk, Weighting
from engine.config.ranking import DEFAULT_MIN_QUOTE_VOLUME_USD, USD_QUOTES, FactorBars, RankingConfig, TrendInTrend
from engine.config.survivorship import SurvivorshipConfig
from engine.core.choices import VbtEngine
from engine.core.errors import ConfigError
from engine.core.units import DAY_MS, MS_NS, duration_ms, interval_ms

__all__ = [
    "DEFAULT_MIN_QUOTE_VOLUME_USD",
    "ENGINE_VERSION",
    "MAX_DAYS",
    "MAX_DURATION_NS",
    "MAX_MONEY",
    "MAX_TP",
    "MIN_CASH",
    "USD_QUOTES",
    "BacktestConfig",
    "CcxtData",
    "CostsConfig",
    "DataConfig",
    "FactorBars",
    "FilesData",
    "GridConfig",
    "PathsConfig",
    "PortfolioConfig",
    "RankingConfig",
    "RunConfig",
    "SyntheticData",
    "TrendInTrend",
    "UniverseConfig",
    "WfoConfig",
    "config_validate",
    "path_expand",
    "validation_message",
]

ENGINE_VERSION = "0.1.0"


class BacktestConfig(_Model):
    """Walk-forward windows and simulation settings."""

    start: date | None = None
    """First ranking date; null starts as soon as enough history exists."""
    end: date | None = None
    """Last day traded; null runs to the end of the data."""
    interval: str = "1d"
    """Base bar of ranking and rebalancing (1d, 4h, 1h, 15m, 5m, ...; it divides a day): factors are
    computed on it, windows rank at one of its closes and trade from the next bar's open."""
    hold: str = "7d"
    """How long each window's winners are held before the next rebalance (a duration, e.g. '7d', '12h')."""
    step: str | None = None
    """Time between ranking bars; null (or a duration equal to hold): each window trades until the next starts."""
    hold_days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    """Alias of hold in days (``hold_days=7`` is ``hold=7d``)."""
    step_days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    """Alias of step in days."""
    timeframes: list[str] = Field(default_factory=list)
    """Finer intervals loaded for the winners only (e.g. ["4h"]); stops run on the finest."""
    init_cash: float = Field(default=100_000.0, ge=MIN_CASH, le=MAX_MONEY)
    """Starting cash in the quote currency (at least 1: below it the orders' sizes vanish and the
    run would trade nothing)."""
    vbt_engine: VbtEngine = "rust"
    """vectorbt engine: rust (no JIT at start-up) or numba (JIT, cached on disk)."""

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: object) -> object:
        return _day_aliases(data, ("hold", "step"))

    @field_validator("timeframes")
    @classmethod
    def _intervals(cls, value: list[str]) -> list[str]:
        return _each_checked(value, interval_ms)

    @field_validator("interval")
    @classmethod
    def _base_interval(cls, value: str) -> str:
        _each_checked([value], interval_ms)
        iv = interval_ms(value)
        if DAY_MS % iv:
            msg = f"{value!r} does not divide a day: the base interval is one of 1d, 12h, 8h, 6h, 4h, 2h, 1h, 30m, 15m, 5m, 1m"
            raise ValueError(msg)
        return value

    @field_validator("hold", "step")
    @classmethod
    def _window_durations(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _duration_checked(value, _ALIASES[str(info.field_name)][1])

    @model_validator(mode="after")
    def _step_is_the_hold(self) -> BacktestConfig:
        # a window trades until the next one starts: a shorter step would simulate bars twice
        # (overlapping windows), a longer one would carry positions through bars never simulated
        if self.step is not None and duration_ms(self.step) != duration_ms(self.hold):
            msg = (
                f"{_setting(self, 'backtest', 'step')} differs from {_setting(self, 'backtest', 'hold')}: windows "
                "that overlap (step < hold) or leave gaps no bar is simulated in (step > hold) are not supported; "
                "set backtest.step=null (it follows the hold)"
            )
            raise ValueError(msg)
        return self

    @property
    def hold_ms(self) -> int:
        """Milliseconds each window lasts."""
        return duration_ms(self.hold)

    @property
    def step_ms(self) -> int:
        """Milliseconds between ranking bars."""
        return duration_ms(self.step or self.hold)

    def window_bars(self) -> tuple[int, int]:
        """Return hold and step in base bars; ``ConfigError`` when one is not a whole number of them."""
        iv = interval_ms(self.interval)
        hold = _bars_of(_setting(self, "backtest", "hold"), self.hold, iv, self.interval, 1)
        step = _bars_of(_setting(self, "backtest", "step"), self.step or self.hold, iv, self.interval, 1)
        return hold, step

    @model_validator(mode="after")
    def _start_before_end(self) -> BacktestConfig:
        if self.start is not None and self.end is not None and self.start > self.end:
            msg = (
                f"backtest.start={self.start} is after backtest.end={self.end}: the start must be on or before the end"
            )
            raise ValueError(msg)
        return self


class PortfolioConfig(PortfolioRisk, PortfolioBook, _Model):
    """How winners are weighted (the risk weightings, volatility target and limits: :class:`PortfolioRisk`)."""

    weighting: Weighting = "equal"
    vol_window: str = "30d"
    """Volatility window of inverse-volatility weights (base bars' log returns)."""
    vol_days: int | None = Field(default=None, ge=1, le=730)
    """Alias of vol_window in days."""
    gross_exposure: float = Field(default=1.0, gt=0.0, le=MAX_LEVERAGE)
    """Fraction of equity invested at each rebalance (sum of absolute weights; above 1 needs portfolio.leverage)."""

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: object) -> object:
        return _day_aliases(data, ("vol_window",))

    @field_validator("vol_window")
    @classmethod
    def _window_duration(cls, value: str, info: ValidationInfo) -> str:
        return _duration_checked(value, _ALIASES[str(info.field_name)][1])

    def vol_bars(self, interval: str) -> int:
        """Return the weights' volatility window in bars of the base ``interval``."""
        return _bars_of(self.vol_label(), self.vol_window, interval_ms(interval), interval, 2)

    def vol_label(self) -> str:
        """Return ``portfolio.<key>=<value>`` of the volatility window as the user gave it."""
        return _setting(self, "portfolio", "vol_window")


class CostsConfig(CostsBook, _Model):
    """Trading costs applied to every fill, rebalance and stop alike."""

    fees: float = Field(default=0.001, ge=0.0, lt=0.1)
    """Proportional fee per fill (0.001 = 10 bp)."""
    slippage: float = Field(default=0.0005, ge=0.0, lt=0.1)
    """Proportional price slippage against the trader per fill."""


class RunConfig(_Model):
    """The whole validated configuration of one run."""

    task: Literal["backtest", "ingest", "grid", "wfo", "capacity"] = "backtest"
    quiet: bool = False
    """Hide progress bars (they hide themselves when not on a terminal)."""
    paths: PathsConfig = PathsConfig()
    data: DataConfig = SyntheticData()
    universe: UniverseConfig = UniverseConfig()
    ranking: RankingConfig = RankingConfig()
    backtest: BacktestConfig = BacktestConfig()
    portfolio: PortfolioConfig = PortfolioConfig()
    costs: CostsConfig = CostsConfig()
    exit_rules: ExitRules | None = None
    """Stops between rebalances; null (or all rules null) is the rebalance mode."""
    grid: GridConfig = GridConfig()
    """Exit-rule grid simulated by ``task=grid`` (and chosen from by ``task=wfo``)."""
    wfo: WfoConfig = WfoConfig()
    """Walk-forward optimisation settings of ``task=wfo``."""
    signals: TrendInTrend | None = None
    """Multi-timeframe entries/exits for the winners (trend_in_trend); null: enter at the rebalance."""
    execution: ExecutionConfig = ExecutionConfig()
    """Market frictions (participation cap, impact, spread, exchange limits) and capacity capitals; all off
    by default (engine/config/execution.py, docs/EXECUTION.md)."""
    survivorship: SurvivorshipConfig = SurvivorshipConfig()
    """The survivorship audit (engine/config/survivorship.py, docs/SURVIVORSHIP.md)."""

    @model_validator(mode="after")
    def _signals_need_fine_bars(self) -> RunConfig:
        if self.signals is not None and not self.backtest.timeframes:
            msg = "signals=trend_in_trend needs finer bars: set backtest.timeframes, e.g. [4h]"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _holding_at_least_one_bar(self) -> RunConfig:
        """Refuse a holding limit shorter than one simulated bar rather than round it up silently.

        Such a limit could only close a position at the very bar after its entry, whatever its value.
        """
        base = self.backtest.interval
        bar = min((interval_ms(tf) for tf in self.backtest.timeframes), default=interval_ms(base))
        name = next((tf for tf in self.backtest.timeframes if interval_ms(tf) == bar), base)
        limits = [("exit_rules.max_holding", self.exit_rules.max_holding if self.exit_rules else None)]
        limits += [("grid.max_holding", v) for v in self.grid.max_holding]
        for key, value in limits:
            if value is not None and duration_to_ns(value) < bar * MS_NS:
                msg = (
                    f"{key}={value!r} is shorter than one bar of the simulation interval {name}: "
                    f"use a duration of at least one bar, a positive integer followed by m, h, d or w (e.g. '{name}' or '5d')"
                )
                raise ConfigError(msg)
        return self

    @model_validator(mode="after")
    def _cadence(self) -> RunConfig:
        """Every window a whole number of base bars; finer bars finer than the base; signals on a daily base.

        Raises ``ConfigError`` (one line, exit 2) naming the setting.
        """
        bt, base = self.backtest, self.backtest.interval
        bt.window_bars()
        factors = self.ranking.bars(base)
        for tf in bt.timeframes:
            if interval_ms(tf) > interval_ms(base):
                msg = (
                    f"backtest.timeframes={list(bt.timeframes)}: {tf!r} is coarser than the base bars "
                    f"backtest.interval={base}; finer bars must be finer than the base, e.g. a fraction of {base}"
                )
                raise ConfigError(msg)
        if self.signals is not None and base != "1d":
            msg = (
                f"signals=trend_in_trend reads a daily trend and needs backtest.interval=1d (it is {base}): "
                "use backtest.interval=1d, or signals=none"
            )
            raise ConfigError(msg)
        # a winner is ranked with min_history bars: a longer weight window has no volatility for it,
        # and inverse-vol weights would silently fall back to equal weights
        p = self.portfolio
        if p.weighting == "inverse_vol":
            vol = p.vol_bars(base)
            if vol + 1 > factors.min_history:
                msg = (
                    f"{p.vol_label()} needs {vol + 1} {base} bars of history but "
                    f"{_setting(self.ranking, 'ranking', 'min_history')} ranks symbols with {factors.min_history}: "
                    f"raise ranking.min_history to >= '{_duration_text((vol + 1) * interval_ms(base))}' or shorten "
                    "portfolio.vol_window"
                )
                raise ConfigError(msg)
        p.risk_check(p.weighting, p.gross_exposure, base, factors.min_history, self.signals is not None)
        book_check(self)  # sides, net exposure, leverage (engine/config/book.py)
        return self

    @field_validator("signals", mode="before")
    @classmethod
    def _signal_windows_bounded(cls, value: object) -> object:
        # TrendInTrend (engine/strategy/signals.py) bounds its windows from below only
        if isinstance(value, dict):
            for key in ("trend_days", "ema_bars"):
                v = value.get(key)
                if isinstance(v, int) and not isinstance(v, bool) and v > MAX_DAYS:
                    msg = f"signals.{key}={v} is above {MAX_DAYS}: give a window such as 50"
                    raise ValueError(msg)
        return value

    @field_validator("exit_rules", mode="before")
    @classmethod
    def _exit_rules_finite(cls, value: object) -> object:
        # ExitRules (engine/config/exit_rules.py) accepts inf; a stop at an infinite distance is no stop
        if isinstance(value, dict):
            for key in ("sl_stop", "tp_stop", "sl_trail"):
                v = value.get(key)
                if isinstance(v, float) and not math.isfinite(v):
                    msg = f"exit_rules.{key}={v} is not a finite number: give a fraction such as 0.05, or null for no rule"
                    raise ValueError(msg)
            tp = value.get("tp_stop")
            if isinstance(tp, int | float) and not isinstance(tp, bool) and tp > MAX_TP:
                msg = f"exit_rules.tp_stop={tp} is above {MAX_TP:g} (+{MAX_TP:.0%}): give a fraction such as 0.15"
                raise ValueError(msg)
            holding = value.get("max_holding")
            if isinstance(holding, str):
                try:
                    ns = duration_to_ns(holding)
                except ValueError as exc:
                    raise ValueError(f"exit_rules.max_holding={holding!r}: {exc}") from None
                if ns > MAX_DURATION_NS:
                    msg = f"exit_rules.max_holding={holding!r} is longer than 100 years: give a duration such as '5d' or '2w'"
                    raise ValueError(msg)
        return value

    @field_validator("exit_rules")
    @classmethod
    def _inactive_is_none(cls, value: ExitRules | None) -> ExitRules | None:
        return value if value is not None and value.active else None


def validation_message(exc: ValidationError) -> str:
    """One line naming the first bad key, the problem and the valid values."""
    return message_of(exc, RunConfig)


def config_validate(raw: Mapping[str, object]) -> RunConfig:
    """Validate a composed, resolved config dict; raise :class:`ConfigError` with one line."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc)) from None
