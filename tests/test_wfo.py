"""task=wfo: the choice uses only earlier windows, undefined objectives rank last, the out-of-sample
book equals the run started at oos_start with a one-combination grid, rules switch while positions carry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import engine_cli, small_config

from engine.core.errors import ConfigError
from engine.run.selection import OBJECTIVES, objective_columns, oos_ranks, wfo_choices
from engine.tasks import run_backtest, wfo_run

ROOT = Path(__file__).resolve().parent.parent
GRID3 = ["+profile=crypto_rating", "task=wfo", "grid.sl_stop=[0.03,0.05,0.1]", "wfo.train_windows=6"]


ONE_COMBO = ["+profile=crypto_rating", "task=wfo", "grid.sl_stop=[0.05]"]
"""A walk-forward optimisation over a grid of one combination (it is chosen in every window)."""


# ---- the selection, a pure function of the matrix ------------------------------------------------


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("anchored", [False, True])
def test_choice_at_k_uses_only_windows_before_k(objective: str, anchored: bool) -> None:
    rng = np.random.default_rng(11)
    for trial in range(20):
        t, m = int(rng.integers(8, 30)), int(rng.integers(1, 8))
        r = rng.normal(0.002, 0.03, (t, m))
        if trial % 3 == 0:
            r[:, 0] = 0.0  # a combination that never trades
        train = int(rng.integers(1, t - 1))
        base = wfo_choices(r, train, anchored, objective)
        for k in range(t):
            perturbed = r.copy()
            perturbed[k:] = rng.normal(0.0, 0.2, (t - k, m))  # any future, even NaN
            if k < t - 1:
                perturbed[-1, 0] = np.nan
            got = wfo_choices(perturbed, train, anchored, objective)
            np.testing.assert_array_equal(got.choices[: k + 1], base.choices[: k + 1])
            np.testing.assert_array_equal(got.is_objective[: k + 1], base.is_objective[: k + 1])
        assert (base.choices[:train] == -1).all() and (base.choices[train:] >= 0).all()
        assert base.first == train


def test_rolling_and_anchored_training_rows() -> None:
    r = np.zeros((6, 2))
    r[:, 1] = [0.5, -0.1, -0.1, -0.1, 0.01, 0.01]  # great early, poor later
    r[:, 0] = [0.0, 0.01, 0.01, 0.01, 0.01, 0.01]
    rolling = wfo_choices(r, 2, anchored=False, objective="total_return")
    anchored = wfo_choices(r, 2, anchored=True, objective="total_return")
    assert rolling.train[4] == (2, 4) and anchored.train[4] == (0, 4)
    assert rolling.choices[4] == 0  # windows 2-3: column 1 lost
    assert anchored.choices[4] == 1  # windows 0-3: column 1's first window dominates


def test_undefined_objective_ranks_last_and_is_counted() -> None:
    r = np.array(
        [[0.0, np.nan, -0.01], [0.0, 0.02, -0.02], [0.0, 0.01, -0.005], [0.0, 0.03, -0.01]]
    )  # column 0 never trades, column 1 has a NaN, column 2 loses
    for objective in OBJECTIVES:
        values = objective_columns(r[:3], objective)
        assert np.isnan(values[0]) and np.isnan(values[1]), objective
        sel = wfo_choices(r, 3, objective=objective)
        assert sel.choices[3] == 2 and sel.n_undefined[3] == 2, objective
    # every combination undefined: the first is chosen, nothing raises
    sel = wfo_choices(np.zeros((5, 3)), 2)
    assert list(sel.choices) == [-1, -1, 0, 0, 0] and list(sel.n_undefined[2:]) == [3, 3, 3]
    assert np.isnan(sel.is_objective[2:]).all()


def test_objectives_by_hand() -> None:
    r = np.array([[0.1, 0.02], [-0.05, 0.02], [0.1, 0.01]])
    sharpe = objective_columns(r, "sharpe")
    assert sharpe[0] == pytest.approx(np.mean(r[:, 0]) / np.std(r[:, 0], ddof=1))
    assert np.isnan(objective_columns(r, "sortino")[1])  # no losing window: undefined
    assert objective_columns(r, "sortino")[0] == pytest.approx(np.mean(r[:, 0]) / np.sqrt(0.05**2 / 3))
    tr = objective_columns(r, "total_return")
    assert tr[0] == pytest.approx(1.1 * 0.95 * 1.1 - 1) and tr[1] == pytest.approx(1.02 * 1.02 * 1.01 - 1)
    calmar = objective_columns(r, "calmar")
    assert calmar[0] == pytest.approx(((1.1 * 0.95 * 1.1) ** (1 / 3) - 1) / 0.05)
    assert calmar[1] == np.inf  # no drawdown, positive: best


def test_oos_ranks() -> None:
    r = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, np.nan]])
    assert list(oos_ranks(r, np.array([0, 2]))) == [3, 3]
    assert list(oos_ranks(r, np.array([-1, 0]))) == [0, 1]


# ---- end to end --------------------------------------------------------------------------------


def test_one_combination_equals_the_run_started_at_oos_start(lakehouse_dir: Path, tmp_path: Path) -> None:
    wfo = wfo_run(
        small_config(
            lakehouse_dir,
            tmp_path / "w",
            *ONE_COMBO,
            "wfo.train_windows=5",
        )
    )
    m = wfo.metrics
    start = m["oos_start"]
    single = run_backtest(
        small_config(
            lakehouse_dir,
            tmp_path / "s",
            "+profile=crypto_rating",
            "exit_rules.sl_stop=0.05",
            f"backtest.start={start}",
        )
    )
    assert single.metrics["start"] > start  # trading starts the day after the ranking date
    for key, value in single.metrics.items():
        if isinstance(value, float):
            assert m[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
        elif key == "survivorship":  # the same audit; only its scope's wording names the task
            assert {**m[key], "scope": None} == {**value, "scope": None}
        else:
            assert m[key] == value, key
    a = pl.read_parquet(tmp_path / "w" / "equity.parquet")
    b = pl.read_parquet(tmp_path / "s" / "equity.parquet")
    assert a.get_column("timestamp").to_list() == b.get_column("timestamp").to_list()
    np.testing.assert_allclose(
        a.get_column("equity").to_numpy(), b.get_column("equity").to_numpy(), rtol=1e-9, atol=1e-9
    )
    for name in ("orders.parquet", "trades.parquet"):
        assert pl.read_parquet(tmp_path / "w" / name).equals(pl.read_parquet(tmp_path / "s" / name)), name
    # one combination: no choice to validate, said so; the deflated Sharpe still computed
    assert m["pbo"] is None and m["wfo"]["cpcv_path_sharpe"] is None and "one combination" in m["wfo"]["note"]
    assert m["n_trials"] == 1 and m["deflated_sharpe"] is not None
    on_disk = json.loads((tmp_path / "w" / "metrics.json").read_text())
    assert on_disk["oos_start"] == start and "is_sharpe" in on_disk and "oos_sharpe" in on_disk
    frame = pl.read_parquet(tmp_path / "w" / "wfo.parquet")
    assert frame.filter(pl.col("phase") == "train").height == 5
    assert frame.filter(pl.col("phase") == "oos").get_column("oos_rank").to_list() == [1] * (frame.height - 5)
    assert str(frame.filter(pl.col("phase") == "oos").get_column("rank_date")[0]) == start
    # written last, _COMPLETE vouches for every artefact of the walk-forward run, wfo.parquet included
    done = json.loads((tmp_path / "w" / "_COMPLETE").read_text())
    assert "wfo.parquet" in done["files"] and "report.html" in done["files"]


def test_grid_wfo_choices_ignore_later_data(lakehouse_dir: Path, tmp_path: Path) -> None:
    """End to end: cutting the data after window k (backtest.end) leaves every choice up to k as it was."""
    full = wfo_run(small_config(lakehouse_dir, tmp_path / "full", *GRID3))
    frame = pl.read_parquet(tmp_path / "full" / "wfo.parquet")
    cut_row = frame.row(20, named=True)
    end = (cut_row["end"] - np.timedelta64(1, "D")).date() if hasattr(cut_row["end"], "date") else None
    short = wfo_run(small_config(lakehouse_dir, tmp_path / "short", *GRID3, f"backtest.end={end}"))
    short_frame = pl.read_parquet(tmp_path / "short" / "wfo.parquet")
    assert short_frame.height == 21
    cols = ["window", "combo", "is_objective", "oos_return", "oos_rank"]
    assert short_frame.select(cols).equals(frame.head(21).select(cols))
    assert full.metrics["oos_start"] == short.metrics["oos_start"]
    m = full.metrics
    assert m["wfo"]["n_combinations"] == 3 and m["pbo"] is not None and 0.0 <= m["pbo"] <= 1.0
    assert m["wfo"]["cpcv_path_sharpe"] and m["is_sharpe"] is not None and m["oos_sharpe"] is not None
    html = (tmp_path / "full" / "report.html").read_text()
    for div in ("chart-wfo-equity", "chart-wfo-choices", "chart-wfo-cpcv"):
        assert f'id="{div}"' in html


def test_rules_switch_while_positions_carry(lakehouse_dir: Path, tmp_path: Path) -> None:
    """A book whose rules switch at window j: windows < j are the fixed-rules book's; its
    positions are not closed by the switch (trades span the boundary) and window j's audit line
    carries the new rules."""
    from engine.config.exit_rules import ExitRules
    from engine.run import PassSpec, books_new, fold, run_plan, window_returns
    from engine.run.result import orders_columns

    cfg = small_config(lakehouse_dir, tmp_path / "c", "+profile=crypto_rating")
    a, b = ExitRules(sl_stop=0.2), ExitRules(sl_stop=0.03, tp_stop=0.1)
    plan = run_plan(cfg)
    n = len(plan.plans)
    j = n // 2
    spec = PassSpec("pessimistic", plan.interval)
    fixed = fold(plan, spec, books_new(plan, [a]))
    switched = fold(plan, spec, books_new(plan, [a]), schedules=[[a] * j + [b] * (n - j)])
    ra = window_returns(fixed.outputs[0], cfg.backtest.init_cash)
    rb = window_returns(switched.outputs[0], cfg.backtest.init_cash)
    np.testing.assert_array_equal(ra[:j], rb[:j])
    assert not np.allclose(ra[j:], rb[j:])
    assert switched.starts[j].books[0].positions == fixed.starts[j].books[0].positions  # positions at the switch
    assert switched.starts[j].books[0].positions  # something is held across it
    audit = switched.outputs[0].audit
    assert audit[j - 1]["exit_rules"]["sl_stop"] == 0.2 and audit[j]["exit_rules"]["sl_stop"] == 0.03
    from engine.run.trades import trades_from_orders

    orders = orders_columns(switched.outputs[0].orders)
    last = switched.state
    trades = trades_from_orders(orders, dict(last.last_price), last.last_bar_ms, plan.windows[-1].index)
    across = (trades["entry_window"] < j) & (trades["exit_window"] >= j)
    assert across.any()  # a position opened under the old rules is still the same trade after the switch


@pytest.mark.slow
def test_train_windows_beyond_the_data_is_one_line_exit_2(tmp_path: Path) -> None:
    args = [
        "task=wfo", "+profile=crypto_rating", "grid=sl_tp_27",
        "wfo.train_windows=1000", f"paths.lakehouse_dir={tmp_path / 'lake'}",
    ]  # fmt: skip
    proc = engine_cli(args, tmp_path, 300, env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "wfo.train_windows=1000" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "lake").exists()


def test_train_windows_beyond_the_windows_fails_before_writing(lakehouse_dir: Path, tmp_path: Path) -> None:
    cfg = small_config(
        lakehouse_dir,
        tmp_path / "x",
        *ONE_COMBO,
        "wfo.train_windows=500",
    )
    with pytest.raises(ConfigError, match="leaves no window to trade"):
        wfo_run(cfg)
    assert not (tmp_path / "x").exists()


def test_ledger_rows_and_trial_count(lakehouse_dir: Path, tmp_path: Path) -> None:
    from engine.outputs.ledger import ledger_read

    ledger = tmp_path / "ledger.duckdb"
    cfg = small_config(lakehouse_dir, tmp_path / "w", *GRID3, paths__ledger=str(ledger))
    m = wfo_run(cfg).metrics
    fp = json.loads((tmp_path / "w" / "manifest.json").read_text())["data"]["fingerprint"]
    rows = ledger_read(fp, ledger)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("grid_combo") == 3 and kinds.count("wfo_choice") == m["wfo"]["n_windows_oos"]
    assert m["n_trials"] == 3 and "ledger" in m["wfo"]["n_trials_source"]  # choices are not new trials


def test_identical_combinations_are_one_trial(lakehouse_dir: Path, tmp_path: Path) -> None:
    """Two copies of one combination are one trial (PBO null, the deflated Sharpe of one combination, one
    ledger trial); three combinations of which two are copies give the PBO of the two distinct ones."""
    from engine.run.validation import IDENTICAL_COMBINATIONS

    def run(name: str, grid: str) -> dict[str, object]:
        cfg = small_config(
            lakehouse_dir,
            tmp_path / name,
            "+profile=crypto_rating",
            "task=wfo",
            f"grid.sl_stop={grid}",
            "wfo.train_windows=6",
            paths__ledger=str(tmp_path / f"{name}.duckdb"),
        )
        return wfo_run(cfg).metrics

    one, twice = run("one", "[0.05]"), run("twice", "[0.05,0.05]")
    assert twice["pbo"] is None and one["pbo"] is None
    assert twice["n_trials"] == one["n_trials"] == 1
    assert twice["deflated_sharpe"] is not None and twice["deflated_sharpe"] == one["deflated_sharpe"]
    assert twice["sharpe"] == one["sharpe"] and twice["wfo"]["cpcv_path_sharpe"] is None
    assert twice["wfo"]["n_combinations"] == 2 and twice["wfo"]["n_duplicate_combinations"] == 1
    assert "2 combinations with identical returns in every window are one trial" in twice["wfo"]["note"]
    assert "n_duplicate_combinations" not in one["wfo"]  # a grid without copies: metrics.json as before
    assert IDENTICAL_COMBINATIONS.format(m=2) == twice["wfo"]["pbo_reason"]
    two, three = run("two", "[0.03,0.05]"), run("three", "[0.03,0.05,0.05]")
    assert two["pbo"] is not None and three["pbo"] == two["pbo"]
    assert three["n_trials"] == two["n_trials"] == 2 and three["deflated_sharpe"] == two["deflated_sharpe"]
    assert three["wfo"]["cpcv"] == two["wfo"]["cpcv"]
    assert three["wfo"]["n_duplicate_combinations"] == 1 and "folded" in three["wfo"]["note"]
    w2, w3 = (pl.read_parquet(tmp_path / n / "wfo.parquet") for n in ("two", "three"))
    assert w3.get_column("combo").to_list() == w2.get_column("combo").to_list()  # the copy is never chosen


def test_ledger_failure_is_a_warning(lakehouse_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "not_a_db.duckdb"
    bad.write_text("this is not a duckdb file")
    cfg = small_config(
        lakehouse_dir,
        tmp_path / "w",
        *ONE_COMBO,
        "wfo.train_windows=5",
        paths__ledger=str(bad),
    )
    m = wfo_run(cfg).metrics
    err = capsys.readouterr().err.strip().splitlines()
    assert len([e for e in err if "warning: trial ledger" in e]) == 1
    assert m["n_trials"] == 1 and "unavailable" in m["wfo"]["n_trials_source"]
    assert (tmp_path / "w" / "report.html").is_file()


@pytest.mark.slow
def test_grid_ledger_and_sweep_summary_count_every_trial_on_the_data(lakehouse_dir: Path, tmp_path: Path) -> None:
    from engine.outputs.ledger import ledger_read
    from engine.tasks import grid_run
    from engine.tasks.sweep import sweep_summarize

    ledger = tmp_path / "ledger.duckdb"
    grid = ["+profile=crypto_rating", "task=grid", "grid.tp_stop=[0.1,0.25]"]
    grid_run(small_config(lakehouse_dir, tmp_path / "g1", *grid, "grid.sl_stop=[0.03,0.08]", paths__ledger=str(ledger)))
    first = sweep_summarize(tmp_path / "g1" / "combos")
    assert first.dsr_trials == 4 and "ledger" in first.dsr_trials_source
    grid_run(small_config(lakehouse_dir, tmp_path / "g2", *grid, "grid.sl_stop=[0.03,0.12]", paths__ledger=str(ledger)))
    second = sweep_summarize(tmp_path / "g2" / "combos")
    assert second.n_trials == 4 and second.dsr_trials == 6  # sl 3 % is the same trial in both grids
    assert "Deflated with 6 trials" in (tmp_path / "g2" / "combos" / "leaderboard.md").read_text()
    fp = json.loads((tmp_path / "g2" / "manifest.json").read_text())["data"]["fingerprint"]
    assert [r["kind"] for r in ledger_read(fp, ledger)] == ["grid_combo"] * 8
    # no ledger configured: the sweep's own trials, said so
    grid_run(small_config(lakehouse_dir, tmp_path / "g3", *grid, "grid.sl_stop=[0.05]"))
    third = sweep_summarize(tmp_path / "g3" / "combos")
    assert third.dsr_trials == 2 and "no ledger" in third.dsr_trials_source


@pytest.mark.slow
def test_a_cli_run_appends_a_run_row(tmp_path: Path) -> None:
    from engine.outputs.ledger import ledger_read

    args = [
        "+profile=crypto_rating", "quiet=true", "data.n_symbols=30",
        "data.start=2021-01-01", "data.end=2021-06-30", "ranking.top_n=5", f"paths.lakehouse_dir={tmp_path / 'lake'}",
    ]  # fmt: skip
    proc = engine_cli(args, tmp_path, 600, env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = list((tmp_path / "outputs" / "runs").glob("*/*"))
    fp = json.loads((run_dir / "manifest.json").read_text())["data"]["fingerprint"]
    rows = ledger_read(fp, tmp_path / "outputs" / "ledger.duckdb")
    assert [r["kind"] for r in rows] == ["run"] and rows[0]["label"] == str(run_dir)


@pytest.mark.slow
def test_wfo_report_renders_in_chromium(lakehouse_dir: Path, tmp_path: Path) -> None:
    from helpers import browser_or_skip
    from test_report import rendered_dom

    from engine.outputs.report import WFO_CHART_IDS

    binary = browser_or_skip()
    wfo_run(small_config(lakehouse_dir, tmp_path / "w", *GRID3))
    dom = rendered_dom(binary, tmp_path / "w" / "report.html", tmp_path / "profile", WFO_CHART_IDS)
    assert "Walk-forward optimisation" in dom and "CPCV" in dom


def test_oos_book_optimistic_pass_follows_the_schedule(lakehouse_dir: Path, tmp_path: Path) -> None:
    """The out-of-sample book's take-profit-first return (a light pass resumed at its first
    ambiguous window, rules switching) equals a full optimistic walk of the same schedule."""
    from engine.config.exit_rules import grid_combos
    from engine.run import PassSpec, books_new, fold, plan_from, run_plan, walk_chosen

    cfg = small_config(lakehouse_dir, tmp_path / "o", *GRID3, "grid.tp_stop=[0.06,0.1]")
    rules = grid_combos(cfg)
    grid = walk_chosen(cfg, rules, lambda r: wfo_choices(r, 6).choices)
    result, choices = grid.result, grid.choices
    schedule = [rules[int(c)] for c in choices[choices >= 0]]
    assert len({id(r) for r in schedule}) > 1  # the choice changes
    m = result.metrics
    assert m["n_ambiguous_exits"] > 0
    plan = plan_from(run_plan(cfg), int(np.flatnonzero(choices >= 0)[0]))
    full = fold(plan, PassSpec("optimistic", plan.interval), books_new(plan, [schedule[0]]), [schedule])
    want = full.outputs[0].final_equity / cfg.backtest.init_cash - 1.0
    assert m["total_return_optimistic"] == pytest.approx(want, rel=1e-12)
    assert m["total_return_optimistic"] != m["total_return"]


def test_run_and_grid_ledger_failures_are_one_warning_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from engine.outputs.ledger import ledger_record_grid, ledger_record_run

    bad = tmp_path / "bad.duckdb"
    bad.write_text("not a duckdb file")
    cfg = SimpleNamespace(paths=SimpleNamespace(ledger=str(bad)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert ledger_record_run(cfg, run_dir, "run") is False  # no manifest: not a finished run
    (run_dir / "manifest.json").write_text(json.dumps({"config": {"a": 1}, "data": {"fingerprint": "f"}}))
    (run_dir / "metrics.json").write_text(json.dumps({"sharpe": 1.0}))
    assert ledger_record_run(cfg, run_dir, "run") is False  # not a ledger file
    assert ledger_record_grid(cfg, run_dir, [], []) is True  # nothing to append
    err = [e for e in capsys.readouterr().err.splitlines() if e.strip()]
    assert len(err) == 2 and all(e.startswith("warning: trial ledger") for e in err)
    assert ledger_record_run(SimpleNamespace(paths=SimpleNamespace(ledger=None)), run_dir, "run") is False
