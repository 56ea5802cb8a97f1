"""The one place where the ``data.source`` string of the config picks a backend.

Like freqtrade's ``get_datahandlerclass``: everything else asks the backend's class or instance.
"""

from __future__ import annotations

from engine.config import CcxtData, FilesData, SyntheticData
from engine.core.errors import ConfigError
from engine.data.sources.base import DataSource


def source_class(name: str) -> type[DataSource]:
    """Return the backend class that ``data.source=name`` chooses, imported on demand.

    Backends are imported here, on demand: ccxt takes a second to import and only the ccxt
    backend needs it.
    """
    if name == "synthetic":
        from engine.data.sources.synthetic import SyntheticSource

        return SyntheticSource
    if name == "ccxt":
        from engine.data.sources.ccxt_source import CcxtSource

        return CcxtSource
    if name == "files":
        from engine.data.sources.files import FilesSource

        return FilesSource
    msg = f"unknown data source {name!r}: set data to one of synthetic, ccxt, files"
    raise ConfigError(msg)


def source_from_config(cfg: SyntheticData | CcxtData | FilesData) -> DataSource:
    """Build the data source that ``cfg`` describes.

    Examples
    --------
    >>> from engine.config import SyntheticData
    >>> source_from_config(SyntheticData(n_symbols=3)).symbols()
    ['BTC/USDT', 'ETH/USDT', 'SOL/USDT']
    """
    source = source_class(str(getattr(cfg, "source", cfg))).from_config(cfg)
    source.market = cfg.market
    return source


def source_label(cfg: SyntheticData | CcxtData | FilesData) -> str:
    """Where the bars of ``cfg`` come from, in words (not redacted: the caller redacts URLs)."""
    return source_class(cfg.source).label(cfg)
