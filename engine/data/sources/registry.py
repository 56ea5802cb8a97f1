"""The one place where the ``data.source`` string of the config picks a backend."""

from __future__ import annotations

from engine.config import CcxtData, FilesData, SyntheticData
from engine.core.errors import ConfigError
from engine.data.sources.base import DataSource


def source_from_config(cfg: SyntheticData | CcxtData | FilesData) -> DataSource:
    """Build the data source that ``cfg`` describes.

    Backends are imported here, on demand: ccxt takes a second to import and only the ccxt
    backend needs it.

    Examples
    --------
    >>> from engine.config import SyntheticData
    >>> source_from_config(SyntheticData(n_symbols=3)).symbols()
    ['BTC/USDT', 'ETH/USDT', 'SOL/USDT']
    """
    source: DataSource
    if isinstance(cfg, SyntheticData):
        from engine.data.sources.synthetic import SyntheticSource

        source = SyntheticSource(cfg.seed, cfg.n_symbols, cfg.start.isoformat(), cfg.end.isoformat(), cfg.quote)
    elif isinstance(cfg, CcxtData):
        from engine.data.sources.ccxt_source import CcxtSource

        source = CcxtSource(cfg)
    elif isinstance(cfg, FilesData):
        from engine.data.sources.files import FilesSource

        source = FilesSource(cfg)
    else:
        msg = f"unknown data source {getattr(cfg, 'source', cfg)!r}: set data to one of synthetic, ccxt, files"
        raise ConfigError(msg)
    source.market = cfg.market
    return source
