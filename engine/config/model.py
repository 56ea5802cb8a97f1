"""The validated run configuration: one frozen pydantic model for the whole composed Hydra config.

Stages receive these settings objects, never a raw DictConfig. Any invalid value or unknown key
fails at start-up with one line naming the key and what is allowed (see :func:`config_validate`).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal, NamedTuple, get_args

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from engine.config.book import MAX_LEVERAGE, CostsBook, PortfolioBook, RankingBook, book_check
from engine.config.execution import ExecutionConfig
from engine.config.exit_rules import ExitRules, duration_to_ns
from engine.config.market import MarketSettings
from engine.config.portfolio import PortfolioRisk, Weighting
from engine.config.renamed import setting_renamed
from engine.config.survivorship import SurvivorshipConfig
from engine.core.choices import Implausible, Objective, VbtEngine
from engine.core.errors import ConfigError, EngineError
from engine.core.symbols import symbol_check
from engine.core.units import DAY_MS, MS_NS, UNIT_MS, duration_ms, interval_ms
from engine.core.urls import url_has_credentials, url_shown

ENGINE_VERSION = "0.1.0"
USD_QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USDP", "DAI", "USD")
"""Quotes worth one US dollar: the liquidity floor's default applies to them only."""
DEFAULT_MIN_QUOTE_VOLUME_USD = 1.0e6


def path_expand(value: str | None) -> str | None:
    """``~`` and ``$VAR``/``${VAR}`` expanded in a path setting (None stays None)."""
    return None if value is None else os.path.expandvars(os.path.expanduser(value))


def _each_checked(values: list[str], check: Callable[[str], object]) -> list[str]:
    """Run ``check`` on every value; its EngineError becomes the ValueError pydantic reports."""
    for v in values:
        try:
            check(v)
        except EngineError as exc:
            raise ValueError(str(exc)) from exc
    return values


# Upper bounds of the numeric settings: far beyond any sensible run, small enough that date and
# integer arithmetic cannot overflow (a window of 10,000 days from year 2000 still ends before 2100).
MAX_DAYS = 10_000
MAX_MONEY = 1e15
MIN_CASH = 1.0
"""Smallest ``backtest.init_cash`` (quote currency): one unit, e.g. 1 USDT."""
MAX_DURATION_NS = 100 * 365 * 86_400 * 10**9  # 100 years
MAX_TP = 1000.0  # a take profit at +100,000 %


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


_ALIASES = {
    "hold": ("hold_days", MAX_DAYS),
    "step": ("step_days", MAX_DAYS),
    "momentum_window": ("momentum_days", 730),
    "vol_window": ("vol_days", 730),
    "liquidity_window": ("liquidity_days", 730),
    "min_history": ("min_history_days", MAX_DAYS),
}
"""Duration settings with a day-count alias: setting -> (alias, largest day count)."""


def _day_aliases(data: Any, names: tuple[str, ...]) -> Any:
    """Map day-count aliases (``hold_days: 7``) onto their duration settings (``hold: 7d``).

    An alias that is set wins over its setting's value (the settings always carry the group's
    default) and stays set, so messages can name the key the user wrote. An alias out of its
    range is left for the field's own validation to name.
    """
    for name in names:
        alias, most = _ALIASES[name]
        data = setting_renamed(data, alias, name, functools.partial(_days_text, most=most), keep=True)
    return data


def _days_text(days: object, most: int) -> str | None:
    """``"<days>d"`` for a day count in 1..``most``; None for anything else (the alias field names it)."""
    return f"{days}d" if isinstance(days, int) and not isinstance(days, bool) and 1 <= days <= most else None


def _setting(model: BaseModel, section: str, name: str) -> str:
    """Return ``section.key=value`` of a duration setting as the user gave it (its alias if set)."""
    alias = _ALIASES.get(name, (None, 0))[0]
    days = getattr(model, alias, None) if alias else None
    return f"{section}.{alias}={days}" if days is not None else f"{section}.{name}={getattr(model, name)!r}"


