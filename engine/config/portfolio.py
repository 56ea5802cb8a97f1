"""Portfolio-construction settings: risk-based weightings, a volatility target, weight and turnover limits.

:class:`PortfolioRisk` holds the settings of docs/PORTFOLIO.md; ``PortfolioConfig`` (in
:mod:`engine.config.model`) inherits them, so they are the ``portfolio.*`` keys of the run config.
Every one is off by default (``portfolio=equal`` with these defaults is the engine before them,
byte for byte). This module imports nothing from :mod:`engine.config.model`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.core.choices import RISK_WEIGHTINGS, CovarianceEstimator, Weighting
from engine.core.errors import ConfigError
from engine.core.units import duration_ms, interval_ms

__all__ = ["RISK_WEIGHTINGS", "PortfolioRisk", "Weighting"]
MAX_COV_DAYS = 730


class PortfolioRisk(BaseModel):
    """The covariance window and estimator, the volatility target and the limits of a book.

    Attributes
    ----------
    cov_window : str
        Look-back of the covariance (a duration, a whole number of base bars, at least 2 of them).
    covariance : str
        ``ledoit_wolf`` (shrunk towards a scaled identity, the default) or ``empirical``.
    target_vol : float or None
        Annualised volatility target of the book; None: the gross is ``gross_exposure``.
    max_gross : float
        Cap on the gross (the sum of the absolute weights); at most ``portfolio.leverage``
        (``engine.config.book.book_check``): 1 on a long-only spot book.
    max_weight : float or None
        Cap on one symbol's weight (a fraction of equity); None: no cap.
    max_turnover : float or None
        Cap on a rebalance's sum of absolute weight changes; None: no cap.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    cov_window: str = "30d"
    covariance: CovarianceEstimator = "ledoit_wolf"
    target_vol: float | None = Field(default=None, gt=0.0, le=10.0)
    max_gross: float = Field(default=1.0, gt=0.0, le=125.0)
    max_weight: float | None = Field(default=None, gt=0.0, le=1.0)
    max_turnover: float | None = Field(default=None, gt=0.0, le=2.0)

    @field_validator("cov_window")
    @classmethod
    def _cov_duration(cls, value: str) -> str:
        try:
            ms = duration_ms(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if ms > MAX_COV_DAYS * 86_400_000:
            msg = f"{value!r} is longer than {MAX_COV_DAYS} days: give a duration such as '30d'"
            raise ValueError(msg)
        return value

    def needs_returns(self, weighting: str) -> bool:
        """Whether the book needs the winners' past returns (a risk weighting or a volatility target)."""
        return weighting in RISK_WEIGHTINGS or self.target_vol is not None

    def constructs(self, weighting: str, gross_exposure: float) -> bool:
        """Whether any portfolio-construction step is on (False: the weights of ``weights_compute`` as they are)."""
        limits = (self.max_weight, self.max_turnover)
        return self.needs_returns(weighting) or any(x is not None for x in limits) or self.max_gross < gross_exposure

    def cov_bars(self, interval: str) -> int:
        """Return ``cov_window`` in bars of the base ``interval``; ``ConfigError`` naming it otherwise."""
        ms, iv = duration_ms(self.cov_window), interval_ms(interval)
        if ms % iv or ms // iv < 2:
            msg = (
                f"portfolio.cov_window={self.cov_window!r} is not a whole number (>= 2) of backtest.interval="
                f"{interval} bars: use a multiple of {interval} of at least 2 bars, e.g. '30d'"
            )
            raise ConfigError(msg)
        return ms // iv

    def risk_check(self, weighting: str, gross_exposure: float, interval: str, min_history: int, signals: bool) -> None:
        """Refuse settings that cannot hold together (one line naming them, ``ConfigError``).

        Parameters
        ----------
        weighting, gross_exposure
            ``portfolio.weighting`` and ``portfolio.gross_exposure``.
        interval
            The base bar.
        min_history
            ``ranking.min_history`` in base bars: every winner has that many bars at its ranking bar.
        signals
            Whether ``signals`` is on (entries wait for a signal, so the held book is not the targets).
        """
        if self.needs_returns(weighting):
            n = self.cov_bars(interval)
            if n + 1 > min_history:
                msg = (
                    f"portfolio.cov_window={self.cov_window!r} needs {n + 1} {interval} bars of history but "
                    f"ranking.min_history ranks symbols with {min_history}: raise ranking.min_history or shorten "
                    "portfolio.cov_window"
                )
                raise ConfigError(msg)
        if self.target_vol is not None and gross_exposure != 1.0:
            msg = (
                f"portfolio.gross_exposure={gross_exposure} and portfolio.target_vol={self.target_vol} both set the "
                "gross: with target_vol the gross is target_vol / the book's volatility, capped by portfolio.max_gross; "
                "set one of them"
            )
            raise ConfigError(msg)
        if self.max_turnover is not None and signals:
            msg = (
                "portfolio.max_turnover limits the change from the held book, but with signals=trend_in_trend "
                "entries wait for a signal and the held book is not the targets: use signals=none or "
                "portfolio.max_turnover=null"
            )
            raise ConfigError(msg)
