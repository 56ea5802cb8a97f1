"""Sweep summary: leaderboard, deflated Sharpe ratio, failed jobs, errors, heatmap, Hydra callback."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import engine_cli

from engine.config import ENGINE_VERSION
from engine.core.errors import EngineError
from engine.tasks.sweep import deflated_sharpe_ratio, expected_max_sharpe, sweep_dsr, sweep_summarize

REPO = Path(__file__).resolve().parent.parent
SL = ("0.02", "0.05", "0.1")
TP = ("0.1", "0.2", "0.3")


def _job(root: Path, name: str, params: dict[str, str], metrics: dict | None = None, error: str | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps(params))
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps({"engine_version": ENGINE_VERSION, **metrics}))
    if error is not None:
        (d / "error.txt").write_text(error + "\n")
    return d


def _metrics(sharpe: float | None, i: int) -> dict:
    return {
        "total_return": 0.01 * i,
        "sharpe": sharpe,
        "max_drawdown": -0.1 - 0.01 * i,
        "n_trades": 10 + i,
        "n_ambiguous_exits": i % 2,
        "calmar": float(i),
        "skewness": -0.5,
        "kurtosis": 6.0,
        "n_returns": 366,
        "exits_by_kind": {"stop_loss": i},
        "win_rate": None,
    }


def _grid_sharpe(i_sl: int, i_tp: int) -> float:
    # steps of 0.25 are exact in binary, so equal Sharpe ratios really tie
    return 0.5 + 0.25 * i_tp - 0.25 * i_sl


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """9 jobs on a 3x3 sl x tp grid (jobs 0..8) plus job 9 that failed with error.txt."""
    root = tmp_path / "sweep"
    for i_sl, sl in enumerate(SL):
        for i_tp, tp in enumerate(TP):
            i = 3 * i_sl + i_tp
            params = {"exit_rules.sl_stop": sl, "exit_rules.tp_stop": tp, "profile": "crypto_rating"}
            _job(root, str(i), params, _metrics(_grid_sharpe(i_sl, i_tp), i))
    bad = {"exit_rules.sl_stop": "0.5", "exit_rules.tp_stop": "0.1", "profile": "crypto_rating"}
    _job(root, "9", bad, error="DataError: no bars for BTC/USDT in 2021-01")
    return root


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_leaderboard_order_and_contents(sweep: Path) -> None:
    s = sweep_summarize(sweep)
    rows = _read_csv(sweep / "leaderboard.csv")
    assert list(rows[0]) == [
        "rank",
        "job",
        "exit_rules.sl_stop",
        "exit_rules.tp_stop",
        "total_return",
        "sharpe",
        "max_drawdown",
        "n_trades",
        "n_ambiguous_exits",
        "deflated_sharpe",
    ]
    assert len(rows) == 9 and s.n_trials == 9
    assert s.swept == ["exit_rules.sl_stop", "exit_rules.tp_stop"]  # profile is the same everywhere
    # best: smallest stop, widest target (sharpe 0.5 + 0.5 = 1.0), job 2
    assert rows[0]["job"] == "2" and rows[0]["exit_rules.sl_stop"] == "0.02" and rows[0]["exit_rules.tp_stop"] == "0.3"
    assert float(rows[0]["sharpe"]) == pytest.approx(1.0)
    sharpes = [float(r["sharpe"]) for r in rows]
    assert sharpes == sorted(sharpes, reverse=True)
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 10)]
    # ties (jobs 1 and 5: 0.75; jobs 0, 4 and 8: 0.5; jobs 3 and 7: 0.25) are broken by job number
    assert [r["job"] for r in rows] == ["2", "1", "5", "0", "4", "8", "3", "7", "6"]
    row = next(r for r in rows if r["job"] == "4")
    assert (row["n_trades"], row["n_ambiguous_exits"], float(row["total_return"])) == ("14", "0", pytest.approx(0.04))
    md = (sweep / "leaderboard.md").read_text()
    assert "9 trials, 1 failed job, ranked by sharpe" in md
    assert "deflated_sharpe" in md and "Bailey" in md
    assert md.count("\n| ") == 9 + 1 + 1 + 1  # header + 9 rows, failed-jobs header + 1 failed row


@pytest.mark.slow
def test_rank_by_other_metric_ascending(sweep: Path) -> None:
    s = sweep_summarize(sweep, metric="calmar", descending=False)
    assert s.leaderboard.get_column("job").to_list() == [str(i) for i in range(9)]
    assert "calmar" in s.leaderboard.columns


def test_dsr_hand_computation() -> None:
    # Three trials with per-period (daily) Sharpe ratios 0.05, 0.10, 0.15:
    #   V[SR] = ((0.05 - 0.10)^2 + 0 + (0.15 - 0.10)^2) / (3 - 1) = 0.0025, sqrt = 0.05
    #   Z^-1(1 - 1/3) = 0.430727,  Z^-1(1 - 1/(3e)) = 1.161957
    #   SR0 = 0.05 * ((1 - 0.577216) * 0.430727 + 0.577216 * 1.161957) = 0.0426402
    # Best trial: SR = 0.15, T = 366, skew = -0.5, kurt = 6:
    #   1 - (-0.5)(0.15) + (6 - 1)/4 * 0.15^2 = 1 + 0.075 + 0.028125 = 1.103125
    #   z = (0.15 - 0.0426402) * sqrt(365) / sqrt(1.103125) = 1.952880,  DSR = Phi(z) = 0.974583
    sr_daily = np.array([0.05, 0.10, 0.15])
    dsr, sr0 = sweep_dsr(sr_daily * math.sqrt(365), np.full(3, 366), np.full(3, -0.5), np.full(3, 6.0))
    assert sr0 == pytest.approx(0.0426402, abs=1e-6)
    assert dsr[2] == pytest.approx(0.974583, abs=1e-5)
    assert dsr[0] < dsr[1] < dsr[2]


def test_dsr_paper_example() -> None:
    # Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", J. Portfolio Management 40(5),
    # numerical example: N = 100 trials, V[SR_n] = 1/2 annualised, 250 observations a year,
    # best SR = 2.5 annualised over T = 1250 daily returns, skew -3, kurtosis 10;
    # the paper gives SR0 ≈ 0.1132 (non-annualised) and DSR ≈ 0.9004.
    # (Figures as quoted from the paper; the `search` tool found the paper's title page but not
    # the example's text, so they could not be re-checked against the source here.)
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=1e-4)
    dsr = deflated_sharpe_ratio(np.array([2.5 / math.sqrt(250)]), sr0, np.array([1250]), np.array([-3.0]), [10.0])
    assert dsr[0] == pytest.approx(0.9004, abs=5e-4)


def test_dsr_single_trial_is_psr_against_zero() -> None:
    assert expected_max_sharpe(1, 0.0) == 0.0
    dsr, sr0 = sweep_dsr(np.array([0.1 * math.sqrt(365)]), np.array([101]), np.array([0.0]), np.array([3.0]))
    z = 0.1 * 10 / math.sqrt(1 + 0.5 * 0.01)
    assert sr0 == 0.0 and dsr[0] == pytest.approx(0.5 * (1 + math.erf(z / math.sqrt(2))))


@pytest.mark.slow
def test_leaderboard_dsr_matches_formula(sweep: Path) -> None:
    s = sweep_summarize(sweep)
    sharpe = s.leaderboard.get_column("sharpe").to_numpy()
    dsr, sr0 = sweep_dsr(sharpe, np.full(9, 366), np.full(9, -0.5), np.full(9, 6.0))
    assert s.sr0 == pytest.approx(sr0)
    assert s.leaderboard.get_column("deflated_sharpe").to_numpy() == pytest.approx(dsr)


@pytest.mark.slow
def test_failed_jobs_listed(sweep: Path) -> None:
    # job 10: no error.txt, a Hydra log with the error; job 11: nothing at all
    d = _job(sweep, "10", {"exit_rules.sl_stop": "0.9", "exit_rules.tp_stop": "0.1"})
    (d / "cli.log").write_text("[INFO] start\nValueError: bad value\n[INFO] ValueError: raised again\ndone\n")
    d = _job(sweep, "11", {"exit_rules.sl_stop": "0.9", "exit_rules.tp_stop": "0.2"})
    s = sweep_summarize(sweep)
    assert s.n_trials == 9
    assert _read_csv(sweep / "failed.csv") == [
        {"job": "9", "reason": "DataError: no bars for BTC/USDT in 2021-01"},
        {"job": "10", "reason": "[INFO] ValueError: raised again"},
        {"job": "11", "reason": "no metrics.json"},
    ]
    assert "3 failed jobs" in (sweep / "leaderboard.md").read_text()


@pytest.mark.slow
def test_no_failed_csv_without_failures(sweep: Path) -> None:
    for f in (sweep / "9").iterdir():
        f.unlink()
    (sweep / "9").rmdir()
    sweep_summarize(sweep)
    assert not (sweep / "failed.csv").exists()


@pytest.mark.slow
def test_version_mismatch(sweep: Path) -> None:
    path = sweep / "3" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "engine_version": "0.0.9"}))
    with pytest.raises(EngineError, match=r"metrics.json of job 3 comes from engine version 0.0.9, this is "):
        sweep_summarize(sweep)
    path.write_text(json.dumps({"sharpe": 1.0}))
    with pytest.raises(EngineError, match=r"job 3 has no engine_version"):
        sweep_summarize(sweep)


def test_all_failed(tmp_path: Path) -> None:
    _job(tmp_path, "0", {"a": "1"}, error="ConfigError: unknown config key 'x'")
    _job(tmp_path, "1", {"a": "2"}, error="other")
    with pytest.raises(EngineError, match=r"all 2 failed; job 0: ConfigError: unknown config key 'x'"):
        sweep_summarize(tmp_path)


def test_missing_and_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        sweep_summarize(tmp_path / "nope")
    with pytest.raises(EngineError, match="no job directories"):
        sweep_summarize(tmp_path)


@pytest.mark.slow
def test_unknown_metric(sweep: Path) -> None:
    with pytest.raises(EngineError, match=r"unknown metric 'sharp': valid metrics are .*sharpe") as info:
        sweep_summarize(sweep, metric="sharp")
    assert "exits_by_kind" not in str(info.value) and "engine_version" not in str(info.value)


@pytest.mark.slow
def test_heatmap(sweep: Path, browser: str) -> None:  # the PNG is rendered by a browser
    s = sweep_summarize(sweep)
    html = (sweep / "heatmap_sl_tp.html").read_text()
    # plotly.js inlined (the page opens offline), not loaded from a CDN script tag
    assert 'id="heatmap-sl-tp"' in html and '<script src="http' not in html and len(html) > 1_000_000
    png = (sweep / "heatmap_sl_tp.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert s.files["heatmap_sl_tp.png"] == sweep / "heatmap_sl_tp.png"
    # deterministic html: a second summary writes the same bytes
    sweep_summarize(sweep)
    assert (sweep / "heatmap_sl_tp.html").read_text() == html


def test_no_heatmap_with_one_exit_key(tmp_path: Path) -> None:
    for i, sl in enumerate(SL):
        _job(tmp_path, str(i), {"exit_rules.sl_stop": sl}, _metrics(1.0 + i, i))
    sweep_summarize(tmp_path)
    assert not (tmp_path / "heatmap_sl_tp.html").exists()


def _hide_browser(monkeypatch: pytest.MonkeyPatch, where: Path) -> None:
    """No Chrome/Chromium, as on a fresh machine (and as .ci/run's browser-hidden step)."""
    monkeypatch.setenv("BROWSER_PATH", str(where / "no-such-chrome"))
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))


