"""The survivorship audit and the delisting haircut.

Each test builds its own folder of daily freqtrade files (a few pairs whose paths it chooses) and
runs the engine on it in-process (``data=files``): a universe whose delisted coins pump, crash and
vanish; one where every pair reaches the data's end; a hand case of one delisted holding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import TINY_RANKING, bars_from_closes, feather_write

from engine.compose import config_compose
from engine.config import RunConfig, config_validate
from engine.core.units import DAY_MS
from engine.run import assemble, backtest_run, run_plan, walk
from engine.run.plan import Timings, plan_ranked
from engine.run.survivorship import delisted_symbols, survivors_plan
from engine.strategy.ranking import ranks_restrict

START_MS = 1_609_459_200_000  # 2021-01-01
N_DAYS = 240


def _folder(root: Path, paths: dict[str, tuple[np.ndarray, int]]) -> Path:
    """Write one ``PAIR-1d.feather`` per symbol: (daily log returns, first day)."""
    root.mkdir(parents=True)
    for symbol, (logret, first) in paths.items():
        close = 100.0 * np.exp(np.cumsum(logret))
        feather_write(
            bars_from_closes(close, START_MS + first * DAY_MS, DAY_MS), root / f"{symbol.replace('/', '_')}-1d.feather"
        )
    return root


def _survivor_paths(rng: np.random.Generator, names: list[str]) -> dict[str, tuple[np.ndarray, int]]:
    """Slow risers with noise: +0.1 % a day, 1 % daily volatility, to the data's end."""
    return {s: (rng.normal(0.001, 0.01, N_DAYS), 0) for s in names}


def _config(tmp: Path, folder: Path, *overrides: str) -> RunConfig:
    """The default config on the files of ``folder`` with the tiny ranking (weekly windows, top 3)."""
    raw = config_compose(["data=files", f"data.path={folder}", "quiet=true", *TINY_RANKING, *overrides])[1]
    raw["paths"] = {"lakehouse_dir": str(tmp / "lakehouse"), "output_dir": str(tmp / "out")}
    return config_validate(raw)


SURVIVORS = ["AAA/USDT", "BBB/USDT", "CCC/USDT", "DDD/USDT", "EEE/USDT", "FFF/USDT"]
DOOMED = ["XXA/USDT", "XXB/USDT", "XXC/USDT"]


@pytest.fixture(scope="module")
def crash_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six survivors; three coins that pump (+1.5 %/day, days 60-120, the top momentum), crash
    (-20 %/day for 8 days) and whose bars end on day 128, 112 days before the data's end."""
    rng = np.random.default_rng(11)
    paths = _survivor_paths(rng, SURVIVORS)
    for s in DOOMED:
        r = rng.normal(0.0, 0.01, 129)
        r[60:120] += 0.015
        r[120:] = np.log(0.8)
        paths[s] = (r, 0)
    return _folder(tmp_path_factory.mktemp("crash") / "data", paths)


def test_delisted_coins_that_crash_make_the_survivors_only_run_look_better(crash_folder: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, crash_folder)
    run = backtest_run(cfg)
    assert run.result is not None
    m = run.result.metrics
    s = m["survivorship"]
    assert s["n_symbols"] == 9 and s["n_delisted"] == 3 and s["n_survivors"] == 6
    assert s["delisted_traded"] == DOOMED  # the honest run bought the pumping coins
    assert m["total_return"] < 0 < s["total_return"]  # it held them into the crash; survivors never met them
    assert s["inflation"] == pytest.approx(s["total_return"] - m["total_return"], abs=0.0)
    assert s["inflation"] > 0
    assert s["scope"] == "the run's book"
    assert "survivorship" not in run.book_metrics[0]  # the book's own metrics (a grid's combos/000) stay as they were

    # parity with an independent path: a run whose universe excludes the delisted symbols, ranked from the bars
    excluded = backtest_run(_config(tmp_path / "x", crash_folder, f"universe.exclude=[{','.join(DOOMED)}]"))
    assert excluded.result is not None
    assert s["total_return"] == excluded.result.metrics["total_return"]
    assert s["sharpe"] == excluded.result.metrics["sharpe"]
    assert s["max_drawdown"] == excluded.result.metrics["max_drawdown"]
    assert excluded.result.metrics["survivorship"]["n_delisted"] == 0  # the excluded symbols are not its universe


