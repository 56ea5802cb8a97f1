"""The command line is thin: a multirun's exit code comes from the sweep callback's outcome, not
module state; Hydra gets the arguments it was validated with, and ``sys.argv`` is left as it was."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from helpers import SMALL, engine_cli
from omegaconf import OmegaConf

import engine.cli as cli
from engine.config import ENGINE_VERSION
from engine.core.errors import SweepJobsFailed
from engine.tasks.multirun import SweepSummaryCallback, sweep_outcome

ENGINE = Path(__file__).resolve().parent.parent / "engine"


def _sweep(root: Path, done: int, failed: int) -> Path:
    for i in range(done + failed):
        job = root / str(i)
        job.mkdir(parents=True)
        (job / "params.json").write_text(json.dumps({"exit_rules.sl_stop": str(0.01 * (i + 1))}))
        if i < done:
            metrics = {"engine_version": ENGINE_VERSION, "sharpe": 0.5 + i, "total_return": 0.1, "n_returns": 100}
            (job / "metrics.json").write_text(json.dumps(metrics))
        else:
            (job / "error.txt").write_text("no walk-forward window fits the data\n")
    return root


def test_the_callback_gives_the_sweeps_outcome(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = _sweep(tmp_path / "ok", done=2, failed=0)
    bad = _sweep(tmp_path / "bad", done=2, failed=1)
    assert sweep_outcome(ok) is None
    outcome = sweep_outcome(bad)
    assert outcome is not None and (outcome.failed, outcome.total, outcome.exit_code) == (1, 3, 1)
    SweepSummaryCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(ok)}}}))
    with pytest.raises(SweepJobsFailed) as raised:  # after the summary is printed
        SweepSummaryCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(bad)}}}))
    assert str(raised.value) == f"1 of 3 sweep jobs failed (reasons in each job's error.txt, summary in {bad})"
    assert "sweep summary: 2 trials, 1 failed" in capsys.readouterr().out
    # Hydra's callback runner turns an Exception into a warning: the outcome must not be one
    assert not issubclass(SweepJobsFailed, Exception)


def test_a_summary_that_fails_is_said_and_the_outcome_still_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _sweep(tmp_path / "bad", done=1, failed=1)
    with pytest.raises(SweepJobsFailed):
        SweepSummaryCallback(metric="no_such_metric").on_multirun_end(
            OmegaConf.create({"hydra": {"sweep": {"dir": str(bad)}}})
        )
    assert "sweep summary skipped: unknown metric 'no_such_metric'" in capsys.readouterr().err


def test_the_command_line_maps_the_outcome_to_exit_code_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[list[str]] = []

    def hydra_run() -> None:
        seen.append(sys.argv[1:])
        raise SweepJobsFailed("outputs/sweeps/x", 2, 5)

    monkeypatch.setattr(cli, "_hydra_entry", hydra_run)
    monkeypatch.setattr(cli, "overrides_validate", lambda overrides, multirun: 1)
    monkeypatch.setattr(cli, "output_folder_check", lambda overrides, multirun: None)
    before = sys.argv[:]
    with pytest.raises(SystemExit) as exited:
        cli.main(["-m", "data.path=~/ohlcv", "exit_rules.sl_stop=0.02,0.05"])
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip() == (
        "error: 2 of 5 sweep jobs failed (reasons in each job's error.txt, summary in outputs/sweeps/x)"
    )
    # Hydra parsed the validated arguments (a bare ~ quoted for its grammar); sys.argv is restored
    assert seen == [["-m", "data.path='~/ohlcv'", "exit_rules.sl_stop=0.02,0.05"]]
    assert sys.argv == before


def test_no_module_state_decides_an_exit_code() -> None:
    for path in ENGINE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s+global ", text, re.MULTILINE), path
        assert "LAST_SWEEP" not in text, path
    argv_writes = [
        p.name for p in ENGINE.rglob("*.py") if "sys.argv[1:] = " in p.read_text() and p.name != "compose.py"
    ]
    assert not argv_writes  # only compose.hydra_argv hands Hydra its arguments, scoped


def test_the_command_line_is_short() -> None:
    assert len((ENGINE / "cli.py").read_text().splitlines()) < 150


def test_a_run_with_an_output_dir_leaves_nothing_under_outputs(lakehouse_dir: Path, tmp_path: Path) -> None:
    """paths.output_dir set: Hydra's own files (.hydra/, engine.log) go there too, no stray outputs/runs/ folder.

    Given as ``~/my run`` (a home folder, a space): the folder the setting names, no literal ``~`` folder.
    """
    out, home = tmp_path / "home" / "my run", {"HOME": str(tmp_path / "home")}
    args = [*SMALL, f"paths.lakehouse_dir={lakehouse_dir}", "paths.output_dir=~/my run", "paths.ledger=null"]
    proc = engine_cli(args, tmp_path, env=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "outputs").exists(), sorted(str(p) for p in (tmp_path / "outputs").rglob("*"))
    assert not (tmp_path / "~").exists()
    assert (out / ".hydra" / "config.yaml").is_file()
    assert "backtest run into" in (out / "engine.log").read_text()
    assert {"metrics.json", "report.html", "_COMPLETE"} <= {p.name for p in out.iterdir()}
    # a second run into the same folder replaces the first (its Hydra files are not a stranger's)
    again = engine_cli(args, tmp_path, env=home)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not (tmp_path / "outputs").exists()
    # without paths.output_dir, Hydra's run folder is the run directory, as before
    plain_run = engine_cli([*SMALL, f"paths.lakehouse_dir={lakehouse_dir}", "paths.ledger=null"], tmp_path)
    assert plain_run.returncode == 0, plain_run.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("*/*")
    assert {".hydra", "engine.log", "metrics.json", "_COMPLETE"} <= {p.name for p in run_dir.iterdir()}