def _duration_checked(value: str, max_days: int) -> str:
    """Return a duration setting as given, or raise the ValueError pydantic reports."""
    try:
        ms = duration_ms(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if ms > max_days * DAY_MS:
        msg = f"{value!r} is longer than {max_days} days: give a duration such as '30d'"
        raise ValueError(msg)
    return value


def _duration_text(ms: int) -> str:
    """Shortest ``<count><unit>`` text of a duration in milliseconds (``86400000`` -> ``'1d'``)."""
    for unit in ("w", "d", "h", "m"):
        if ms % UNIT_MS[unit] == 0:
            return f"{ms // UNIT_MS[unit]}{unit}"
    return f"{ms}ms"


def _bars_of(label: str, value: str, iv: int, interval: str, least: int) -> int:
    """Return a duration setting in bars of the base interval; ``ConfigError`` naming ``label`` otherwise."""
    ms = duration_ms(value)
    if ms % iv:
        lo, hi = ms // iv * iv, (ms // iv + 1) * iv
        near = " or ".join(f"'{_duration_text(x)}'" for x in (lo, hi) if x > 0)
        msg = (
            f"{label} is not a whole number of backtest.interval={interval} bars: use a multiple of "
            f"{interval}, e.g. {near}"
        )
        raise ConfigError(msg)
    if ms // iv < least:
        msg = f"{label} is {ms // iv} {interval} bar(s): it needs at least {least}, e.g. '{_duration_text(least * iv)}'"
        raise ConfigError(msg)
    return ms // iv


class _Model(BaseModel):
    # allow_inf_nan=False: every float setting must be a finite number (inf/nan are user errors)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class PathsConfig(_Model):
    """Where data lives and where a run writes its artefacts."""

    lakehouse_dir: str = "lakehouse"
    """Root of the Hive-partitioned parquet store: a folder (relative to the working directory) or
    ``s3://bucket/prefix`` (docs/OBJECT_STORAGE.md; credentials only from the AWS settings)."""
    output_dir: str | None = None
    """Run directory; filled from Hydra's runtime output dir when null."""
    ledger: str | None = None
    """Trial ledger (DuckDB) every run, sweep job, grid combination and wfo choice is appended to;
    conf/paths/default.yaml sets outputs/ledger.duckdb; null: no ledger."""

    @field_validator("lakehouse_dir", "output_dir", "ledger")
    @classmethod
    def _expand(cls, value: str | None) -> str | None:
        return path_expand(value)

    # -- object storage (issue 16): refuse credentials in an s3:// URL before anything is written --
    @field_validator("lakehouse_dir")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        if url_has_credentials(value):  # any storage's URL: none takes credentials from it
            msg = (
                f"{url_shown(value)} carries credentials in the URL: remove them and use the "
                "standard AWS settings (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
            )
            raise ValueError(msg)
        return value


class SyntheticData(MarketSettings, _Model):
    """The offline deterministic generator (the default source)."""

    source: Literal["synthetic"] = "synthetic"
    seed: int = Field(default=7, ge=0, le=2**32 - 1)
    """Seed of the generator: the same seed gives byte-identical parquet."""
    n_symbols: int = Field(default=100, ge=2, le=20_000)
    """Number of symbols in the generated universe."""
    start: date = date(2021, 1, 1)
    end: date = date(2024, 12, 31)
    """Last generated day, inclusive."""
    quote: str = "USDT"

    @model_validator(mode="after")
    def _range(self) -> SyntheticData:
        if (self.end - self.start).days < 30:
            msg = f"data.end={self.end} must be at least 30 days after data.start={self.start}"
            raise ValueError(msg)
        return self


class CcxtData(MarketSettings, _Model):
    """Any ccxt exchange, fetched over its public REST API."""

    source: Literal["ccxt"] = "ccxt"
    exchange: str = "binance"
    """ccxt exchange id (e.g. binance, kraken)."""
    symbols: list[str] = Field(default_factory=list)
    """Universe to ingest; empty means every spot market quoted in ``quote``, delisted ones kept where served."""
    quote: str = "USDT"
    start: date = date(2021, 1, 1)
    end: date = date(2024, 12, 31)
    limit: int = Field(default=1000, ge=1, le=5000)
    """Bars per request page."""
    max_retries: int = Field(default=5, ge=0, le=20)
    """Retries after a 429, 5xx or timeout before the fetch fails."""
    timeout_ms: int = Field(default=10_000, ge=100, le=3_600_000)
    api_url: str | None = None
    """Override the exchange's REST base URL (a mirror or a local test server)."""
    rate_limit_ms: int | None = Field(default=None, ge=0, le=3_600_000)
    """Minimum delay between requests; null uses the exchange's own rate limit."""


class FilesData(MarketSettings, _Model):
    """A folder of the user's own OHLCV files (csv, parquet, freqtrade feather)."""

    source: Literal["files"] = "files"
    path: str = "data/import"
    """Folder to import from (``~`` and environment variables expanded)."""
    quote: str | None = None
    """Quote currency of the pairs to import; null: the files' one quote (several: an error)."""
    start: date | None = None
    """First day to ingest; null: the first bar in the files."""
    end: date | None = None
    """Last day to ingest, inclusive; null: the last bar in the files."""
    implausible: Implausible = "error"
    """A bar priced over 1000x or under 1/1000 of its neighbours' median close: refuse the file
    (error, naming the bar) or drop such bars with a warning (drop); docs/DATA.md."""

    @field_validator("path")
    @classmethod
    def _expand(cls, value: str) -> str:
        return str(path_expand(value))


DataConfig = Annotated[SyntheticData | CcxtData | FilesData, Field(discriminator="source")]


class UniverseConfig(_Model):
    """Which symbols may be ranked."""

    symbols: list[str] = Field(default_factory=list)
    """Restrict the universe to these symbols; empty means every symbol in the lakehouse."""
    exclude: list[str] = Field(default_factory=list)
    """Symbols never ranked (e.g. stablecoins)."""

    @field_validator("symbols", "exclude")
    @classmethod
    def _symbols_safe(cls, value: list[str]) -> list[str]:
        return _each_checked(value, symbol_check)


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
    def _deprecated_alias(cls, data: Any) -> Any:
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
    def _aliases(cls, data: Any) -> Any:
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
    def _aliases(cls, data: Any) -> Any:
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

    def combos(self, base: ExitRules | None) -> tuple[list[dict[str, Any]], list[str]]:
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
    def _signal_windows_bounded(cls, value: Any) -> Any:
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
    def _exit_rules_finite(cls, value: Any) -> Any:
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


def _num(x: Any) -> str:
    """Return a bound as people write it: 1e+15, not 1000000000000000.0."""
    return f"{x:g}" if isinstance(x, float) and abs(x) >= 1e6 else str(x)


def _allowed(model: type[BaseModel], field: str) -> str:
    """Human description of a field's valid values from its annotation and constraints."""
    info = model.model_fields.get(field)
    if info is None:
        return ""
    bounds = []
    for meta in info.metadata:
        if isinstance(meta, Gt):
            bounds.append(f"> {_num(meta.gt)}")
        elif isinstance(meta, Ge):
            bounds.append(f">= {_num(meta.ge)}")
        elif isinstance(meta, Lt):
            bounds.append(f"< {_num(meta.lt)}")
        elif isinstance(meta, Le):
            bounds.append(f"<= {_num(meta.le)}")
    ann = info.annotation
    if getattr(ann, "__origin__", None) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(ann))
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ""
    text = str(ann).replace("typing.", "").replace(" | None", "").replace("<class '", "").replace("'>", "")
    words = {
        "float": "a finite number",
        "int": "an integer",
        "bool": "true or false",
        "str": "a string",
        "date": "a date (YYYY-MM-DD)",
        "datetime.date": "a date (YYYY-MM-DD)",
        "list[str]": "a list of strings",
    }
    if text not in words:
        return ""  # a nested model, a union or a mapping: the message itself says what is wrong
    return f"{words[text]} {' and '.join(bounds)}".strip()


