"""The lakehouse on object storage, against a real S3 endpoint (moto's server on 127.0.0.1).

Generation into the bucket, a full backtest with 4h bars equal to the same run on a local
lakehouse, finer bars fetched for the winners only (the server's request log), two writers of one
partition without a lock, a writer killed mid-upload, the secret in no artefact, and bad input.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytest.importorskip("moto.server", reason="needs moto[server] (the test extra)")

from helpers import engine_cli

from engine.core.errors import DataError
from engine.core.units import interval_ms
from engine.data.ingest import IngestionService
from engine.data.lakehouse import Lakehouse, store_open
from engine.data.sources.synthetic import SyntheticSource
from tests.helpers import small_config
from tests.s3_server import KEY_ID, SECRET, Request, S3Server, s3_serving

# every test here starts a moto S3 server on 127.0.0.1: the full set (.ci/run) runs them
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "qe-lake"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_serving(BUCKET) as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3


def _keys(s3: S3Server, prefix: str) -> list[str]:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=s3.endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
    )
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def test_generation_into_the_bucket_and_a_second_fetch_writes_nothing(s3_env: S3Server) -> None:
    src = SyntheticSource(3, 6, "2024-01-01", "2024-02-29")
    lake = store_open(f"s3://{BUCKET}/gen", src.identity())
    service = IngestionService(lake, src)
    service.fetch_universe(src.symbols(), src.start_ms, src.end_ms)
    keys = _keys(s3_env, "gen/")
    ns = lake.root.name
    assert f"gen/{ns}/_identity.json" in keys
    parts = [k for k in keys if k.endswith("/data.parquet")]
    assert parts == sorted(
        f"gen/{ns}/bars/interval=1d/symbol={s.replace('/', '_')}/data.parquet" for s in src.symbols()
    )
    assert not [k for k in keys if not (k.endswith("/data.parquet") or k.endswith("_identity.json"))], keys
    for s in src.symbols():
        assert lake.coverage("bars", "1d", s) == [(src.start_ms, src.end_ms)]
    assert lake.scan("bars", "1d").collect().height == sum(lake.read("bars", "1d", s).height for s in src.symbols())
    mark = s3_env.mark()
    report = service.fetch_universe(src.symbols(), src.start_ms, src.end_ms)
    assert report.fetched == []
    assert not [r for r in s3_env.since(mark) if r.method in ("PUT", "POST", "DELETE")]


def _symbols_requested(requests: list[Request], partitions: str) -> set[str]:
    """The symbols (``BASE_QUOTE``) of the partitions under ``partitions`` that the requests touched."""
    return {
        part.removeprefix("symbol=")
        for r in requests
        if partitions in r.path
        for part in r.path.split("/")
        if part.startswith("symbol=")
    }


def test_backtest_with_4h_bars_on_s3_equals_local_and_fetches_finer_bars_for_winners_only(
    s3_env: S3Server, tmp_path: Path
) -> None:
    from engine.tasks import run_backtest

    local = run_backtest(small_config(tmp_path / "lh", tmp_path / "local", "backtest.timeframes=[4h]"))
    mark = s3_env.mark()
    remote = run_backtest(small_config(f"s3://{BUCKET}/run", tmp_path / "s3", "backtest.timeframes=[4h]"))  # type: ignore[arg-type]
    assert remote.metrics == local.metrics
    for name in ("equity", "orders", "trades", "winners"):
        assert pl.read_parquet(tmp_path / "s3" / f"{name}.parquet").equals(
            pl.read_parquet(tmp_path / "local" / f"{name}.parquet")
        ), name
    winners = pl.read_parquet(tmp_path / "s3" / "winners.parquet").filter(pl.col("selected"))
    won = {s.replace("/", "_") for s in winners.get_column("symbol").unique().to_list()}
    requests = s3_env.since(mark)
    touched_mtf = _symbols_requested(requests, "/mtf/interval=4h/")
    touched_bars = _symbols_requested(requests, "/bars/interval=1d/")
    assert len(touched_bars) == 30  # the daily universe
    assert touched_mtf and touched_mtf <= won, touched_mtf - won
    assert len(touched_mtf) < len(touched_bars)
    # the same artefacts name the data by relative path, whatever the storage
    m_local = json.loads((tmp_path / "local" / "manifest.json").read_text())
    m_s3 = json.loads((tmp_path / "s3" / "manifest.json").read_text())
    assert m_s3["data"] == m_local["data"]


WRITER = """
import os, sys
from engine.data.lakehouse import Lakehouse
from engine.data.sources.synthetic import SyntheticSource
url, seed, which, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
src = SyntheticSource(seed, 4, "2024-01-01", "2024-03-31")
lake = Lakehouse(url)
step = (src.end_ms - src.start_ms) // (2 * rounds)
step -= step % 14_400_000
for i in range(rounds):
    a = src.start_ms + (2 * i + which) * step
    b = a + step
    lake.write("mtf", "4h", "BTC/USDT", src.ohlcv_fetch("BTC/USDT", "4h", a, b), [(a, b)])
