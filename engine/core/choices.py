"""Closed sets of the configuration, each defined once as a ``Literal`` type and its tuple of values."""

from __future__ import annotations

from typing import Literal, get_args

Objective = Literal["sharpe", "sortino", "calmar", "total_return"]
"""What the walk-forward optimisation maximises over a combination's per-window returns."""
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)

VbtEngine = Literal["rust", "numba"]
"""vectorbt's simulation engine."""
VBT_ENGINES: tuple[VbtEngine, ...] = get_args(VbtEngine)

Implausible = Literal["error", "drop"]
"""What reading files does with a bar priced far off its neighbours: refuse the file, or drop the bar."""

Weighting = Literal["equal", "inverse_vol", "erc", "hrp", "min_variance"]
"""How a window's winners are weighted before the limits (docs/PORTFOLIO.md)."""
WEIGHTINGS: tuple[Weighting, ...] = get_args(Weighting)
RISK_WEIGHTINGS: tuple[Weighting, ...] = ("erc", "hrp", "min_variance")
"""The weightings computed from the winners' covariance over ``portfolio.cov_window``."""

CovarianceEstimator = Literal["ledoit_wolf", "empirical"]
"""The covariance of the risk weightings and the volatility target: Ledoit-Wolf shrinkage or the sample one."""

Market = Literal["spot", "perp"]
"""What the data's bars are: spot pairs, or linear perpetual futures that pay or receive funding."""
MARKETS: tuple[Market, ...] = get_args(Market)

FundingMissing = Literal["error", "zero"]
"""What a perp run does for a symbol whose funding the store lacks: refuse (exit 2), or assume zero with a warning."""
FUNDING_MISSING: tuple[FundingMissing, ...] = get_args(FundingMissing)
