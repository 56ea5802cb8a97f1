"""Files source: any interval in (coarser ones built exactly), freqtrade / plain / TradingView
names, defaults from the data, changed files re-imported, and bad input as one line."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import polars as pl
import pytest
from helpers import engine_cli, ingest_task
from polars.testing import assert_frame_equal

from engine.config import FilesData, RunConfig, config_validate
from engine.core.errors import DataError
from engine.data.ingest import IngestionService
from engine.data.lakehouse import namespaces, store_open
from engine.data.sources.files import FilesSource, bars_resample
from engine.data.sources.synthetic import SyntheticSource

GEN = SyntheticSource(11, 4, "2024-01-01", "2024-03-31")
DAY = 86_400_000


def bars(symbol: str, interval: str) -> pl.DataFrame:
    return GEN.ohlcv_fetch(symbol, interval, GEN.start_ms, GEN.end_ms)


def feather(df: pl.DataFrame, path: Path) -> None:
    frame = df.rename({"timestamp": "date"}).to_pandas()
    frame["date"] = frame["date"].dt.as_unit("ns")
    frame.to_feather(path, compression="lz4")


def csv_ms(df: pl.DataFrame, path: Path) -> None:
    df.with_columns(pl.col("timestamp").dt.epoch("ms")).write_csv(path)


def ingest_cfg(lh: Path, folder: Path, **data: object) -> RunConfig:
    raw = {"task": "ingest", "quiet": True, "paths": {"lakehouse_dir": str(lh)}}
    return config_validate({**raw, "data": {"source": "files", "path": str(folder), **data}})


def store_of(lh: Path, folder: Path, **data: object):  # type: ignore[no-untyped-def]
    return store_open(lh, FilesSource(FilesData(path=str(folder), **data)).identity())  # type: ignore[arg-type]


# ---- resampling --------------------------------------------------------------------------------


def test_coarser_bars_are_built_bit_identically_from_1h_files(tmp_path: Path) -> None:
    folder = tmp_path / "h"
    folder.mkdir()
    for s in GEN.symbols():
        feather(bars(s, "1h"), folder / f"{s.replace('/', '_')}-1h.feather")
    src = FilesSource(FilesData(path=str(folder)))
    assert src.intervals() == ("1h",)
    for s in GEN.symbols():
        for tf in ("4h", "1d", "12h"):
            built = src.ohlcv_fetch(s, tf, GEN.start_ms, GEN.end_ms)
            assert built.height == {"4h": 546, "1d": 91, "12h": 182}[tf]
            assert built.equals(bars(s, tf)), (s, tf)  # bit for bit, volume sums included
    # and through the ingest into the lakehouse
    lake = store_of(tmp_path / "lh", folder)
    IngestionService(lake, src).fetch_universe(GEN.symbols(), GEN.start_ms, GEN.end_ms)
    for s in GEN.symbols():
        assert_frame_equal(lake.read("bars", "1d", s), bars(s, "1d"))


def test_an_incomplete_bucket_is_dropped_not_extrapolated() -> None:
    h = bars("ETH/USDT", "1h")
    gap = h.filter(pl.col("timestamp").dt.epoch("ms") != GEN.start_ms + 10 * DAY + 5 * 3_600_000)  # day 10, 05:00
    day = bars_resample(gap, "1h", "1d")
    assert day.height == 90
    assert GEN.start_ms + 10 * DAY not in day.get_column("timestamp").dt.epoch("ms").to_list()
    assert day.equals(bars("ETH/USDT", "1d").filter(pl.col("timestamp").dt.epoch("ms") != GEN.start_ms + 10 * DAY))
    # a last day that ends at 04:00 is not a day bar
    short = h.filter(pl.col("timestamp").dt.epoch("ms") < GEN.start_ms + 30 * DAY + 4 * 3_600_000)
    assert bars_resample(short, "1h", "1d").height == 30
    # the 4h bar of the gap is dropped too, its neighbours kept
    assert bars_resample(gap, "1h", "4h").height == 546 - 1


def test_finer_intervals_and_non_multiples_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    feather(bars("BTC/USDT", "4h"), folder / "BTC_USDT-4h.feather")
    src = FilesSource(FilesData(path=str(folder)))
    assert src.interval_problem("1d") is None and src.interval_problem("8h") is None
    assert "finer than the finest file" in str(src.interval_problem("1h"))
    assert "not a whole multiple" in str(src.interval_problem("6h"))


# ---- names, formats, defaults ------------------------------------------------------------------


def test_every_name_and_format_gives_the_same_bars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mix"
    folder.mkdir()
    b = bars("BTC/USDT", "1d")
    rows = b.with_columns(pl.col("timestamp").dt.epoch("ms")).rows()
    (folder / "BTC_USDT-1d.json").write_text(json.dumps([list(r) for r in rows]))  # freqtrade json
    feather(bars("ETH/USDT", "1d"), folder / "ETH_USDT_USDT-1d-futures.feather")  # freqtrade futures
    csv_ms(bars("SOL/USDT", "1h"), folder / "SOL_USDT.csv")  # plain, interval from the bars
    tv = bars("BNB/USDT", "4h").select(
        (pl.col("timestamp").dt.epoch("ms") // 1000).alias("time"),
        "open",
        "high",
        "low",
        "close",
        pl.col("volume").alias("Volume"),
        (pl.col("volume") * 0 + 1).alias("Volume MA"),
    )
    tv.write_csv(folder / "BINANCE_BNBUSDT, 240.csv")  # TradingView chart-data export
    (folder / "BTC_USDT-trades.feather").write_bytes(b"trades")
    (folder / "ETH_USDT_USDT-8h-funding_rate.feather").write_bytes(b"funding")
    (folder / "notes.txt").write_text("hello")
    (folder / "BTCUSDT-prices.csv").write_text("a,b\n1,2\n")
    src = FilesSource(FilesData(path=str(folder)))
    assert sorted(src.files()) == [("BNB/USDT", "4h"), ("BTC/USDT", "1d"), ("ETH/USDT", "1d"), ("SOL/USDT", "1h")]
    for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):  # 1d files, and 1d built from 1h: bit for bit
        assert src.ohlcv_fetch(s, "1d", GEN.start_ms, GEN.end_ms).equals(bars(s, "1d")), s
    assert src.ohlcv_fetch("BNB/USDT", "4h", GEN.start_ms, GEN.end_ms).equals(bars("BNB/USDT", "4h"))
    # 1d from 4h: the same bars; the volume summed from six 4h sums instead of 24 hours (last bits)
    bnb = src.ohlcv_fetch("BNB/USDT", "1d", GEN.start_ms, GEN.end_ms)
    assert_frame_equal(bnb.drop("volume"), bars("BNB/USDT", "1d").drop("volume"))
    assert_frame_equal(bnb, bars("BNB/USDT", "1d"), check_exact=False, rel_tol=1e-13)

    code = ingest_task(ingest_cfg(tmp_path / "lh", folder))
    out = capsys.readouterr().out
    assert code == 0
    assert "skipped BTC_USDT-trades.feather: freqtrade trades file, not OHLCV bars" in out
    assert "skipped ETH_USDT_USDT-8h-funding_rate.feather: freqtrade funding_rate file" in out
    assert "skipped notes.txt: not a data file" in out
    assert "skipped BTCUSDT-prices.csv: name does not follow" in out
    assert "ingested 364 daily bars for 4 symbols (2024-01-01 00:00 .. 2024-04-01 00:00" in out


def test_quote_and_dates_come_from_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen = SyntheticSource(2, 3, "2023-03-01", "2023-05-09", quote="BTC")
    folder = tmp_path / "btc"
    folder.mkdir()
    for s in gen.symbols():
        feather(gen.ohlcv_fetch(s, "1d", gen.start_ms, gen.end_ms), folder / f"{s.replace('/', '_')}-1d.feather")
    assert ingest_task(ingest_cfg(tmp_path / "lh", folder)) == 0
    assert "ingested 210 daily bars for 3 symbols (2023-03-01 00:00 .. 2023-05-10 00:00" in capsys.readouterr().out
    (ident,) = [i for _, i in namespaces(tmp_path / "lh")]
    assert ident is not None and ident["quote"] == "BTC"

    # several quotes: one line listing them
    csv_ms(bars("BTC/USDT", "1d"), folder / "BTC_USDT-1d.csv")
    with pytest.raises(
        DataError, match=r"^the files in .* are quoted in BTC, USDT: choose one with data.quote=\.\.\.$"
    ):
        ingest_task(ingest_cfg(tmp_path / "lh2", folder))
    assert ingest_task(ingest_cfg(tmp_path / "lh2", folder, quote="USDT")) == 0
    out = capsys.readouterr().out
    assert "skipped ETH_BTC-1d.feather: quoted in BTC, not data.quote=USDT" in out
    with pytest.raises(
        DataError, match=r"no file in .* is quoted in data.quote=EUR: the files are quoted in BTC, USDT"
    ):
        ingest_task(ingest_cfg(tmp_path / "lh3", folder, quote="EUR"))
    assert not (tmp_path / "lh3").exists()


def test_dates_that_remove_every_bar_exit_1_naming_the_filter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    csv_ms(bars("BTC/USDT", "1d"), folder / "BTC_USDT-1d.csv")
    code = ingest_task(ingest_cfg(tmp_path / "lh", folder, start="2021-01-01", end="2021-12-31"))
    err = capsys.readouterr().err
    assert code == 1
    assert (
        "0 bars read: data.start=2021-01-01 .. data.end=2021-12-31 removes every bar "
        "(the files span 2024-01-01 00:00 .. 2024-03-31 00:00)"
    ) in err
    assert not list((tmp_path / "lh").glob("*/bars/interval=1d/symbol=*/data.parquet"))


# ---- a changed file is re-imported ---------------------------------------------------------------


def test_changed_or_extended_file_is_reimported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    path = folder / "BTC_USDT-1d.csv"
    full = bars("BTC/USDT", "1d")
    csv_ms(full.head(40), path)
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    lh = tmp_path / "lh"
    assert ingest_task(ingest_cfg(lh, folder, start="2024-01-01", end="2024-03-31")) == 0
    lake = store_of(lh, folder)
    assert lake.read("bars", "1d", "BTC/USDT").height == 40
    assert ingest_task(ingest_cfg(lh, folder, start="2024-01-01", end="2024-03-31")) == 0
    assert "nothing new (already covered)" in capsys.readouterr().out

    csv_ms(full, path)  # extended to 91 days
    assert ingest_task(ingest_cfg(lh, folder, start="2024-01-01", end="2024-03-31")) == 0
    assert_frame_equal(lake.read("bars", "1d", "BTC/USDT"), full)

    corrected = full.with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(pl.col("close") * 1.01).otherwise(pl.col("close")).alias("close")
    ).with_columns(pl.max_horizontal("high", "close").alias("high"))
    csv_ms(corrected, path)
    assert ingest_task(ingest_cfg(lh, folder, start="2024-01-01", end="2024-03-31")) == 0
    assert lake.read("bars", "1d", "BTC/USDT").get_column("close")[5] == corrected.get_column("close")[5]


def test_file_rewritten_with_size_and_mtime_kept_is_reimported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file corrected in place and ``touch -r``'d (same size, same mtime) is known by its content."""
    folder = tmp_path / "f"
    folder.mkdir()
    path = folder / "BTC_USDT-1d.csv"
    full = bars("BTC/USDT", "1d").with_columns(pl.col("timestamp").dt.epoch("ms"))
    full.write_csv(path, float_precision=4)
    stamp = path.stat()
    lh = tmp_path / "lh"
    cfg = ingest_cfg(lh, folder, start="2024-01-01", end="2024-03-31")
    assert ingest_task(cfg) == 0
    lake = store_of(lh, folder)
    assert lake.read("bars", "1d", "BTC/USDT").get_column("close")[5] == round(full.get_column("close")[5], 4)

    # the close of day 5 down by a thousandth, printed with the same digits: same bytes count
    old = round(full.get_column("close")[5], 4)
    new = round(old * 0.999, 4)
    assert len(f"{old:.4f}") == len(f"{new:.4f}")
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[6].split(",")  # the header, then day 0 .. day 5
    assert fields[4] == f"{old:.4f}"
    lines[6] = ",".join([*fields[:4], f"{new:.4f}", *fields[5:]])
    path.write_text("".join(lines))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # touch -r
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stamp.st_size, stamp.st_mtime_ns)

    with caplog.at_level("WARNING"):
        assert ingest_task(cfg) == 0
    assert "BTC/USDT 1d: its source file changed since the last import; re-importing it" in caplog.text
    stored = lake.read("bars", "1d", "BTC/USDT")
    assert stored.height == 91
    assert stored.get_column("close")[5] == new
    assert lake.origin("bars", "1d", "BTC/USDT") == {
        "file": "BTC_USDT-1d.csv",
        "size": stamp.st_size,
        "blake2b": hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest(),
    }