def _model_at(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, str]:
    """Return the pydantic model that owns the field at ``loc`` and the field's name."""
    model: type[BaseModel] | None = RunConfig
    for part in loc[:-1]:
        if model is None:
            break
        if part in ("synthetic", "ccxt", "files") and model is RunConfig:
            continue
        info = model.model_fields.get(str(part))
        target = info.annotation if info else None
        args = [a for a in getattr(target, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = target if isinstance(target, type) and issubclass(target, BaseModel) else (args[0] if args else None)
    for choice in (SyntheticData, CcxtData, FilesData):
        if len(loc) > 1 and loc[1] == choice.model_fields["source"].default:
            model = choice if loc[0] == "data" else model
    return model, str(loc[-1])


def validation_message(exc: ValidationError) -> str:
    """One line naming the first bad key, the problem and the valid values."""
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if p not in ("synthetic", "ccxt", "files"))
    key = ".".join(str(p) for p in loc) or "config"
    text = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if err["type"] == "finite_number":
        text = "not a finite number (inf and nan are not allowed)"
    if not err["loc"] or (err["type"] == "value_error" and isinstance(err.get("input"), dict)):
        # a model-level rule: its message names the keys and values itself
        return f"invalid config: {text}"
    model, field = _model_at(tuple(err["loc"]))
    if err["type"] == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"invalid config value {key}.source={ctx.get('tag')!r}: allowed: one of {ctx.get('expected_tags')}"
    if err["type"] == "dict_type":
        return (
            f"invalid config value {key}={err.get('input')!r}: {text} (allowed: a mapping such as {{name: value, ...}})"
        )
    if err["type"] == "extra_forbidden":
        valid = sorted(model.model_fields) if model else []
        return f"unknown config key '{key}': valid keys here are {', '.join(valid)}"
    allowed = _allowed(model, field) if model else ""
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f"={value!r}"
    if isinstance(value, str) and url_has_credentials(value):
        shown = ""  # issue 16: never echo credentials typed into a storage URL
    if err["type"] == "value_error":  # a validator's own message says what is allowed
        allowed = ""
    if err["type"] == "list_type" and isinstance(value, str):
        text = f"a list is needed: write '{key}=[{value}]'"
    hint = f" (allowed: {allowed})" if allowed else ""
    return f"invalid config value {key}{shown}: {text}{hint}"


def config_validate(raw: dict[str, Any]) -> RunConfig:
    """Validate a composed, resolved config dict; raise :class:`ConfigError` with one line."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc)) from None
