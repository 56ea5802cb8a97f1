"""engine.outputs.ledger: the DuckDB trial ledger, its counts, and concurrent writers."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from engine.config import ENGINE_VERSION
from engine.outputs.ledger import (
    KINDS,
    LedgerError,
    Trial,
    _locked,
    config_hash,
    ledger_append,
    ledger_read,
    n_trials,
    returns_summary,
)
from engine.run.metrics import equity_metrics

REPO = Path(__file__).resolve().parent.parent


def _trial(i: int, fingerprint: str = "fp-a", kind: str = "grid_combo") -> Trial:
    rets = np.random.default_rng(i).normal(0.001, 0.02, 60)
    metrics = {"total_return": 0.1 * i, "sharpe": 1.5, "sortino": math.nan, "max_drawdown": -0.2, "n_trades": 7}
    return Trial.from_metrics(kind, config_hash({"combo": i}), fingerprint, metrics, rets, label=f"combo {i}")


def test_append_read_and_count(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.duckdb"  # parent created on first append
    assert n_trials("fp-a", path) == 0 and ledger_read("fp-a", path) == []  # no ledger yet
    assert ledger_append([_trial(i) for i in range(3)], path) == 3
    assert ledger_append(_trial(0, kind="wfo_choice"), path) == 1  # same config as combo 0
    assert ledger_append(_trial(9, fingerprint="fp-b", kind="run"), path) == 1
    assert n_trials("fp-a", path) == 3  # distinct configs: the wfo choice of combo 0 is no new trial
    assert n_trials("fp-a", path, distinct=False) == 4
    assert n_trials("fp-b", path) == 1 and n_trials("other", path) == 0
    rows = ledger_read("fp-a", path)
    assert [r["kind"] for r in rows] == ["grid_combo"] * 3 + ["wfo_choice"]
    r = rows[1]
    assert r["engine_version"] == ENGINE_VERSION and r["data_fingerprint"] == "fp-a"
    assert r["total_return"] == pytest.approx(0.1) and r["sharpe"] == 1.5 and r["n_trades"] == 7
    assert r["sortino"] is None  # NaN metrics are stored as NULL
    assert r["label"] == "combo 1" and len(r["trial_id"]) == 32
    assert r["n_obs"] == 60 and r["ret_std"] > 0 and r["ret_kurtosis"] > 0
    assert rows[0]["recorded_at"] <= rows[3]["recorded_at"]


def test_returns_summary_moments_match_metrics() -> None:
    rets = np.random.default_rng(3).normal(0.001, 0.02, 200)
    equity = 100.0 * np.cumprod(1 + rets)
    m = equity_metrics(equity, 100.0, 200)
    s = returns_summary(rets)
    assert s["n_obs"] == m["n_returns"] == 200
    assert s["ret_skew"] == pytest.approx(m["skewness"]) and s["ret_kurtosis"] == pytest.approx(m["kurtosis"])
    assert s["ret_mean"] == pytest.approx(rets.mean()) and s["ret_std"] == pytest.approx(rets.std(ddof=1))
    assert returns_summary([0.0, 0.0, 0.0])["ret_skew"] is None  # zero variance: undefined moments
    assert returns_summary([])["n_obs"] == 0


def test_config_hash_is_canonical() -> None:
    assert config_hash({"a": 1, "b": {"c": [1, 2]}}) == config_hash({"b": {"c": [1, 2]}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_invalid_trial() -> None:
    with pytest.raises(LedgerError, match="unknown trial kind"):
        Trial(kind="backtest", config_hash="h", data_fingerprint="f")
    with pytest.raises(LedgerError, match="config_hash"):
        Trial(kind="run", config_hash="", data_fingerprint="f")
    assert set(KINDS) == {"run", "sweep_job", "grid_combo", "wfo_choice"}


def test_lock_wait_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "ledger.duckdb"
    ledger_append(_trial(0), path)
    with _locked(path, exclusive=True, timeout_s=1.0):  # another writer holds the ledger
        t0 = time.monotonic()
        with pytest.raises(LedgerError, match=r"locked by another process for 0\.2 s"):
            ledger_append(_trial(1), path, timeout_s=0.2)
        assert time.monotonic() - t0 < 2.0
        with pytest.raises(LedgerError, match=r"ledger\.duckdb\.lock"):
            n_trials("fp-a", path, timeout_s=0.1)
    assert n_trials("fp-a", path) == 1  # the lock is released: the failed append left nothing


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from engine.outputs.ledger import Trial, ledger_append

    path, worker, n, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    start = Path(sys.argv[5])
    while not start.exists():  # all workers start appending at the same moment
        pass
    rows = [
        Trial.from_metrics("sweep_job", f"w{worker}-r{i}", "fp-c", {"sharpe": 1.0}, np.arange(5.0))
        for i in range(n)
    ]
    for i in range(0, n, batch):
        ledger_append(rows[i : i + batch] if batch > 1 else rows[i], path)
    """
)