print("done", flush=True)
"""


def test_two_writers_of_one_partition_leave_it_consistent(s3_env: S3Server, tmp_path: Path) -> None:
    """Two processes write interleaved ranges of one partition at once, with no lock: the object
    is always bars and coverage of one commit (covered means present), and whatever a race lost
    from the coverage is fetched again, exactly that, by the next request."""
    url = f"s3://{BUCKET}/two/ns"
    rounds = 6
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, "5", str(which), str(rounds)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for which in (0, 1)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0 and "done" in out
    lake = Lakehouse(url)
    src = SyntheticSource(5, 4, "2024-01-01", "2024-03-31")
    bars = lake.read("mtf", "4h", "BTC/USDT")
    ts = set(bars.get_column("timestamp").dt.epoch("ms").to_list())
    step4h = interval_ms("4h")
    covered = lake.coverage("mtf", "4h", "BTC/USDT")
    # consistent: every covered slot holds its bar (the generator has no gaps)
    for a, b in covered:
        assert all(t in ts for t in range(a, b, step4h)), (a, b)
    # a range lost to a race (a writer whose PUT replaced the other's after its read-back) is only
    # missing from the coverage: the next fetch asks for exactly that range and fills it
    step = (src.end_ms - src.start_ms) // (2 * rounds)
    step -= step % step4h
    full = (src.start_ms, src.start_ms + 2 * rounds * step)
    assert all(full[0] <= a and b <= full[1] for a, b in covered)
    report = IngestionService(lake, src).fetch_mtf_for_candidates(["BTC/USDT"], ["4h"], *full)
    assert sum(b - a for _, _, a, b in report.fetched) == (full[1] - full[0]) - sum(b - a for a, b in covered)
    assert lake.coverage("mtf", "4h", "BTC/USDT") == [full]
    bars = lake.read("mtf", "4h", "BTC/USDT")
    assert bars.get_column("timestamp").is_sorted() and bars.get_column("timestamp").n_unique() == bars.height
    assert bars.equals(src.ohlcv_fetch("BTC/USDT", "4h", *full))


KILLED = """
import os, sys
from engine.data.lakehouse import parquet_bytes, Lakehouse
from engine.data.sources.synthetic import SyntheticSource

