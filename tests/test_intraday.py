"""Intraday cadence: ``backtest.interval`` is the base bar of ranking and rebalancing.

Durations for the hold, step and factor windows (day counts as aliases), windows on an hourly
calendar, point-in-time ranking at an intraday base (rank at a bar's close, trade from the next
bar's open), annualisation by the base bar, the ``crypto_rating_intraday`` profile on a folder of
5m freqtrade files exactly as the README gives it, and equity that stops at the last real bar.
"""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import engine_cli, feather_write
from test_freqtrade_e2e import DAY, GEN, HOUR, PAIRS, RANKING, five_minute

from engine.compose import config_compose
from engine.config import PortfolioConfig, RankingConfig, UniverseConfig, config_validate
from engine.core.errors import ConfigError
from engine.run.metrics import equity_metrics
from engine.strategy.ranking import ranks_compute
from engine.strategy.windows import windows_build

FIVE_MIN = 300_000


# ---- configuration ----------------------------------------------------------------------------


def test_day_count_aliases_equal_their_durations() -> None:
    a, _ = config_compose(["backtest.hold_days=3", "ranking.momentum_days=20", "portfolio.vol_days=10"])
    b, _ = config_compose(["backtest.hold=3d", "ranking.momentum_window=20d", "portfolio.vol_window=10d"])
    assert a.backtest.hold_ms == b.backtest.hold_ms == 3 * DAY
    assert a.backtest.step_ms == b.backtest.step_ms == 3 * DAY  # step null: the hold
    assert a.ranking.bars("1d") == b.ranking.bars("1d")
    assert a.ranking.bars("1d").momentum == 20 and a.ranking.bars("1h").momentum == 480
    assert a.portfolio.vol_bars("4h") == b.portfolio.vol_bars("4h") == 60


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["backtest.interval=7h"], ["backtest.interval", "'7h' does not divide a day"]),
        (["backtest.interval=1h", "backtest.hold=90m"], ["backtest.hold='90m'", "whole number", "'1h' or '2h'"]),
        (["backtest.interval=4h", "backtest.hold=6h"], ["backtest.hold='6h'", "backtest.interval=4h"]),
        (["backtest.hold=1d", "backtest.step=2d"], ["backtest.step='2d' differs from backtest.hold='1d'", "step=null"]),
        (["backtest.hold_days=7", "backtest.step_days=3"], ["backtest.step_days=3 differs from backtest.hold_days=7"]),
        (["backtest.interval=1h", "ranking.momentum_window=30m"], ["ranking.momentum_window='30m'"]),
        (["backtest.interval=4h", "backtest.timeframes=[1d]"], ["'1d' is coarser than the base bars"]),
        (["ranking.min_history_days=20"], ["ranking.min_history_days=20", ">= 31"]),
        (["backtest.hold=7days"], ["backtest.hold", "m, h, d or w"]),
        (["ranking.momentum_window=1000d"], ["ranking.momentum_window='1000d'", "longer than 730 days"]),
        (["portfolio.vol_window=731d"], ["portfolio.vol_window='731d'", "longer than 730 days"]),
        (
            ["+profile=crypto_rating_mtf", "backtest.interval=4h", "backtest.timeframes=[1h]"],
            ["signals=trend_in_trend", "backtest.interval=1d"],
        ),
    ],
)
def test_bad_cadence_is_one_line_naming_the_key(overrides: list[str], needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        config_compose(overrides)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_bad_cadence_from_the_command_line_exits_2(tmp_path: Path) -> None:
    proc = engine_cli(["+profile=crypto_rating_intraday", "backtest.hold=90m"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "backtest.hold='90m' is not a whole number of backtest.interval=1h bars" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "outputs").exists()


# ---- windows ----------------------------------------------------------------------------------


def test_hourly_windows_rank_at_23h_and_trade_from_midnight() -> None:
    cfg, _ = config_compose(["+profile=crypto_rating_intraday"])
    first = GEN.start_ms + 5 * HOUR  # the data starts at 05:00
    end = GEN.start_ms + 10 * DAY
    ws = windows_build(first, end, cfg.backtest, cfg.ranking)
    # 4 days of hourly history (96 bars) are complete at the 04:00 bar of day 4 (05:00 + 95 h); the
    # first window then waits for the next midnight: day 5 00:00, ranked at day 4 23:00
    assert ws[0].start_ms == GEN.start_ms + 5 * DAY
    assert [w.rank_ms for w in ws] == [GEN.start_ms + (5 + k) * DAY - HOUR for k in range(5)]
    assert all(w.end_ms - w.start_ms == DAY for w in ws)
    assert ws[0].as_dict()["rank_time"] == "2024-01-05T23:00:00+00:00"
    assert ws[0].as_dict()["rank_date"] == "2024-01-05"

    half, _ = config_compose(["+profile=crypto_rating_intraday", "backtest.hold=12h"])
    ws = windows_build(first, end, half.backtest, half.ranking)
    # 12h steps aligned to 00:00 / 12:00: the 04:00 bar closes at 05:00, so the first start is 12:00
    assert ws[0].start_ms == GEN.start_ms + 4 * DAY + 12 * HOUR
    assert np.all(np.diff([w.start_ms for w in ws]) == 12 * HOUR)
    assert ws[-1].end_ms == end


def test_daily_windows_are_unchanged_by_the_durations() -> None:
    a, _ = config_compose(["backtest.hold_days=7"])
    b, _ = config_compose(["backtest.hold=1w", "backtest.step=7d"])
    wa = windows_build(GEN.start_ms, GEN.start_ms + 200 * DAY, a.backtest, a.ranking)
    wb = windows_build(GEN.start_ms, GEN.start_ms + 200 * DAY, b.backtest, b.ranking)
    assert wa == wb
    assert wa[0].start_ms == GEN.start_ms + 60 * DAY  # 60 days of history, ranked on day 60's close
    assert wa[0].rank_date == date(2024, 2, 29)


# ---- ranking at an hourly base ----------------------------------------------------------------

RANK_1H = RankingConfig(
    top_n=3,
    momentum_window="3d",
    vol_window="2d",
    liquidity_window="1d",
    min_history="4d",
    min_quote_volume=0.0,
)


@pytest.fixture(scope="module")
def hourly() -> pl.DataFrame:
    return pl.concat(
        [
            GEN.ohlcv_fetch(s, "1h", GEN.start_ms, GEN.start_ms + 20 * DAY).with_columns(pl.lit(s).alias("symbol"))
            for s in GEN.symbols()
        ]
    )


def _ranks_1h(bars: pl.DataFrame, rank_ms: list[int]) -> pl.DataFrame:
    return ranks_compute(bars.lazy(), rank_ms, RANK_1H, PortfolioConfig(vol_window="2d"), UniverseConfig(), "1h")


def test_hourly_factors_are_computed_on_hourly_bars(hourly: pl.DataFrame) -> None:
    t = GEN.start_ms + 10 * DAY + 13 * HOUR
    ranks = _ranks_1h(hourly, [t])
    assert ranks.height == len(GEN.symbols())
    assert ranks.get_column("rank_date").unique().to_list() == [date(2024, 1, 11)]
    for row in ranks.iter_rows(named=True):
        s = hourly.filter(pl.col("symbol") == row["symbol"]).sort("timestamp")
        ms = s.get_column("timestamp").dt.epoch("ms").to_numpy()
        close, volume = s.get_column("close").to_numpy(), s.get_column("volume").to_numpy()
        i = int(np.flatnonzero(ms == t)[0])
        assert row["momentum"] == pytest.approx(close[i] / close[i - 72] - 1.0, rel=1e-12)
        logret = np.log(close[i - 47 : i + 1] / close[i - 48 : i])
        assert row["vol"] == pytest.approx(np.std(logret, ddof=1), rel=1e-9)
        # liquidity: the median hourly quote volume of the last 24 bars, per day (x 24)
        assert row["dollar_volume"] == pytest.approx(np.median(close[i - 23 : i + 1] * volume[i - 23 : i + 1]) * 24)


def test_hourly_ranking_never_sees_a_later_bar(hourly: pl.DataFrame) -> None:
    rank_ms = [GEN.start_ms + 9 * DAY + h * HOUR for h in range(0, 48, 5)]
    cut = rank_ms[4]
    rng = np.random.default_rng(3)
    scale = pl.Series(rng.uniform(0.3, 3.0, hourly.height))
    later = pl.col("timestamp").dt.epoch("ms") > cut
    perturbed = hourly.with_columns(
        [
            pl.when(later).then(pl.col(c) * scale).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close", "volume")
        ]
    )
    before, after = _ranks_1h(hourly, rank_ms), _ranks_1h(perturbed, rank_ms)
    keep = pl.col("rank_ms") <= cut
    cols = ("rank_ms", "symbol", "rank")
    assert before.filter(keep).select(cols).equals(after.filter(keep).select(cols))
    np.testing.assert_allclose(
        before.filter(keep).get_column("score"), after.filter(keep).get_column("score"), rtol=0, atol=1e-12
    )
    # the perturbation reaches the later ranking bars, so the comparison above can fail
    assert not before.filter(~keep).select(cols).equals(after.filter(~keep).select(cols))
    # and the ranking bar's own close counts (it is known at its close)
    top = before.filter(pl.col("rank_ms") == cut).sort("rank").get_column("symbol")[0]
    bumped = hourly.with_columns(
        pl.when((pl.col("timestamp").dt.epoch("ms") == cut) & (pl.col("symbol") == top))
        .then(pl.col("close") * 0.5)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    assert _ranks_1h(bumped, [cut]).sort("rank").get_column("symbol")[0] != top


# ---- annualisation ----------------------------------------------------------------------------


def test_annualisation_follows_the_periods_per_year() -> None:
    rng = np.random.default_rng(0)
    equity = 100.0 * np.cumprod(1.0 + rng.normal(0.0002, 0.004, 24 * 30))
    rets = np.diff(np.concatenate(([100.0], equity))) / np.concatenate(([100.0], equity[:-1]))
    hourly = equity_metrics(equity, 100.0, 30.0, 8760.0)
    assert hourly["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * math.sqrt(8760.0), rel=1e-12)
    assert hourly["annual_volatility"] == pytest.approx(rets.std(ddof=1) * math.sqrt(8760.0), rel=1e-12)
    assert hourly["cagr"] == pytest.approx((equity[-1] / 100.0) ** (365.0 / 30.0) - 1.0, rel=1e-12)
    daily = equity_metrics(equity, 100.0, 30.0)
    assert daily["sharpe"] == pytest.approx(hourly["sharpe"] / math.sqrt(24.0), rel=1e-12)
    assert daily["cagr"] == hourly["cagr"]  # calendar days, whatever the bar


# ---- the profile on a folder of 5m freqtrade files, as the README gives it --------------------


@pytest.fixture(scope="module")
def five_min_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ft5m") / "binance"
    root.mkdir()
    for pair in PAIRS:  # with a gap in SOL/BTC and XRP/BTC ending early (04:50 on day 31)
        feather_write(five_minute(pair), root / f"{pair.replace('/', '_')}-5m.feather")
    (root / "ETH_BTC-trades.feather").write_bytes(b"freqtrade trades, not candles")
    return root


def _hourly_reference(five: pl.DataFrame) -> pl.DataFrame:
    """Hours with all 12 five-minute bars, aggregated here with numpy (not the engine's polars path)."""
    ms = five.get_column("timestamp").dt.epoch("ms").to_numpy()
    hour = ms // HOUR * HOUR
    keys, first, counts = np.unique(hour, return_index=True, return_counts=True)
    full = counts == 12
    rows = [np.arange(a, a + 12) for a in first[full]]
    take = {c: five.get_column(c).to_numpy()[np.array(rows)] for c in ("open", "high", "low", "close", "volume")}
    return pl.DataFrame(
        {
            "timestamp": keys[full],
            "open": take["open"][:, 0],
            "high": take["high"].max(axis=1),
            "low": take["low"].min(axis=1),
            "close": take["close"][:, -1],
            "volume": take["volume"].sum(axis=1),
        }
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC")))


@pytest.mark.slow
def test_intraday_profile_on_5m_freqtrade_files(five_min_folder: Path, tmp_path: Path) -> None:
    args = ["+profile=crypto_rating_intraday", "data=files", f"data.path={five_min_folder}", "backtest.timeframes=[5m]"]
    proc = engine_cli([*args, "hydra.run.dir=run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "run"
    assert (run / "_COMPLETE").is_file() and (run / "report.html").stat().st_size > 10_000
    said = proc.stdout + proc.stderr
    assert "skipped ETH_BTC-trades.feather: freqtrade trades file, not OHLCV bars" in said
    assert "SOL/BTC 1h: 2 missing bar(s)" in said  # the 2-hour gap, named
    m = json.loads((run / "metrics.json").read_text())
    assert (m["base_interval"], m["interval"], m["periods_per_year"]) == ("1h", "5m", 8760.0)
    # 45 days of files, 4 days of hourly history: daily windows from day 5 to the files' end
    assert m["n_windows"] == 41 and m["empty_windows"] == 0
    assert (m["start"], m["end"]) == ("2024-01-05T00:00:00+00:00", "2024-02-15T00:00:00+00:00")
    assert m["n_trades"] > 0 and math.isfinite(m["total_return"])

    # ranked at 23:00 each day, five winners
    winners = pl.read_parquet(run / "winners.parquet")
    chosen = winners.filter(pl.col("selected"))
    rank_ms = chosen.get_column("rank_time").dt.epoch("ms").unique().sort().to_numpy()
    assert np.array_equal(rank_ms, GEN.start_ms + np.arange(3, 44) * DAY + 23 * HOUR)
    assert chosen.group_by("window").len().get_column("len").max() == 5

    # every rebalance order at a window's first bar (00:00); stops at any 5m bar inside
    orders = pl.read_parquet(run / "orders.parquet")
    ts = orders.get_column("timestamp").dt.epoch("ms").to_numpy()
    rebal = orders.get_column("reason").to_numpy() == "rebalance"
    assert rebal.any() and np.all(ts[rebal] % DAY == 0)
    assert np.all(ts % FIVE_MIN == 0) and np.any(ts[~rebal] % HOUR != 0)

    # the equity is marked on 5m closes; the Sharpe ratio is annualised over the hourly closes
    eq = pl.read_parquet(run / "equity.parquet")
    ems = eq.get_column("timestamp").dt.epoch("ms").to_numpy()
    hourly_marks = eq.get_column("equity").to_numpy()[ems % HOUR == 0]
    assert m["n_returns"] == hourly_marks.size == 41 * 24
    values = np.concatenate(([100_000.0], hourly_marks))
    rets = values[1:] / values[:-1] - 1.0
    assert m["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * math.sqrt(8760.0), rel=1e-9)

    # the universe's hourly bars are the files' 5m bars resampled (complete hours only), and the
    # 5m bars were read for the winners only
    from engine.data.lakehouse import store_open
    from engine.data.sources.registry import source_from_config

    cfg = config_validate(
        {
            "data": {"source": "files", "path": str(five_min_folder)},
            "paths": {"lakehouse_dir": str(tmp_path / "lakehouse")},
        }
    )
    store = store_open(tmp_path / "lakehouse", source_from_config(cfg.data).identity())
    for pair in PAIRS:
        stored = store.read("bars", "1h", pair)
        ref = _hourly_reference(five_minute(pair))
        assert stored.select("timestamp", "open", "high", "low", "close").equals(
            ref.select("timestamp", "open", "high", "low", "close")
        )
        np.testing.assert_allclose(stored.get_column("volume"), ref.get_column("volume"), rtol=1e-12)
    assert store.symbols("bars", "1d") == []  # an hourly base needs no daily bars
    # the pair that ends early is ranked up to its last complete hour (03:00 on day 31), then not
    xrp = winners.filter(pl.col("symbol") == "XRP/BTC").get_column("rank_time").dt.epoch("ms")
    assert xrp.max() == GEN.start_ms + 29 * DAY + 23 * HOUR  # its last full day's 23:00 bar
    held = set(winners.filter(pl.col("weight").is_not_null()).get_column("symbol").to_list())
    assert set(store.symbols("mtf", "5m")) == held


# ---- point in time, end to end: a later bar never changes an earlier decision -----------------


def _hourly_folder(root: Path, cut_ms: int | None, seed: int = 5) -> Path:
    """1h files of the generator's pairs; bars opening at or after ``cut_ms`` rescaled at random."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for pair in PAIRS:
        h = GEN.ohlcv_fetch(pair.replace("/BTC", "/USDT"), "1h", GEN.start_ms, GEN.start_ms + 25 * DAY)
        if cut_ms is not None:
            later = (h.get_column("timestamp").dt.epoch("ms") >= cut_ms).to_numpy()
            scale = np.where(later, rng.uniform(0.5, 2.0, h.height), 1.0)
            h = h.with_columns([pl.col(c) * scale for c in ("open", "high", "low", "close", "volume")])
        feather_write(h, root / f"{pair.replace('/', '_')}-1h.feather")
    return root


@pytest.mark.slow
def test_a_later_bar_never_changes_an_earlier_decision_at_an_hourly_base(tmp_path: Path) -> None:
    cut = GEN.start_ms + 12 * DAY + 13 * HOUR  # inside window 7 (day 12 00:00 .. day 13 00:00)
    runs = {}
    for name, c in (("plain", None), ("perturbed", cut)):
        folder = _hourly_folder(tmp_path / name / "data", c)
        proc = engine_cli(
            [
                "+profile=crypto_rating_intraday",
                "data=files",
                f"data.path={folder}",
                "exit_rules.max_holding=30h",
                "hydra.run.dir=run",
                "quiet=true",
            ],
            tmp_path / name,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[name] = tmp_path / name / "run"

    def frames(run: Path) -> dict[str, pl.DataFrame]:
        return {f: pl.read_parquet(run / f"{f}.parquet") for f in ("winners", "orders", "equity", "trades")}

    a, b = frames(runs["plain"]), frames(runs["perturbed"])
    ms = pl.col("timestamp").dt.epoch("ms")
    ranked = pl.col("rank_time").dt.epoch("ms") < cut
    cols = ["window", "symbol", "rank", "selected", "weight"]
    assert a["winners"].filter(ranked).select(cols).equals(b["winners"].filter(ranked).select(cols))
    assert a["orders"].filter(ms < cut).equals(b["orders"].filter(ms < cut))
    assert a["orders"].filter(ms < cut).height > 20
    # equity marks at closes up to the cut (the bar that opens at the cut closes after it)
    assert a["equity"].filter(ms <= cut).equals(b["equity"].filter(ms <= cut))
    closed = (pl.col("status") == "closed") & (pl.col("exit_time").dt.epoch("ms") < cut)
    assert a["trades"].filter(closed).equals(b["trades"].filter(closed))
    # and the later bars do change the later decisions, so each comparison above can fail
    assert not a["orders"].filter(ms >= cut).equals(b["orders"].filter(ms >= cut))
    assert not a["winners"].filter(~ranked).select(cols).equals(b["winners"].filter(~ranked).select(cols))


# ---- the data's end ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("profile", "last_close", "last_bar"),
    [
        # daily base: the last complete day is day 40; its 5m bars end at 23:55
        (
            ["+profile=crypto_rating", *RANKING],
            GEN.start_ms + 40 * DAY,
            GEN.start_ms + 40 * DAY - FIVE_MIN,
        ),
        # hourly base: the last complete hour is 03:00 (the 04:00 hour has 11 of its 12 bars)
        (
            ["+profile=crypto_rating_intraday"],
            GEN.start_ms + 40 * DAY + 4 * HOUR,
            GEN.start_ms + 40 * DAY + 4 * HOUR - FIVE_MIN,
        ),
    ],
)
def test_equity_and_final_marks_stop_at_the_last_real_bar(
    profile: list[str], last_close: int, last_bar: int, tmp_path: Path
) -> None:
    """Files whose bars all end at 04:50 on day 41: nothing is padded after the last bar simulated."""
    end = GEN.start_ms + 40 * DAY + 4 * HOUR + 55 * 60_000  # the last 5m bar opens at 04:50
    folder = tmp_path / "data"
    folder.mkdir()
    for pair in PAIRS:
        five = five_minute(pair).filter(pl.col("timestamp").dt.epoch("ms") < end)
        feather_write(five, folder / f"{pair.replace('/', '_')}-5m.feather")
    args = [*profile, "data=files", f"data.path={folder}", "backtest.timeframes=[5m]", "exit_rules.tp_stop=null"]
    proc = engine_cli([*args, "exit_rules.sl_stop=0.5", "hydra.run.dir=run", "quiet=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "run"
    eq = pl.read_parquet(run / "equity.parquet").get_column("timestamp").dt.epoch("ms").to_numpy()
    assert eq[-1] == last_close and np.all(np.diff(eq) == FIVE_MIN)
    m = json.loads((run / "metrics.json").read_text())
    assert m["end"] == pl.Series([last_close]).cast(pl.Datetime("ms", "UTC")).dt.to_string("%Y-%m-%dT%H:%M:%S+00:00")[0]
    trades = pl.read_parquet(run / "trades.parquet")
    still_open = trades.filter(pl.col("status") == "open")
    assert still_open.height > 0  # a wide stop and no take profit: positions are open at the end
    assert still_open.get_column("exit_time").dt.epoch("ms").to_list() == [last_bar] * still_open.height
    assert trades.get_column("exit_time").dt.epoch("ms").max() <= last_bar
    orders = pl.read_parquet(run / "orders.parquet").get_column("timestamp").dt.epoch("ms")
    assert orders.max() <= last_bar


# ---- an exchange and a folder of files with the same hourly bars give the same run -----------


@pytest.mark.slow
def test_hourly_base_from_ccxt_equals_the_same_bars_from_files(tmp_path: Path) -> None:
    from exchange_server import ExchangeServer
    from helpers import ingest_task

    from engine.data.sources.synthetic import SyntheticSource
    from engine.tasks import run_backtest

    gen = SyntheticSource(9, 7, "2024-01-01", "2024-02-29")
    folder = tmp_path / "files"
    folder.mkdir()
    for s in gen.symbols():
        feather_write(gen.ohlcv_fetch(s, "1h", gen.start_ms, gen.end_ms), folder / f"{s.replace('/', '_')}-1h.feather")
    with ExchangeServer(gen) as server:
        ccxt = [
            "data=ccxt",
            f"data.api_url={server.api_url}",
            "data.start=2024-01-01",
            "data.end=2024-02-29",
            "data.rate_limit_ms=0",
        ]
        metrics = {}
        for name, data in (("ccxt", ccxt), ("files", ["data=files", f"data.path={folder}"])):
            raw = config_compose(["+profile=crypto_rating_intraday", *data, "quiet=true"])[1]
            raw["paths"] = {"lakehouse_dir": str(tmp_path / "lh"), "output_dir": str(tmp_path / "out" / name)}
            if name == "ccxt":
                assert ingest_task(config_validate({**raw, "task": "ingest"})) == 0
                assert {r.params["interval"] for r in server.klines()} == {"1h"}  # the base bars, no daily
            metrics[name] = run_backtest(config_validate(raw)).metrics
    a, b = metrics["ccxt"], metrics["files"]
    assert a["base_interval"] == "1h" and a["n_windows"] == 56 and a["n_trades"] > 0
    for key in ("total_return", "sharpe", "max_drawdown", "n_orders", "n_trades", "final_equity", "start", "end"):
        assert a[key] == b[key], key
    for f in ("orders", "trades", "equity", "winners"):
        assert pl.read_parquet(tmp_path / "out" / "ccxt" / f"{f}.parquet").equals(
            pl.read_parquet(tmp_path / "out" / "files" / f"{f}.parquet")
        )


@pytest.mark.slow
def test_a_pair_whose_files_end_early_is_sold_at_its_last_bar(five_min_folder: Path, tmp_path: Path) -> None:
    """XRP/BTC's 5m bars end at 04:50 on day 31; held (top 8 of 8 pairs), it is sold at that bar's
    close and the fill is stamped with that bar, not with a bar it does not have."""
    from test_freqtrade_e2e import EARLY_END, EARLY_PAIR

    args = ["+profile=crypto_rating_intraday", "data=files", f"data.path={five_min_folder}", "ranking.top_n=8"]
    proc = engine_cli(
        [*args, "backtest.timeframes=[5m]", "exit_rules.sl_stop=0.9", "exit_rules.tp_stop=null"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = (tmp_path / "outputs" / "runs").glob("*/*")
    trades = pl.read_parquet(run / "trades.parquet").filter(pl.col("symbol") == EARLY_PAIR)
    gone = trades.filter(pl.col("exit_kind") == "delisted")
    assert gone.height == 1
    last_bar = EARLY_END - FIVE_MIN  # 04:50
    assert gone.get_column("exit_time").dt.epoch("ms").item() == last_bar
    orders = pl.read_parquet(run / "orders.parquet").filter(pl.col("symbol") == EARLY_PAIR)
    assert orders.get_column("timestamp").dt.epoch("ms").max() == last_bar
    sale = orders.filter(pl.col("reason") == "delisted")
    last_close = five_minute(EARLY_PAIR).get_column("close")[-1]
    assert sale.get_column("price").item() == pytest.approx(last_close * (1 - 0.0005), rel=1e-12)  # less slippage
