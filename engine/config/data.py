"""Where the data comes from and which symbols may be ranked: paths, the three sources, the universe."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from engine.config.fields import _each_checked, _Model, path_expand
from engine.config.market import MarketSettings
from engine.core.choices import Implausible
from engine.core.symbols import symbol_check
from engine.core.urls import url_has_credentials, url_shown


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

    # -- object storage (issue 16): refuse credentials in a storage URL before anything is written --
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
    """A ccxt exchange (any of them), fetched over its public REST API."""

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
