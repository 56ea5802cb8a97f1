"""The lakehouse under abuse: SIGKILL mid-ingest, two concurrent writers, hostile symbol strings."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.core.errors import EngineError
from engine.core.symbols import symbol_check
from engine.data.ingest import IngestionService
from engine.data.lakehouse import Lakehouse
from engine.data.sources.synthetic import SyntheticSource

ROOT = Path(__file__).resolve().parents[1]
SEED, N_SYMBOLS, FIRST, LAST = 5, 40, "2024-01-01", "2024-03-31"
GEN = SyntheticSource(SEED, N_SYMBOLS, FIRST, LAST)
START, END = GEN.start_ms, GEN.end_ms

# Ingests the whole universe, announcing each fetch and sleeping after each write, so a kill
# lands part-way through the run, often during a write.
KILLABLE_INGEST = """
import sys, time
from engine.data.ingest import IngestionService
from engine.data.lakehouse import Lakehouse
from engine.data.sources.synthetic import SyntheticSource

class Announcing(SyntheticSource):
    def ohlcv_fetch(self, symbol, interval, start_ms, end_ms):
        print("fetch", symbol, flush=True)
        return super().ohlcv_fetch(symbol, interval, start_ms, end_ms)

class Sleepy(Lakehouse):
    def write(self, *args, **kwargs):
        added = super().write(*args, **kwargs)
        time.sleep(0.01)
        return added

root, seed, n, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
src = Announcing(seed, n, first, last)
IngestionService(Sleepy(root), src).fetch_universe(src.symbols(), src.start_ms, src.end_ms, "4h")
print("done", flush=True)
"""


class Counting(SyntheticSource):
    """The generator, counting fetches."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.fetches: list[tuple[str, str, int, int]] = []

    def ohlcv_fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        self.fetches.append((symbol, interval, start_ms, end_ms))
        return super().ohlcv_fetch(symbol, interval, start_ms, end_ms)


def ingest_killed_after(root: Path, fetches: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = [str(root), str(SEED), str(N_SYMBOLS), FIRST, LAST]
    with subprocess.Popen(
        [sys.executable, "-c", KILLABLE_INGEST, *args], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    ) as proc:
        assert proc.stdout is not None
        seen = 0
        for line in proc.stdout:
            seen += line.startswith("fetch")
            if seen >= fetches:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"


@pytest.mark.slow
def test_sigkill_mid_ingest_leaves_readable_files_and_rerun_fetches_only_missing(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    lake = Lakehouse(root)
    for fetches in (9, 23):  # the second run resumes, then is killed again
        ingest_killed_after(root, fetches)
        matched = sorted(root.glob("*/interval=*/symbol=*/*.parquet"))
        assert matched, "nothing was written before the kill"
        assert all(p.name == "data.parquet" for p in matched)  # temp files never match the glob
        for path in matched:
            pl.read_parquet(path)
        pl.scan_parquet(lake.glob("bars", "4h"), hive_partitioning=True).collect()

    missing = [s for s in GEN.symbols() if lake.coverage("bars", "4h", s) != [(START, END)]]
    assert 0 < len(missing) < N_SYMBOLS
    source = Counting(SEED, N_SYMBOLS, FIRST, LAST)
    IngestionService(lake, source).fetch_universe(source.symbols(), START, END, "4h")
    assert sorted(s for s, *_ in source.fetches) == sorted(missing)
    for symbol in GEN.symbols():
        assert_frame_equal(lake.read("bars", "4h", symbol), GEN.ohlcv_fetch(symbol, "4h", START, END))


def concurrent_worker(root: str, symbols: list[str], barrier: Any) -> None:
    """One of two processes ingesting the same symbols into the same lakehouse at once."""
    source = SyntheticSource(SEED, N_SYMBOLS, FIRST, LAST)
    service = IngestionService(Lakehouse(root), source)
    barrier.wait(timeout=60)
    service.fetch_mtf_for_candidates(symbols, ["1h", "4h"], START, END)


@pytest.mark.slow
def test_two_processes_fetching_the_same_symbols_leave_exact_rows(tmp_path: Path) -> None:
    symbols = GEN.symbols()[:8]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=concurrent_worker, args=(str(tmp_path), symbols, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    lake = Lakehouse(tmp_path)
    for interval in ("1h", "4h"):
        for symbol in symbols:
            got = lake.read("mtf", interval, symbol)
            assert got.get_column("timestamp").is_unique().all()
            assert_frame_equal(got, GEN.ohlcv_fetch(symbol, interval, START, END))
            assert lake.coverage("mtf", interval, symbol) == [(START, END)]


@pytest.mark.parametrize(
    "symbol", ["../x", "BTC/USDT'; DROP", "a/b/c", "BTC\\USDT", "../../etc/passwd", "btc/usdt", ""]
)
def test_hostile_symbols_are_rejected(tmp_path: Path, symbol: str) -> None:
    with pytest.raises(EngineError, match="invalid symbol"):
        symbol_check(symbol)
    with pytest.raises(EngineError, match="invalid symbol"):
        Lakehouse(tmp_path).partition("mtf", "4h", symbol)
    assert list(tmp_path.iterdir()) == []