url = sys.argv[1]
lake = Lakehouse(url)
src = SyntheticSource(5, 4, "2024-01-01", "2024-03-31")
payload = parquet_bytes(src.ohlcv_fetch("BTC/USDT", "4h", src.start_ms, src.end_ms))
path = lake.partition("mtf", "4h", "BTC/USDT") / "data.parquet"
stream = lake.storage.fs.open_output_stream(str(path))
stream.write(payload[: len(payload) // 2])
stream.flush()
print("half", flush=True)
os._exit(9)  # killed mid-upload: never closed
"""


def test_a_writer_killed_mid_upload_leaves_nothing_a_reader_takes_for_complete(s3_env: S3Server) -> None:
    url = f"s3://{BUCKET}/killed/ns"
    src = SyntheticSource(5, 4, "2024-01-01", "2024-03-31")
    lake = Lakehouse(url)
    first = (src.start_ms, src.start_ms + 10 * interval_ms("1d"))
    lake.write("mtf", "4h", "BTC/USDT", src.ohlcv_fetch("BTC/USDT", "4h", *first), [first])
    before = lake.read("mtf", "4h", "BTC/USDT")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, url],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "half" in proc.stdout and proc.returncode == 9, proc.stderr
    assert lake.read("mtf", "4h", "BTC/USDT").equals(before)
    assert lake.coverage("mtf", "4h", "BTC/USDT") == [first]
    # an untouched partition killed mid-upload does not exist at all
    assert _keys(s3_env, "killed/ns/") == ["killed/ns/mtf/interval=4h/symbol=BTC_USDT/data.parquet"]


def _engine(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return engine_cli(args, cwd, timeout, env={"PYTHONPATH": str(ROOT), **env})


TINY = ["data.n_symbols=12", "data.end=2021-09-30", "ranking.top_n=3", "quiet=true"]


def test_no_artefact_holds_the_key_or_secret(s3_env: S3Server, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _engine(
        [*TINY, f"paths.lakehouse_dir=s3://{BUCKET}/secret", "backtest.timeframes=[4h]", f"hydra.run.dir={run}"],
        tmp_path,
        s3_env.env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {"config.yaml", "manifest.json", "audit.jsonl", "metrics.json"} <= {p.name for p in files}
    for p in files:
        blob = p.read_bytes()
        assert SECRET.encode() not in blob, p
        assert KEY_ID.encode() not in blob, p
    assert SECRET not in proc.stdout + proc.stderr
    assert KEY_ID not in proc.stdout + proc.stderr
    assert f"s3://{BUCKET}/secret" in (run / "config.yaml").read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("case", ["unreachable", "no_bucket", "wrong_credentials", "empty_prefix"])
def test_bad_object_storage_input_is_one_line_and_writes_nothing(s3_env: S3Server, tmp_path: Path, case: str) -> None:
    env = s3_env.env()
    lakehouse = f"s3://{BUCKET}/bad-{case}"
    extra: list[str] = []
    expect = ""
    if case == "unreachable":
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{_free_port()}"
        expect = "cannot be reached"
    elif case == "no_bucket":
        lakehouse = "s3://qe-no-such-bucket/lh"
        expect = "does not exist"
    elif case == "wrong_credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "wrong-" + SECRET
        expect = "refused"
    else:  # a prefix with no data, for a source that must be ingested first
        extra = ["data=ccxt", "data.exchange=binance", "data.start=2024-01-01", "data.end=2024-02-01", "quiet=true"]
        expect = "no daily bars"
    from moto import settings as moto_settings

    checks = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
    if case == "wrong_credentials":  # moto checks signatures against its IAM keys (none: every key is unknown)
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    t0 = time.monotonic()
    try:
        proc = _engine(
            [*(extra or TINY), f"paths.lakehouse_dir={lakehouse}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, env
        )
    finally:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = checks
    took = time.monotonic() - t0
    assert proc.returncode in (1, 2), proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and expect in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"s3://{lakehouse.split('/')[2]}/" in lines[0]  # names the location by its URL
    for secret in (SECRET, KEY_ID):
        assert secret not in proc.stderr + proc.stdout
    assert took < 90
    if case != "no_bucket":
        assert _keys(s3_env, f"bad-{case}/") == []
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_credentials_in_the_url_are_refused_without_echoing_them(s3_env: S3Server) -> None:
    with pytest.raises(DataError, match="carries credentials") as info:
        store_open(f"s3://{KEY_ID}:{SECRET}@{BUCKET}/lh", {"source": "x"})
    assert SECRET not in str(info.value) and KEY_ID not in str(info.value)


def test_settings_come_from_a_profile_file(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "credentials").write_text(
        f"[research]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"
    )
    (tmp_path / "config").write_text(f"[profile research]\nregion = us-east-1\nendpoint_url = {s3_env.endpoint}\n")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "research")
    src = SyntheticSource(3, 3, "2024-01-01", "2024-01-31")
    lake = store_open(f"s3://{BUCKET}/profile", src.identity())
    IngestionService(lake, src).fetch_universe(src.symbols(), src.start_ms, src.end_ms)
    assert lake.scan("bars", "1d").collect().height > 0


def test_credentials_in_the_url_stop_the_command_line_before_anything_is_written(
    s3_env: S3Server, tmp_path: Path
) -> None:
    proc = _engine(
        [*TINY, f"paths.lakehouse_dir=s3://{KEY_ID}:{SECRET}@{BUCKET}/lh", f"hydra.run.dir={tmp_path / 'run'}"],
        tmp_path,
        s3_env.env(),
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "carries credentials in the URL" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout and KEY_ID not in proc.stderr + proc.stdout
    assert not (tmp_path / "run").exists()
    assert _keys(s3_env, "lh/") == []


def _httpfs_loads() -> bool:
    import duckdb

    from engine.data.storage import extension_load

    try:
        extension_load(duckdb.connect(), "httpfs")
    except duckdb.Error:
        return False
    return True


def _bits(panel: object) -> dict[str, bytes]:
    from engine.data.panel import FIELDS

    return {f: getattr(panel, f).tobytes() for f in ("ts_ms", *FIELDS)}


@pytest.mark.parametrize("reader", ["httpfs", "pyarrow"])
def test_winner_slice_reads_the_bucket_through_duckdb(
    s3_env: S3Server, reader: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """DuckDB httpfs (the pip package built for this DuckDB, loaded by path) with the secret of the
    AWS settings where the extension loads; else the same query on the files read by pyarrow. The
    server's log tells which client read the winners' files; both readers give the local
    lakehouse's panel bit for bit."""
    import duckdb

    import engine.data.sql as esql
    from engine.data.panel import panel_load
    from engine.data.storage import S3Storage

    if reader == "httpfs" and not _httpfs_loads():
        if os.environ.get("ENGINE_REQUIRE_HTTPFS"):
            pytest.fail(f"ENGINE_REQUIRE_HTTPFS is set and httpfs does not load into DuckDB {duckdb.__version__}")
        pytest.skip(
            f"no httpfs extension for DuckDB {duckdb.__version__} (pip package duckdb-ext-httpfs of that version)"
        )

    def no_httpfs(self: S3Storage, con: object) -> None:
        raise duckdb.IOException("httpfs not installed (forced by the test)")

    src = SyntheticSource(9, 5, "2024-01-01", "2024-02-29")
    lake = Lakehouse(f"s3://{BUCKET}/slice-{reader}/ns")
    local = Lakehouse(tmp_path / "ns")
    for s in src.symbols():
        bars = src.ohlcv_fetch(s, "4h", src.start_ms, src.end_ms)
        lake.write("mtf", "4h", s, bars, [(src.start_ms, src.end_ms)])
        local.write("mtf", "4h", s, bars, [(src.start_ms, src.end_ms)])
    winners = src.symbols()[1:3]
    start, end = src.start_ms + 3 * interval_ms("1d"), src.end_ms - 5 * interval_ms("1d")
    want = panel_load(local, "mtf", "4h", winners, start, end)
    if reader == "pyarrow":
        monkeypatch.setattr(S3Storage, "duckdb_prepare", no_httpfs)
    mark = s3_env.mark()
    panel = panel_load(lake, "mtf", "4h", winners, start, end)
    requests = s3_env.since(mark)
    touched = {p for r in requests for p in r.path.split("/") if p.startswith("symbol=")}
    assert touched == {f"symbol={s.replace('/', '_')}" for s in winners}
    # the winners' files were read by the client of this case: DuckDB's ranged GETs, or pyarrow's AWS SDK
    agents = {r.agent.split("/")[0] for r in requests if r.method == "GET" and r.path.endswith("/data.parquet")}
    assert agents == ({"duckdb"} if reader == "httpfs" else {"aws-sdk-cpp"}), agents
    assert panel.symbols == want.symbols == winners
    assert _bits(panel) == _bits(want)
    assert not all(np.isnan(want.close).ravel())
    if reader == "httpfs":  # the same slice through the fallback: the same bits
        with monkeypatch.context() as m:
            m.setattr(S3Storage, "duckdb_prepare", no_httpfs)
            assert _bits(panel_load(lake, "mtf", "4h", winners, start, end)) == _bits(want)
    cov = esql.sql_arrow("coverage", {"glob": lake.glob("mtf", "4h")}, storage=lake.storage)
    assert cov.equals(esql.sql_arrow("coverage", {"glob": local.glob("mtf", "4h")}))
    assert cov.column("symbol").to_pylist() == sorted(src.symbols())