@pytest.mark.slow
def test_concurrent_writers_lose_no_row(tmp_path: Path) -> None:
    """Four processes (three appending row by row, one in batches of 5) write into one ledger at once."""
    path, start = tmp_path / "ledger.duckdb", tmp_path / "start"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    plan = [(0, 25, 1), (1, 25, 1), (2, 25, 1), (3, 50, 5)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), str(w), str(n), str(b), str(start)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w, n, b in plan
    ]
    time.sleep(1.0)  # let every worker import and wait
    start.touch()
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    rows = ledger_read("fp-c", path)
    assert len(rows) == sum(n for _, n, _ in plan) == 125
    assert n_trials("fp-c", path) == 125
    assert {r["config_hash"] for r in rows} == {f"w{w}-r{i}" for w, n, _ in plan for i in range(n)}


def test_not_a_ledger_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.duckdb"
    path.write_text("not a database\n")
    with pytest.raises(LedgerError, match="could not be written"):
        ledger_append(_trial(0), path)
    with pytest.raises(LedgerError, match="could not be read"):
        n_trials("fp-a", path)


@pytest.mark.slow
def test_a_killed_lock_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    """The OS drops an fcntl lock when its process dies: a crashed writer blocks nobody."""
    path = tmp_path / "ledger.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from engine.outputs.ledger import _locked\n"
            "with _locked(Path(sys.argv[1]), exclusive=True, timeout_s=5):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(60)\n",
            str(path),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LedgerError, match="locked by another process"):
            ledger_append(_trial(0), path, timeout_s=0.1)
    finally:
        holder.kill()
        holder.communicate()  # reaps it and closes its stdout pipe
    assert ledger_append(_trial(0), path, timeout_s=5) == 1


def test_trial_from_run_dir_recovers_the_returns_summary(tmp_path: Path) -> None:
    import json

    from engine.outputs.ledger import trial_config_hash, trial_from_run_dir

    rets = np.random.default_rng(4).normal(0.001, 0.02, 300)
    equity = 1000.0 * np.cumprod(1 + rets)
    metrics = {**equity_metrics(equity, 1000.0, 300), "n_trades": 12}
    cfg = {"ranking": {"top_n": 10}, "exit_rules": {"sl_stop": 0.05}}
    run = tmp_path / "3"
    run.mkdir()
    (run / "manifest.json").write_text(
        json.dumps({"engine_version": ENGINE_VERSION, "config": cfg, "data": {"files": 2, "fingerprint": "abc"}})
    )
    (run / "metrics.json").write_text(json.dumps({"engine_version": ENGINE_VERSION, **metrics}))
    t = trial_from_run_dir(run, "sweep_job")
    expected = returns_summary(rets)
    assert t.kind == "sweep_job" and t.label == "3" and t.data_fingerprint == "abc"
    assert t.config_hash == trial_config_hash(cfg) and t.n_trades == 12 and t.sharpe == metrics["sharpe"]
    assert t.n_obs == expected["n_obs"]
    for key in ("ret_mean", "ret_std", "ret_skew", "ret_kurtosis"):
        assert getattr(t, key) == pytest.approx(expected[key], rel=1e-9)
    with pytest.raises(LedgerError, match="not a finished run"):
        trial_from_run_dir(tmp_path / "missing", "run")


def test_trial_config_hash_ignores_where_and_how_a_trial_ran() -> None:
    from engine.outputs.ledger import trial_config_hash

    base = {"task": "backtest", "quiet": False, "paths": {"output_dir": "outputs/runs/a"}, "exit_rules": {"sl": 0.05}}
    same = {**base, "task": "grid", "quiet": True, "paths": {"output_dir": "outputs/runs/b"}, "grid": {"sl": [1, 2]}}
    assert trial_config_hash(base) == trial_config_hash(same)
    assert config_hash(base) != config_hash(same)
    assert trial_config_hash(base) != trial_config_hash({**base, "exit_rules": {"sl": 0.1}})
