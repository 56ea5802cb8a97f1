"""Funding of perpetual futures in an S3 lakehouse (moto's server on 127.0.0.1): the same frame as on a local folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="needs moto[server] (the test extra)")

from polars.testing import assert_frame_equal

from engine.config import PathsConfig, RunConfig, SyntheticData
from engine.data.funding import FundingStore, funding_ingest, funding_read
from engine.data.ingest import IngestionService
from engine.data.lakehouse import store_open
from engine.data.sources.registry import source_from_config
from tests.s3_server import S3Server, s3_serving

pytestmark = pytest.mark.slow  # a moto S3 server
BUCKET = "qe-funding"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_serving(BUCKET) as server:
        yield server


def test_funding_in_a_bucket_reads_as_on_a_local_folder(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    data = SyntheticData(market="perp", n_symbols=4, start="2024-01-01", end="2024-02-29")
    frames = []
    for where in (str(tmp_path / "lake"), f"s3://{BUCKET}/lake"):
        cfg = RunConfig(data=data, paths=PathsConfig(lakehouse_dir=where))
        source = source_from_config(cfg.data)
        lake = store_open(where, source.identity())
        start, end = int(getattr(source, "start_ms")), int(getattr(source, "end_ms"))  # noqa: B009
        IngestionService(lake, source).fetch_universe(source.symbols(), start, end)
        assert funding_ingest(lake, source, source.symbols(), start, end, "1d") == []
        assert FundingStore(lake).symbols() == sorted(source.symbols())
        assert funding_ingest(lake, source, source.symbols(), start, end, "1d") == []  # covered: nothing read again
        frames.append(funding_read(cfg, source.symbols(), start, end))
    assert frames[0].height == 4 * 60 * 3
    assert_frame_equal(frames[1], frames[0], check_exact=True)