def test_no_browser_writes_the_summary_and_warns(
    sweep: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (sweep / "heatmap_sl_tp.png").write_bytes(b"an older summary's png")
    _hide_browser(monkeypatch, sweep)
    s = sweep_summarize(sweep)
    assert s.leaderboard.get_column("job").to_list()[0] == "2"  # ranked as with a browser
    for name in ("leaderboard.csv", "leaderboard.md", "heatmap_sl_tp.html"):
        assert (sweep / name).is_file(), name
    assert "heatmap_sl_tp.png" not in s.files and not (sweep / "heatmap_sl_tp.png").exists()  # no stale png
    (warning,) = s.warnings
    assert "no-such-chrome is not a file" in warning and f"python -m engine.sweep {sweep}" in warning
    from engine.tasks.multirun import summary_print

    summary_print(s)
    out, err = capsys.readouterr()
    assert "sweep summary: 9 trials, 1 failed" in out and f"leaderboard: {sweep / 'leaderboard.md'}" in out
    assert err == f"warning: {warning}\n"


def test_png_render_failure_is_a_warning(sweep: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kaleido

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("browser closed unexpectedly\nmore detail")

    monkeypatch.setenv("BROWSER_PATH", sys.executable)  # a file: kaleido is asked, and fails
    monkeypatch.setattr(kaleido, "calc_fig_sync", broken)
    s = sweep_summarize(sweep)
    assert (sweep / "leaderboard.csv").is_file() and not (sweep / "heatmap_sl_tp.png").exists()
    (warning,) = s.warnings
    assert f"kaleido could not render it with {sys.executable} (browser closed unexpectedly)" in warning


@pytest.mark.slow
def test_grid_summary_without_browser(
    lakehouse_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import small_config

    from engine.tasks import grid_run

    _hide_browser(monkeypatch, tmp_path)
    grid = ["+profile=crypto_rating", "task=grid", "grid.sl_stop=[0.03,0.08]", "grid.tp_stop=[0.1,0.25]"]
    grid_run(small_config(lakehouse_dir, tmp_path / "g", *grid))
    out, err = capsys.readouterr()
    assert "sweep summary: 4 trials, 0 failed" in out and "skipped" not in err
    assert err.count("warning: heatmap_sl_tp.png not made") == 1
    assert len(_read_csv(tmp_path / "g" / "combos" / "leaderboard.csv")) == 4


def test_grid_layout(tmp_path: Path) -> None:
    for i, sl in enumerate(SL):
        _job(tmp_path / "combos", f"c{i}", {"exit_rules.sl_stop": sl}, _metrics(1.0 + i, i))
    s = sweep_summarize(tmp_path)
    assert s.leaderboard.get_column("job").to_list() == ["combos/c2", "combos/c1", "combos/c0"]


@pytest.mark.slow
def test_cli(sweep: Path) -> None:
    env = {"PYTHONPATH": str(REPO)}
    ok = engine_cli([str(sweep)], sweep, env=env, module="engine.sweep")
    assert ok.returncode == 0, ok.stderr
    assert "leaderboard.md" in ok.stdout
    # with the browser hidden: the same leaderboard, one warning naming the fix, exit 0
    hidden = {**env, "BROWSER_PATH": str(sweep / "no-such-chrome"), "PATH": os.path.dirname(sys.executable)}
    bare = engine_cli([str(sweep)], sweep, env=hidden, module="engine.sweep")
    assert bare.returncode == 0 and bare.stdout == ok.stdout, bare.stderr
    assert bare.stderr.startswith("warning: heatmap_sl_tp.png not made") and bare.stderr.count("\n") == 1
    bad = engine_cli([str(sweep), "--metric", "nope"], sweep, env=env, module="engine.sweep")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: unknown metric 'nope'") and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1


@pytest.mark.slow
def test_callback_on_real_multirun(tmp_path: Path) -> None:
    from helpers import browser_found

    has_browser = browser_found() is not None
    cmd = [
        "-m",
        "hydra/callbacks=sweep_summary",
        "+profile=crypto_rating",
        "exit_rules.sl_stop=0.02,0.05",
        "exit_rules.tp_stop=0.1,0.2",
        "data.n_symbols=20",
        "data.end=2021-09-30",
        "ranking.top_n=3",
        "quiet=true",
        f"paths.lakehouse_dir={tmp_path / 'lh'}",
    ]
    run = engine_cli(cmd, tmp_path, 300, env={"PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-2000:]
    boards = list((tmp_path / "outputs" / "sweeps").glob("*/*/leaderboard.csv"))
    assert len(boards) == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert len(_read_csv(boards[0])) == 4
    assert "sweep summary: 4 trials" in run.stdout and f"leaderboard: {boards[0].with_suffix('.md')}" in run.stdout
    # the PNG when a browser is there, else one warning (the summary is complete either way)
    assert (boards[0].parent / "heatmap_sl_tp.png").is_file() == has_browser, run.stderr[-2000:]
    assert run.stderr.count("warning: heatmap_sl_tp.png not made") == (0 if has_browser else 1)
    # every job appended a sweep_job row to the default ledger; the summary deflated with its count
    from engine.outputs.ledger import ledger_read

    job = next(boards[0].parent.glob("*/manifest.json"))
    fp = json.loads(job.read_text())["data"]["fingerprint"]
    rows = ledger_read(fp, tmp_path / "outputs" / "ledger.duckdb")
    assert [r["kind"] for r in rows] == ["sweep_job"] * 4
    assert "deflated Sharpe with 4 trials: the distinct configurations the ledger" in run.stdout