def test_the_restricted_ranking_equals_a_ranking_of_the_smaller_universe(crash_folder: Path, tmp_path: Path) -> None:
    plan = run_plan(_config(tmp_path, crash_folder))
    assert delisted_symbols(plan) == DOOMED
    restricted = ranks_restrict(plan.ranks, SURVIVORS, plan.cfg.ranking)
    direct = run_plan(_config(tmp_path / "x", crash_folder, f"universe.exclude=[{','.join(DOOMED)}]")).ranks
    assert restricted.equals(direct)
    assert restricted.height < plan.ranks.height
    # restricted to every symbol, the ranking is the run's own, bit for bit
    assert ranks_restrict(plan.ranks, SURVIVORS + DOOMED, plan.cfg.ranking).equals(plan.ranks)


def test_the_report_and_the_console_show_the_audit(
    crash_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.outputs.console import summary_print
    from engine.outputs.report import report_html

    cfg = _config(tmp_path, crash_folder)
    run = backtest_run(cfg)
    assert run.result is not None
    m, s = run.result.metrics, run.result.metrics["survivorship"]
    page = report_html(cfg, run.result)
    section = page[page.index('<section id="survivorship">') :]
    section = section[: section.index("</section>")]
    assert (
        f'<td class="n">{m["total_return"] * 100:+.2f}%</td><td class="n">{s["total_return"] * 100:+.2f}%</td>'
        in section
    )
    assert (
        f"minus this run&#x27;s): {s['inflation'] * 100:+.2f}%: ranking only today&#x27;s survivors overstates"
        in section
    )
    assert "This run traded 3 of the delisted symbols: XXA/USDT, XXB/USDT, XXC/USDT" in section
    summary_print(m, tmp_path, cfg)
    want = f"  survivors only   {s['total_return']:+.2%}  (inflation {s['inflation']:+.2%}: 3 of 9 symbols delisted, 3 of them traded)"
    assert want in capsys.readouterr().out.splitlines()


def test_the_audit_can_be_turned_off(crash_folder: Path, tmp_path: Path) -> None:
    run = backtest_run(_config(tmp_path, crash_folder, "survivorship.audit=false"))
    assert run.result is not None and "survivorship" not in run.result.metrics
    assert "survivorship" not in run.result.timings


@pytest.fixture(scope="module")
def alive_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six pairs to the data's end, one of them listed late (day 50): nothing is delisted."""
    rng = np.random.default_rng(3)
    paths = _survivor_paths(rng, SURVIVORS[:5])
    paths["LATE/USDT"] = (rng.normal(0.004, 0.02, N_DAYS - 50), 50)
    return _folder(tmp_path_factory.mktemp("alive") / "data", paths)


def test_no_delisting_means_no_inflation(alive_folder: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, alive_folder)
    run = backtest_run(cfg)
    assert run.result is not None
    m, s = run.result.metrics, run.result.metrics["survivorship"]
    assert s["n_delisted"] == 0 and s["n_survivors"] == 6  # a late listing is no delisting
    assert s["inflation"] == 0.0
    assert s["total_return"] == m["total_return"] and s["sharpe"] == m["sharpe"]
    # the second plan's own path (plan_ranked on the ranking restricted to all six) walks to the same numbers
    plan = run_plan(cfg)
    assert survivors_plan(plan) is None
    ranks = ranks_restrict(plan.ranks, sorted(plan.coverage), cfg.ranking)
    again = plan_ranked(
        cfg, plan.lakehouse, plan.ingestion, plan.interval, plan.coverage, plan.windows, ranks, Timings()
    )
    redo = assemble(again, walk(again, [cfg.exit_rules]), first_result=False).book_metrics[0]
    assert redo["total_return"] == m["total_return"] and redo["sharpe"] == m["sharpe"]


# ---- the delisting haircut: one holding whose bars end inside a window ------------------------------


@pytest.fixture(scope="module")
def one_delisting_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three pairs; GONE/USDT rises fastest (top momentum), so it is held, and its bars end on day 103."""
    rng = np.random.default_rng(5)
    paths = _survivor_paths(rng, ["AAA/USDT", "BBB/USDT"])
    r = rng.normal(0.01, 0.005, 104)
    paths["GONE/USDT"] = (r, 0)
    return _folder(tmp_path_factory.mktemp("one") / "data", paths)


@pytest.mark.parametrize("haircut", [0.0, 0.3])
def test_a_delisted_holding_is_sold_at_its_last_close_less_the_haircut(
    one_delisting_folder: Path, tmp_path: Path, haircut: float
) -> None:
    cfg = _config(
        tmp_path, one_delisting_folder, "ranking.top_n=1", "costs=zero", f"execution.delisting_haircut={haircut}"
    )
    run = backtest_run(cfg)
    assert run.result is not None
    orders, equity = run.result.orders, run.result.equity
    exit_ = orders.filter(pl.col("reason") == "delisted")
    assert exit_.height == 1 and exit_.item(0, "symbol") == "GONE/USDT" and exit_.item(0, "side") == "sell"
    bars = pl.read_ipc(one_delisting_folder / "GONE_USDT-1d.feather")
    last_close = float(bars.get_column("close")[-1])
    last_day = bars.get_column("date")[-1]
    # stamped with its last bar, filled at its last close x (1 - haircut): no slippage or fee (costs=zero)
    assert exit_.item(0, "timestamp") == last_day
    assert exit_.item(0, "price") == pytest.approx(last_close * (1.0 - haircut), rel=1e-12)
    size = exit_.item(0, "size")
    # the book's equity loses exactly the haircut on the position between the last bar's close and the next
    after = equity.filter(pl.col("timestamp") > last_day + pl.duration(days=1)).item(0, "equity")
    before = equity.filter(pl.col("timestamp") == last_day + pl.duration(days=1)).item(0, "equity")
    cash_before = before - size * last_close
    assert after == pytest.approx(cash_before + size * last_close * (1.0 - haircut), rel=1e-12)
    trades = run.result.trades.filter(pl.col("symbol") == "GONE/USDT")
    assert trades.get_column("exit_kind").to_list()[-1] == "delisted"


# ---- a grid audits its combination 000; a walk-forward optimisation its out-of-sample book -----------


def test_a_grid_audits_its_first_combination(crash_folder: Path, tmp_path: Path) -> None:
    from engine.config.exit_rules import ExitRules

    cfg = _config(tmp_path, crash_folder)
    grid = backtest_run(cfg, [None, ExitRules(sl_stop=0.05)])
    plain = backtest_run(cfg)
    assert grid.result is not None and plain.result is not None
    s = grid.result.metrics["survivorship"]
    assert s["scope"] == "the grid's combination 000"
    assert s["total_return"] == plain.result.metrics["survivorship"]["total_return"]
    assert all("survivorship" not in m for m in grid.book_metrics)  # combos/NNN/metrics.json unchanged


def test_a_walk_forward_optimisation_audits_its_choices_on_the_survivors(crash_folder: Path, tmp_path: Path) -> None:
    from engine.config.exit_rules import ExitRules
    from engine.run import walk_chosen

    rules: list[ExitRules | None] = [None, ExitRules(sl_stop=0.05)]

    def choose(returns: np.ndarray) -> np.ndarray:  # fixed choices: train 4 windows, then alternate
        n = returns.shape[0]
        return np.array([-1] * 4 + [k % 2 for k in range(n - 4)])

    honest = walk_chosen(_config(tmp_path, crash_folder), rules, choose)
    s = honest.result.metrics["survivorship"]
    assert s["scope"] == "the out-of-sample book, its per-window choices kept"
    # the same choices traded on a universe without the delisted symbols, from the bars up
    excluded = walk_chosen(
        _config(tmp_path / "x", crash_folder, f"universe.exclude=[{','.join(DOOMED)}]"), rules, choose
    )
    assert s["total_return"] == excluded.result.metrics["total_return"]
    assert s["sharpe"] == excluded.result.metrics["sharpe"]
    assert s["inflation"] == s["total_return"] - honest.result.metrics["total_return"]


def test_a_holding_whose_bars_end_with_its_window_is_sold_at_the_next_windows_start(tmp_path: Path) -> None:
    """GONE/USDT's last bar is a window's last bar: ranked first at its close, it has no bar at the next
    window's open, so it is carried in and sold there: reason delisted, stamped with its last bar, at its
    last close less the haircut."""
    rng = np.random.default_rng(8)
    probe = _folder(tmp_path / "probe", _survivor_paths(rng, ["AAA/USDT", "BBB/USDT"]))
    windows = run_plan(_config(tmp_path / "p", probe, "ranking.top_n=1")).windows
    last_day = (windows[10].end_ms - START_MS) // DAY_MS - 1  # the last bar of window 10
    paths = _survivor_paths(np.random.default_rng(8), ["AAA/USDT", "BBB/USDT"])
    paths["GONE/USDT"] = (np.random.default_rng(9).normal(0.01, 0.005, last_day + 1), 0)
    folder = _folder(tmp_path / "data", paths)
    cfg = _config(tmp_path, folder, "ranking.top_n=1", "costs=zero", "execution.delisting_haircut=0.25")
    run = backtest_run(cfg)
    assert run.result is not None
    sale = run.result.orders.filter(pl.col("reason") == "delisted")
    assert sale.height == 1 and sale.item(0, "symbol") == "GONE/USDT" and sale.item(0, "window") == 11
    bars = pl.read_ipc(folder / "GONE_USDT-1d.feather")
    assert sale.item(0, "timestamp") == bars.get_column("date")[-1]
    assert sale.item(0, "price") == pytest.approx(float(bars.get_column("close")[-1]) * 0.75, rel=1e-12)
