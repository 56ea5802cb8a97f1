"""Ctrl-C (SIGINT) during a run: one line, exit code 130, no traceback; the folder can be run into again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import engine.cli
from engine.cli import INTERRUPTED, main
from engine.outputs.rundir import COMPLETE


def test_an_interrupt_inside_the_job_is_one_line_and_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.cli, "_hydra_entry", interrupted)
    with pytest.raises(SystemExit) as done:
        main([f"paths.output_dir={tmp_path / 'out'}"])
    assert done.value.code == 130
    err = capsys.readouterr().err
    assert err == f"error: {INTERRUPTED}\n"


@pytest.mark.slow
def test_sigint_during_a_real_run_then_the_same_command_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "engine",
        "+profile=crypto_rating_long_short",
        "data.n_symbols=30",
        "quiet=true",
        f"paths.output_dir={out}",
        "paths.ledger=null",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "engine.log").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # inside the run (data generation, ranking or simulation)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be interrupted")
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the signal came after the run had finished")
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == f"error: {INTERRUPTED}"
    assert not (out / COMPLETE).exists()
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / COMPLETE).is_file()
