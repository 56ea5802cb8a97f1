"""Configuration: the validated run config (:mod:`engine.config.model`) and the exit rules.

The lowest layer but one (:mod:`engine.core` below it): every other stage takes these frozen
pydantic models, never a raw Hydra config.
"""

from engine.config.execution import ExecutionConfig
from engine.config.model import (
    DEFAULT_MIN_QUOTE_VOLUME_USD,
    ENGINE_VERSION,
    MAX_DAYS,
    MAX_DURATION_NS,
    MAX_MONEY,
    MAX_TP,
    MIN_CASH,
    USD_QUOTES,
    BacktestConfig,
    CcxtData,
    CostsConfig,
    FactorBars,
    FilesData,
    GridConfig,
    PathsConfig,
    PortfolioConfig,
    RankingConfig,
    RunConfig,
    SyntheticData,
    TrendInTrend,
    UniverseConfig,
    WfoConfig,
    config_validate,
    path_expand,
    validation_message,
)

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
    "ExecutionConfig",
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
