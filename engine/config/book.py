"""Settings of a book's sides, exposure and leverage (docs/LONG_SHORT.md).

:class:`PortfolioBook` (the ``portfolio.*`` keys ``side``, ``net_exposure``, ``leverage``),
:class:`RankingBook` (``ranking.bottom_n``) and :class:`CostsBook` (``costs.maintenance_margin``)
are mixed into the models of :mod:`engine.config.model`. With every one at its default the book is
today's long-only spot book, byte for byte. :func:`book_check` refuses what cannot hold together
(one line, ``ConfigError``, exit 2). This module imports nothing from :mod:`engine.config.model` at
run time (its functions take a :class:`~engine.config.model.RunConfig`, named for the type checker only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.core.errors import ConfigError

if TYPE_CHECKING:  # the type only: model imports this module at run time
    from engine.config.model import RunConfig

Side = Literal["long", "short", "long_short"]
MAX_LEVERAGE = 125.0
"""The highest leverage a perpetual market offers (Binance's 125x); a market's own maximum may be lower."""


class PortfolioBook(BaseModel):
    """Which ends of the ranking the book holds, its net exposure and its leverage.

    Attributes
    ----------
    side : {"long", "short", "long_short"}
        ``long``: the top ``ranking.top_n`` (today's book); ``short``: the bottom ``ranking.bottom_n``
        sold short; ``long_short``: both.
    net_exposure : float or None
        Sum of the signed weights (long minus short, a fraction of equity); 0 = market neutral.
        None: the side's own (``gross_exposure`` long, ``-gross_exposure`` short, 0 long-short).
    leverage : float
        Notional over margin of each position (isolated margin; 1 = none). Needs perpetual data.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    side: Side = "long"
    net_exposure: float | None = Field(default=None, ge=-MAX_LEVERAGE, le=MAX_LEVERAGE)
    leverage: float = Field(default=1.0, ge=1.0, le=MAX_LEVERAGE)

    def net(self, gross: float) -> float:
        """Return the book's net exposure for a gross exposure ``gross`` (the side's default when unset)."""
        if self.net_exposure is not None:
            return self.net_exposure
        return {"long": gross, "short": -gross, "long_short": 0.0}[self.side]

    def legs(self, gross: float) -> tuple[float, float]:
        """Return the long and short legs' gross ``(L, S)``: ``L + S = gross`` and ``L - S = net``."""
        net = self.net(gross)
        return (gross + net) / 2.0, (gross - net) / 2.0


class RankingBook(BaseModel):
    """The short leg's size.

    Attributes
    ----------
    bottom_n : int or None
        Symbols sold short per window: the lowest ranked (None: ``ranking.top_n``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    bottom_n: int | None = Field(default=None, ge=1, le=20_000)


class CostsBook(BaseModel):
    """The margin a leveraged position must keep.

    Attributes
    ----------
    maintenance_margin : float
        Maintenance margin rate of a position's notional; below it the position is liquidated.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    maintenance_margin: float = Field(default=0.005, gt=0.0, lt=1.0)


def is_long_only(cfg: RunConfig) -> bool:
    """Whether the run is today's book: long only, no leverage, spot data (the vectorbt stage may run it)."""
    p = cfg.portfolio
    return bool(p.side == "long" and p.leverage == 1.0 and market_of(cfg) == "spot")


def is_sided(cfg: RunConfig) -> bool:
    """Whether the weights are signed or leveraged (:mod:`engine.strategy.sides`, :mod:`engine.strategy.sided_risk`).

    A short leg, a gross above 1, or a volatility target allowed a gross above 1 (``max_gross``).
    """
    p = cfg.portfolio
    return bool(p.side != "long" or p.gross_exposure > 1.0 or p.max_gross > 1.0)


def market_of(cfg: RunConfig) -> str:
    """Return ``data.market`` (``spot`` until the perpetual-futures data define it)."""
    return str(getattr(cfg.data, "market", "spot"))


def book_check(cfg: RunConfig) -> None:
    """Refuse sides, exposures and leverage that cannot hold together (one line, ``ConfigError``)."""
    p, market = cfg.portfolio, market_of(cfg)
    gross, net = p.gross_exposure, p.net(p.gross_exposure)
    if p.side != "long" and market != "perp":
        msg = (
            f"portfolio.side={p.side} sells short, which spot data (data.market={market}) cannot: "
            "use perpetual futures data (data.market=perp) or portfolio.side=long"
        )
        raise ConfigError(msg)
    if p.leverage != 1.0 and market != "perp":
        msg = (
            f"portfolio.leverage={p.leverage:g} needs a margin market: spot data (data.market={market}) has none; "
            "use data.market=perp or portfolio.leverage=1"
        )
        raise ConfigError(msg)
    if p.leverage != 1.0 or p.side != "long":
        mm = cfg.costs.maintenance_margin
        if mm >= 1.0 / p.leverage:
            msg = (
                f"costs.maintenance_margin={mm:g} is not below 1 / portfolio.leverage={1.0 / p.leverage:g}: every "
                "position would be liquidated as it opens; lower the leverage or the maintenance margin"
            )
            raise ConfigError(msg)
    if gross > p.leverage + 1e-12:
        msg = (
            f"portfolio.gross_exposure={gross:g} is above portfolio.leverage={p.leverage:g}: the margin of the "
            "positions would exceed the equity; lower the gross or raise the leverage"
        )
        raise ConfigError(msg)
    lo, hi = {"long": (0.0, gross), "short": (-gross, 0.0), "long_short": (-gross, gross)}[p.side]
    one_side = {"long": gross, "short": -gross}.get(p.side)
    if not (lo - 1e-12 <= net <= hi + 1e-12) or (one_side is not None and abs(net - one_side) > 1e-12):
        want = {"long": f"{gross:g} (all long)", "short": f"{-gross:g} (all short)"}.get(p.side, f"in [{lo:g}, {hi:g}]")
        msg = (
            f"portfolio.net_exposure={net:g} cannot be met by a {p.side} book of portfolio.gross_exposure={gross:g}: "
            f"use {want}, or leave it unset"
        )
        raise ConfigError(msg)
    if p.max_gross > p.leverage + 1e-12:
        msg = (
            f"portfolio.max_gross={p.max_gross:g} is above portfolio.leverage={p.leverage:g}: the margin of the "
            "positions would exceed the equity; lower max_gross or raise the leverage (data.market=perp)"
        )
        raise ConfigError(msg)
    if not is_sided(cfg):
        return
    if p.max_gross != 1.0 and p.target_vol is None:
        msg = (
            f"portfolio.max_gross={p.max_gross:g} caps the gross a volatility target sets, and this book "
            f"(portfolio.side={p.side}) has none: its gross is portfolio.gross_exposure={gross:g}; set "
            "portfolio.target_vol or leave max_gross at 1"
        )
        raise ConfigError(msg)
    if cfg.signals is not None:
        msg = f"signals=trend_in_trend enters long only and portfolio.side={p.side} sells short: use signals=none"
        raise ConfigError(msg)