# ---- bad input -----------------------------------------------------------------------------------


def test_bad_files_are_named_good_ones_imported_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    csv_ms(bars("BTC/USDT", "1d"), folder / "BTC_USDT-1d.csv")
    (folder / "ETH_USDT-1d.csv").write_text("date,open,high,low,close,volume\n")  # header only
    (folder / "SOL_USDT-1d.feather").write_bytes(b"\x00garbage")  # unreadable
    off = bars("BNB/USDT", "1d").with_columns(pl.col("timestamp") + pl.duration(hours=3))  # off the 1d grid
    csv_ms(off, folder / "BNB_USDT-1d.csv")
    code = ingest_task(ingest_cfg(tmp_path / "lh", folder))
    captured = capsys.readouterr()
    assert code == 1
    lines = captured.err.strip().splitlines()
    assert len(lines) == 3
    assert any("ETH_USDT-1d.csv holds no bars (only a header)" in x for x in lines)
    assert any("cannot read" in x and "SOL_USDT-1d.feather" in x for x in lines)
    assert any("BNB/USDT 1d: timestamp not aligned to the 1d grid at 2024-01-01 03:00:00" in x for x in lines)
    lake = store_of(tmp_path / "lh", folder)
    assert lake.symbols("bars", "1d") == ["BTC/USDT"]
    assert "ingested 91 daily bars for 1 symbols" in captured.out


