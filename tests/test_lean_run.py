"""Memory and start-up of a default run (issue 23, items 4 and 5): what it no longer loads or holds.

- DuckDB's parameters go in as SQL literals (:func:`engine.data.sql.sql_literal`): DuckDB's binding
  of Python values imports pandas (~40 MB, ~0.4 s). Each literal is held to the value and type
  DuckDB's own binding gives, quotes, newlines and comment markers included.
- A default run, ledger on, never imports pandas (nor vectorbt on the rust engine).
- The survivorship audit's plan copies the run's base bars for the winners both share
  (:func:`engine.data.panel.panel_load` with ``reuse``): bit for bit the panel it read before, with
  DuckDB asked only for the other symbols.
- ``import engine`` sets polars' allocator (one arena, freed pages returned after 0.2 s) unless the
  user set it.
- The report's equal-weight benchmark, rewritten to read each batch streaming and take returns on
  the sorted rows, equals the window-function query it replaced, bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pytest
from helpers import TINY_RANKING

import engine.data.panel as panel_mod
from engine.data.ingest import IngestionService
from engine.data.lakehouse import Lakehouse, store_open
from engine.data.panel import Panel, panel_load
from engine.data.sources.synthetic import SyntheticSource
from engine.data.sql import sql_bind, sql_literal

TRICKY = [
    0,
    -7,
    -(2**31),
    2**31,
    2**63 - 1,
    0.1,
    1 / 3,
    -0.0,
    1e-300,
    float("nan"),
    float("inf"),
    np.float64(2.5e-17),
    np.int64(2**40),
    "it's",
    "line\n-- not a comment\n'); DROP TABLE t; --",
    "back\\slash $x ?",
    "",
    True,
    None,
    ["a'", "b\n"],
    [1, 2**40],
    [],
    datetime(2026, 12, 4, 19, 22, 1, 123456),
]


@pytest.mark.parametrize("value", TRICKY, ids=repr)
def test_a_literal_is_the_value_and_type_duckdb_binds(value: object) -> None:
    con = duckdb.connect()
    got = con.execute(sql_bind("SELECT $x AS v, typeof($x) AS t", {"x": value})).fetchall()[0]
    bound = value.item() if isinstance(value, np.generic) else value
    want = con.execute("SELECT $x AS v, typeof($x) AS t", {"x": bound}).fetchall()[0]
    assert got[1] == want[1]  # the same DuckDB type
    if isinstance(want[0], float) and math.isnan(want[0]):
        assert math.isnan(got[0])
    else:
        assert got[0] == want[0]
        assert repr(got[0]) == repr(want[0])  # -0.0 stays -0.0; a float keeps every bit


def test_parameters_inside_strings_and_comments_are_left_alone() -> None:
    text = "SELECT '$x' AS a, -- $x here is a comment\n $x AS b, 'it''s $x' AS c"
    sql = sql_bind(text, {"x": "it's\nme"})
    assert duckdb.connect().execute(sql).fetchall() == [("$x", "it's\nme", "it's $x")]
    with pytest.raises(KeyError):
        sql_bind("SELECT $y", {"x": 1})
    with pytest.raises(TypeError, match="no SQL literal for a dict"):
        sql_literal({"a": 1})


def test_a_file_name_with_a_quote_is_read(tmp_path: Path) -> None:
    from engine.data.sql import sql_arrow

    part = tmp_path / "it's -- here" / "symbol=AB_USDT"
    part.mkdir(parents=True)
    pl.DataFrame({"timestamp": [1], "open": [1.0], "high": [2.0], "low": [0.5], "close": [1.5]}).with_columns(
        pl.col("timestamp").cast(pl.Datetime("ms", "UTC"))
    ).write_parquet(part / "data.parquet")
    cov = sql_arrow("coverage", {"glob": [str(part / "data.parquet")]}).to_pylist()
    assert cov == [{"symbol": "AB/USDT", "first_ms": 1, "last_ms": 1, "n_bars": 1}]


RUN = [
    "+profile=crypto_rating",
    "data.n_symbols=12",
    "data.start=2023-01-01",
    "data.end=2023-06-30",
    *TINY_RANKING,
    "quiet=true",
]

# python -m engine ARGS, printing at exit the heavy modules the process loaded and polars' allocator setting
WATCH = (
    "import atexit, json, os, runpy, sys\n"
    "atexit.register(lambda: print('LOADED ' + json.dumps([sorted({m.split('.')[0] for m in sys.modules} & "
    "{'pandas', 'vectorbt'}), os.environ.get('_RJEM_MALLOC_CONF')]), file=sys.stderr))\n"
    "sys.argv = ['engine', *sys.argv[1:]]\n"
    "runpy.run_module('engine', run_name='__main__')\n"
)


def _watched(tmp_path: Path, name: str, env: dict[str, str] | None = None) -> tuple[list[str], str | None]:
    args = [*RUN, f"paths.lakehouse_dir={tmp_path / 'lake'}", f"paths.output_dir={tmp_path / name}"]
    proc = subprocess.run(
        [sys.executable, "-c", WATCH, *args],
        cwd=tmp_path,  # the ledger (paths.ledger's default) goes here: its write is part of the run
        # this process's environment without the allocator setting ``import engine`` made here
        env={**{k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}, "CI": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / name / "_COMPLETE").exists()
    line = next(x for x in proc.stderr.splitlines() if x.startswith("LOADED "))
    loaded, conf = json.loads(line.removeprefix("LOADED "))
    return loaded, conf


def test_a_default_run_loads_no_pandas_and_frees_polars_pages(tmp_path: Path) -> None:
    loaded, conf = _watched(tmp_path, "run")
    assert loaded == []  # no pandas, no vectorbt: the ledger written, the report and every artefact too
    assert conf.endswith(",narenas:1,dirty_decay_ms:200,muzzy_decay_ms:0")  # polars appends it: it wins
    assert (tmp_path / "outputs" / "ledger.duckdb").exists()
    _, kept = _watched(tmp_path, "run2", {"_RJEM_MALLOC_CONF": "narenas:2"})
    assert kept.endswith(",narenas:2") and "narenas:1" not in kept  # a user's own setting is kept


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Lakehouse:
    src = SyntheticSource(7, 14, "2023-01-01", "2023-04-30")
    lake = store_open(tmp_path_factory.mktemp("lake"), src.identity())
    IngestionService(lake, src).fetch_universe(src.symbols(), src.start_ms, src.end_ms, "1d")
    return lake


def _bits(p: Panel) -> list[bytes]:
    return [p.ts_ms.tobytes(), *(getattr(p, f).tobytes() for f in panel_mod.FIELDS)]


def test_a_reused_panel_gives_the_panel_read_and_reads_only_the_others(
    store: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    syms = sorted(SyntheticSource(7, 14, "2023-01-01", "2023-04-30").symbols())
    start, end = 1_672_531_200_000 + 5 * 86_400_000, 1_682_812_800_000  # 2023-01-06 .. 2023-04-30
    run = panel_load(store, "bars", "1d", syms[:9], start, end)
    want = panel_load(store, "bars", "1d", syms[4:], start, end)
    asked: list[list[str]] = []
    real = panel_mod.sql_batches

    def spy(name: str, params: dict[str, object], **kw: object) -> object:
        asked.append(list(params["symbols"]))  # type: ignore[call-overload]
        return real(name, params, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(panel_mod, "sql_batches", spy)
    got = panel_load(store, "bars", "1d", syms[4:], start, end, reuse=run)
    assert _bits(got) == _bits(want)
    assert got.symbols == syms[4:]
    assert asked == [syms[9:]]  # DuckDB read only the symbols the run's panel did not hold
    assert np.isfinite(got.close).sum() > 0.9 * got.close.size
    asked.clear()
    other = panel_load(store, "bars", "1d", syms[4:], start + 86_400_000, end, reuse=run)  # another grid
    assert asked == [syms[4:]]  # not reused
    assert _bits(other) == _bits(panel_load(store, "bars", "1d", syms[4:], start + 86_400_000, end))


def _benchmark_by_window_function(plan: object) -> pl.DataFrame:
    """The equal-weight benchmark as the engine computed it before: a window function over each lazy batch."""
    from engine.data.lakehouse import scan_batches

    p: Any = plan
    start, end, step = p.windows[0].start_ms, p.windows[-1].end_ms, p.base_ms
    grid = np.arange(start // step * step, end + step, step, dtype=np.int64)
    total, count = np.zeros(grid.size), np.zeros(grid.size, dtype=np.int64)
    btc = None
    for batch in scan_batches(p.lakehouse, "bars", p.base):
        rets = (
            batch.select("symbol", pl.col("timestamp").dt.epoch("ms").alias("ts"), "close")
            .with_columns((pl.col("close") / pl.col("close").shift(1) - 1.0).over("symbol", order_by="ts").alias("ret"))
            .filter(pl.col("ts").is_between(start, end - 1))
            .select("symbol", "ts", "ret")
            .sort("symbol", "ts")
            .collect()
        )
        if rets.filter(pl.col("symbol") == "BTC/USDT").height:
            btc = rets.filter(pl.col("symbol") == "BTC/USDT")
        ok = rets.filter(pl.col("ret").is_not_null())
        idx = np.searchsorted(grid, ok.get_column("ts").to_numpy())
        np.add.at(total, idx, ok.get_column("ret").to_numpy())
        np.add.at(count, idx, 1)
    held = count > 0
    init = p.cfg.backtest.init_cash
    ew = pl.DataFrame({"ts": grid[held], "equal_weight": init * np.cumprod(1.0 + total[held] / count[held])})
    assert btc is not None
    bh = btc.select("ts", (init * (1.0 + pl.col("ret").fill_null(0.0)).cum_prod()).alias("btc_buy_hold"))
    ew = ew.join(bh, on="ts", how="left")
    return (
        ew.with_columns((pl.col("ts") + p.base_ms).cast(pl.Datetime("ms", "UTC")).alias("timestamp"))
        .drop("ts")
        .select("timestamp", pl.exclude("timestamp"))
        .sort("timestamp")
    )


@pytest.mark.parametrize("size", [3, 256])
def test_the_benchmark_equals_the_window_function_query_bit_for_bit(
    store: Lakehouse, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    from types import SimpleNamespace

    import engine.data.lakehouse as lakehouse_mod
    from engine.run.benchmark import benchmark_frame

    monkeypatch.setattr(lakehouse_mod, "SCAN_BATCH", size)
    day = 86_400_000
    start, end = (
        1_672_531_200_000 + 9 * day,
        1_682_812_800_000 - 4 * day,
    )  # mid-span: the first return needs the bar before
    plan = SimpleNamespace(
        windows=[SimpleNamespace(start_ms=start), SimpleNamespace(end_ms=end)],
        base_ms=day,
        base="1d",
        lakehouse=store,
        cfg=SimpleNamespace(backtest=SimpleNamespace(init_cash=100_000.0)),
    )
    got, want = benchmark_frame(plan), _benchmark_by_window_function(plan)  # type: ignore[arg-type]
    assert got.height == want.height > 90
    assert got.equals(want, null_equal=True)
    for col in ("equal_weight", "btc_buy_hold"):
        assert got.get_column(col).to_numpy().tobytes() == want.get_column(col).to_numpy().tobytes()
