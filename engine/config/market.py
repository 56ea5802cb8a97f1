"""The market of the data (``data.market``): spot bars, or perpetual futures with their funding rates.

:class:`MarketSettings` holds the settings of docs/PERPETUALS.md ("Data"); every data config
(``SyntheticData``, ``CcxtData``, ``FilesData`` in :mod:`engine.config.model`) inherits them, so they
are ``data.market`` and ``data.funding_missing`` whatever the source. ``spot`` (the default) is the
engine before them, byte for byte: no funding is read, generated or stored. This module imports
nothing from :mod:`engine.config.model`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from engine.core.choices import FundingMissing, Market


class MarketSettings(BaseModel):
    """The data's market and what a perp run does without funding data.

    Attributes
    ----------
    market : str
        ``spot`` (the default: bars only) or ``perp`` (perpetual futures: the funding rates of every
        symbol are read with the bars into the data's namespace; docs/PERPETUALS.md).
    funding_missing : str
        ``error`` (the default): a perp run whose store lacks funding for a symbol over a span where
        it has bars stops with one line naming the symbols and the fix (exit 2). ``zero``: funding is
        assumed zero for those symbols, and a warning line names them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    market: Market = "spot"
    funding_missing: FundingMissing = "error"

    def is_perp(self) -> bool:
        """Whether the data is perpetual futures (funding is read, stored and booked)."""
        return self.market == "perp"