def test_refusals_write_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    csv_ms(bars("BTC/USDT", "1d"), folder / "BTC_USDT-1d.csv")
    feather(bars("BTC/USDT", "1d"), folder / "BTC_USDT-1d.feather")
    lh = tmp_path / "lh"
    with pytest.raises(
        DataError, match=r"two files for BTC/USDT 1d in .*: BTC_USDT-1d.csv and BTC_USDT-1d.feather; keep one"
    ):
        ingest_task(ingest_cfg(lh, folder))
    with pytest.raises(DataError, match=r"data.path .*BTC_USDT-1d.csv is a file: set data.path to the folder"):
        ingest_task(ingest_cfg(lh, folder / "BTC_USDT-1d.csv"))
    (folder / "BTC_USDT-1d.feather").unlink()
    service = IngestionService(store_of(lh, folder), FilesSource(FilesData(path=str(folder))))
    with pytest.raises(DataError, match=r"interval '4h' is finer than the finest file in .* \(1d\)"):
        service.interval_check("4h")
    assert not lh.exists()


# ---- the command line: ~ and $VARS, exit codes ----------------------------------------------------


@pytest.mark.slow
def test_readme_tilde_path_and_env_vars_work(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "ohlcv").mkdir(parents=True)
    csv_ms(bars("BTC/USDT", "1d"), home / "ohlcv" / "BTC_USDT-1d.csv")
    csv_ms(bars("ETH/USDT", "1d"), home / "ohlcv" / "ETH_USDT-1d.csv")
    env = {"HOME": str(home), "LAKE": str(tmp_path / "lake")}
    proc = engine_cli(
        [
            "task=ingest",
            "data=files",
            "data.path=~/ohlcv",
            "paths.lakehouse_dir=$LAKE/x",
            f"hydra.run.dir={tmp_path / 'r'}",
        ],
        tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ingested 182 daily bars for 2 symbols" in proc.stdout
    (ident,) = [i for _, i in namespaces(tmp_path / "lake" / "x")]
    assert ident == {"source": "files", "path": str((home / "ohlcv").resolve()), "quote": "USDT"}

    bad = engine_cli(
        ["task=ingest", "data=files", "data.path=~/nowhere", f"hydra.run.dir={tmp_path / 'r2'}"], tmp_path, env=env
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: data folder {home / 'nowhere'} does not exist: create it or set data.path to the folder of your files"
    ]


@pytest.mark.slow
def test_cli_exit_codes_for_bad_input(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    csv_ms(bars("BTC/USDT", "1d"), folder / "BTC_USDT-1d.csv")
    (folder / "ETH_USDT-1d.csv").write_text("date,open,high,low,close,volume\n")
    args = ["task=ingest", "data=files", f"data.path={folder}", f"paths.lakehouse_dir={tmp_path / 'lh'}"]
    one = engine_cli([*args, f"hydra.run.dir={tmp_path / 'r1'}"], tmp_path, env={})
    assert one.returncode == 1
    assert one.stderr.strip().splitlines() == [
        f"error: not imported: {folder / 'ETH_USDT-1d.csv'} holds no bars (only a header): "
        "export the data again or remove the file"
    ]
    assert "ingested 91 daily bars for 1 symbols" in one.stdout
    csv_ms(bars("BTC/USDT", "1d"), folder / "ETH_BTC-1d.csv")
    two = engine_cli([*args, f"hydra.run.dir={tmp_path / 'r2'}"], tmp_path, env={})
    assert two.returncode == 2
    assert two.stderr.strip().splitlines() == [
        f"error: the files in {folder} are quoted in BTC, USDT: choose one with data.quote=..."
    ]


def test_a_column_twice_in_two_cases_is_named(tmp_path: Path) -> None:
    """``close`` and ``Close`` in one file: one line naming the file and both columns."""
    from engine.core.errors import DataError
    from engine.data.sources.files import ohlcv_read

    path = tmp_path / "BTC_USDT-1d.csv"
    path.write_text("date,open,high,low,close,Close,volume\n2024-01-01,1,2,0.5,1.5,1.5,10\n")
    with pytest.raises(DataError, match=r"has both 'close' and 'Close' columns"):
        ohlcv_read(path)


def test_a_pair_named_file_that_cannot_be_read_is_bad_not_skipped(tmp_path: Path) -> None:
    """``QQQ_USDT.csv`` (a pair's bars by its name, interval read from the bars) holding no bars is
    an unreadable file: named, left out of the plan, so the ingest task exits 1 and a run stops."""
    from engine.compose import config_compose
    from engine.config import config_validate
    from engine.data.sources.files import FilesSource

    good = "date,open,high,low,close,volume\n" + "".join(f"2024-01-{d:02d},1,2,0.5,1.5,10\n" for d in range(1, 11))
    (tmp_path / "BTC_USDT.csv").write_text(good)
    (tmp_path / "QQQ_USDT.csv").write_text("garbage\n")
    cfg = config_validate(config_compose(["data=files", f"data.path={tmp_path}"])[1])
    source = FilesSource(cfg.data)
    assert [p.name for p, _ in source.unreadable()] == ["QQQ_USDT.csv"]
    assert all(p.name != "QQQ_USDT.csv" for p, _ in source.skipped())
    plan = source.universe_plan(cfg.universe.symbols, "1d", cfg.data.start, cfg.data.end)
    assert plan.symbols == ["BTC/USDT"]
    assert len(plan.bad) == 1 and "QQQ_USDT.csv" in plan.bad[0] and "missing column" in plan.bad[0]
