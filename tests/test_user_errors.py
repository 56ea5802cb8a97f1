"""Every user error is one line on stderr, exit code 2, no traceback, and names the key and value."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import engine_cli

from engine.cli import main
from engine.core.errors import DataError, EngineError
from engine.outputs.rundir import COMPLETE, json_dumps, redact
from engine.tasks import artefact_errors, data_errors

SMALL = ["data.n_symbols=10", "data.start=2021-01-01", "data.end=2021-06-30", "quiet=true"]


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "engine.config" not in lines[0] and "Value error" not in lines[0]
    return lines[0]


def config_error_line(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run ``python -m engine``'s ``main`` in process on the small profile plus ``args``; return its one error line.

    Exit 2, one ``error:`` line, no traceback (:func:`_one_line`); run in ``tmp_path``.
    """
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["+profile=crypto_rating", *SMALL, *args])
    out, err = capsys.readouterr()
    return _one_line(subprocess.CompletedProcess([], int(str(info.value.code)), out, err))


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["=0.1"], ["'=0.1'", "key before '=' is missing"]),
        (["backtest.hold_days=100000000"], ["backtest.hold_days=100000000", "<= 10000"]),
        (["ranking.min_history_days=100000000"], ["ranking.min_history_days=100000000", "<= 10000"]),
        (["exit_rules.max_holding=99999999999w"], ["exit_rules.max_holding='99999999999w'", "100 years"]),
        (["backtest.init_cash=inf"], ["backtest.init_cash=inf", "finite"]),
        (["backtest.init_cash=1e-300"], ["backtest.init_cash=1e-300", ">= 1.0"]),
        (["ranking.weights={momentum:nan,vol_adj_momentum:0.5}"], ["ranking.weights.momentum=nan", "finite"]),
        (["exit_rules.tp_stop=inf"], ["exit_rules.tp_stop=inf", "finite"]),
        (["ranking.min_quote_volume=inf"], ["ranking.min_quote_volume=inf", "finite"]),
        (["ranking.min_dollar_volume=inf"], ["min_quote_volume=inf", "finite"]),
        (
            ["backtest.start=2021-05-01", "backtest.end=2021-04-01"],
            ["backtest.start=2021-05-01 is after backtest.end=2021-04-01"],
        ),
        (
            ["portfolio=inverse_vol", "portfolio.vol_days=400"],
            ["portfolio.vol_days=400", "ranking.min_history='60d'"],
        ),
        (["ranking.min_history_days=20"], ["ranking.min_history_days=20", ">= 31"]),
        (["hydra.run.dirr=x"], ["hydra.run.dirr"]),
        (["-r", "ranking.top_nn=3"], ["ranking.top_nn"]),
        (["--run", "hydra.job.chdirr=true"], ["hydra.job.chdirr"]),
        (["data.source=foo"], ["data.source='foo'", "'synthetic', 'ccxt', 'files'"]),
        (["ranking.weights={foo:1}"], ["ranking.weights={foo:1}", "momentum, vol_adj_momentum"]),
        (["grid.sl_stop=[inf]"], ["grid.sl_stop", "finite"]),
        (["exit_rules.tp_stop=1e300"], ["exit_rules.tp_stop=1e+300", "above 1000"]),
    ],
)
def test_config_error_is_one_line(
    args: list[str],
    needles: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In process (``main`` is what ``python -m engine`` runs; test_cli_errors_in_a_subprocess runs a few for real)."""
    line = config_error_line(args, tmp_path, monkeypatch, capsys)
    for needle in needles:
        assert needle in line
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("args", [["=0.1"], ["backtest.init_cash=inf"], ["-r", "hydra.run.dirr=x"]])
def test_cli_errors_in_a_subprocess(args: list[str], tmp_path: Path) -> None:
    _one_line(engine_cli(["+profile=crypto_rating", *SMALL, *args], tmp_path))
    assert not (tmp_path / "outputs").exists()


def test_output_path_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    line = _one_line(engine_cli([*SMALL, f"hydra.run.dir={tmp_path / 'taken' / 'run'}"], tmp_path))
    assert "is a file, not a folder" in line and "(hydra.run.dir)" in line
    line = _one_line(engine_cli([*SMALL, f"paths.output_dir={tmp_path / 'taken'}"], tmp_path))
    assert "paths.output_dir" in line
    line = _one_line(engine_cli([*SMALL, f"paths.lakehouse_dir={tmp_path / 'taken'}"], tmp_path))
    assert "(paths.lakehouse_dir)" in line and "is a file, not a folder" in line


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc (a folder no one can create in)")
def test_lakehouse_that_cannot_be_created_is_one_line_before_the_run(tmp_path: Path) -> None:
    """A lakehouse folder no one can create: one line naming the setting, no run folder left behind
    (it was read as unreadable data, with the fix "delete the file it names", after the run folder was made)."""
    run = tmp_path / "run"
    proc = engine_cli([*SMALL, "paths.lakehouse_dir=/proc/qe-no-such/lake", f"hydra.run.dir={run}"], tmp_path)
    line = _one_line(proc)
    assert line.startswith("error: the folder /proc/qe-no-such/lake (paths.lakehouse_dir) cannot be created (")
    assert "set paths.lakehouse_dir to a folder you can write" in line and "delete" not in line
    assert not run.exists()


def test_lakehouse_folder_is_created_before_the_run(tmp_path: Path) -> None:
    from engine.compose import output_folder_check

    lake = tmp_path / "a" / "b" / "lake"
    output_folder_check([f"paths.lakehouse_dir={lake}", f"hydra.run.dir={tmp_path / 'run'}"], multirun=False)
    assert lake.is_dir() and not any(lake.iterdir())
    output_folder_check([f"paths.lakehouse_dir={lake}"], multirun=False)  # an existing one: left as it is
    swept = f"{tmp_path / 'x'},{tmp_path / 'y'}"
    output_folder_check([f"paths.lakehouse_dir={swept}", f"hydra.sweep.dir={tmp_path / 'sweep'}"], multirun=True)
    assert not Path(swept).exists() and not (tmp_path / "x").exists()  # a sweep's values are not one folder


def test_unwritable_artefact_folder_is_one_engine_error(tmp_path: Path) -> None:
    def deny() -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "run" / "metrics.json"))

    with (
        pytest.raises(EngineError, match=r"cannot write the run's artefacts into .*Permission denied"),
        artefact_errors(tmp_path / "run"),
    ):
        deny()


def test_lakehouse_permission_error_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info, data_errors(str(tmp_path), "files"):
        raise PermissionError(13, "Permission denied", str(tmp_path / "bars" / "x.parquet"))
    assert "permission denied" in str(info.value) and "delete" not in str(info.value)
    with pytest.raises(DataError, match="task=ingest data=files"), data_errors(str(tmp_path), "files"):
        raise OSError("corrupt footer in x.parquet")


def test_large_sweep_validates_each_value_once(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    proc = engine_cli(["-m", "+profile=crypto_rating", *SMALL, "ranking.top_n=range(0,5000)"], tmp_path)
    assert time.perf_counter() - t0 < 120
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "validating 5000 swept values of ranking.top_n before the sweep starts"
    # 0 is out of range; 11 .. 4999 exceed the universe of data.n_symbols=10 (engine/data/precheck.py)
    assert lines[1].startswith(
        "error: 4990 of 5000 sweep values checked are invalid, e.g. invalid config value ranking.top_n=0"
    )
    assert not (tmp_path / "outputs").exists()


def test_redact() -> None:
    assert redact("http://alice:pw@host:8080/x?apikey=SECRET&a=1") == "http://***@host:8080/x?apikey=***&a=1"
    assert redact("https://host/api?token=abc") == "https://host/api?token=***"
    assert redact("https://api.binance.com/api/v3") == "https://api.binance.com/api/v3"


def test_strict_json() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        json_dumps({"x": float("inf")})
    assert json.loads(json_dumps({"u": "http://a:b@h"})) == {"u": "http://***@h"}


@pytest.mark.slow
def test_log_handlers_redact_message_arguments_and_exception_text() -> None:
    """Once installed, the filter redacts whatever a call site logs: %-arguments and a traceback."""
    import io
    import logging

    from engine.outputs.rundir import log_redaction_install

    stream = io.StringIO()
    logger = logging.getLogger("test_redaction")
    logger.propagate = False
    logger.setLevel(logging.INFO)  # whatever level an earlier test left on the root logger
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    try:
        log_redaction_install(logger)
        log_redaction_install(logger)  # idempotent: one filter per handler
        assert len(handler.filters) == 1
        url = "http://alice:pw1@host/x?apikey=K3Y"
        logger.warning("fetch %s failed", url)
        try:
            raise ValueError(f"GET {url}")
        except ValueError:
            logger.exception("retrying %s", "http://bob:pw2@h/y")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "fetch http://***@host/x?apikey=*** failed" in text
    assert "retrying http://***@h/y" in text
    assert "ValueError: GET http://***@host/x?apikey=***" in text  # the traceback's last line
    for secret in ("pw1", "pw2", "K3Y", "alice", "bob"):
        assert secret not in text


def test_credentials_are_redacted_everywhere(tmp_path: Path) -> None:
    url = "http://alice:s3cretpw@127.0.0.1:9/api?apikey=TOPSECRET&x=1"
    proc = engine_cli(
        [
            "task=ingest",
            "data=ccxt",
            f'data.api_url="{url}"',
            "data.symbols=[BTC/USDT]",
            "data.max_retries=0",
            "data.timeout_ms=500",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    line = _one_line(proc)
    assert "http://***@127.0.0.1:9/api?apikey=***" in line
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert {"error.txt", "params.json", "config.yaml", "hydra.yaml", "overrides.yaml"} <= {p.name for p in written}
    for text in [proc.stdout, proc.stderr, *(p.read_text() for p in written)]:
        assert "s3cretpw" not in text and "TOPSECRET" not in text


@pytest.mark.slow
def test_reused_run_dir_and_completeness_mark(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok = engine_cli([*SMALL, f"hydra.run.dir={run}"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((run / COMPLETE).read_text())["status"] == "complete"
    log = (run / "engine.log").read_text()
    assert "stage simulation" in log and "artefacts written" in log
    # a failed run in the same folder: no stale results, no completeness mark, the reason in error.txt
    bad = engine_cli([*SMALL, "backtest.start=2030-01-01", f"hydra.run.dir={run}"], tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert (run / "error.txt").is_file()
    assert not (run / COMPLETE).exists() and not (run / "metrics.json").exists()
    assert "ERROR" in (run / "engine.log").read_text()
    # and a good run after it leaves no stale error.txt
    again = engine_cli([*SMALL, f"hydra.run.dir={run}"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert not (run / "error.txt").exists() and (run / COMPLETE).is_file()
    texts = [(run / n).read_text() for n in ("manifest.json", "metrics.json", "params.json", COMPLETE)]
    for text in [*texts, *(run / "audit.jsonl").read_text().splitlines()]:
        json.loads(text, parse_constant=_no_constant)


def _no_constant(name: str) -> None:
    pytest.fail(f"bare {name} in a JSON artefact")


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to run as an unprivileged user"
)
def test_unwritable_working_folder_is_one_line(tmp_path: Path) -> None:
    """Run as nobody from a folder it cannot write: the default run folder is refused up front."""
    tmp_path.chmod(0o755)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    env = {**os.environ, "HOME": str(tmp_path), "CI": "1"}
    probe = subprocess.run([*nobody, "-c", "import engine"], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    if probe.returncode != 0:  # e.g. a checkout or venv under a 0700 folder such as mktemp -d makes
        pytest.skip("user 65534 cannot import this install (a parent folder is not readable by others)")
    cmd = [*nobody, "-m", "engine", *SMALL]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    line = _one_line(proc)
    assert "cannot be written: permission denied" in line and "hydra.run.dir" in line


def test_a_run_killed_while_writing_has_no_completeness_mark(
    lakehouse_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report is written after the other artefacts: dying there leaves metrics.json without _COMPLETE."""
    from helpers import small_config

    import engine.outputs.report
    from engine.tasks import run_backtest

    out = tmp_path / "run"
    out.mkdir()
    (out / COMPLETE).write_text("{}")  # a previous run's mark in a reused folder
    (out / "error.txt").write_text("stale\n")

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.outputs.report, "report_write", killed)
    with pytest.raises(KeyboardInterrupt):
        run_backtest(small_config(lakehouse_dir, out, "+profile=crypto_rating"))
    assert (out / "metrics.json").is_file()
    assert not (out / COMPLETE).exists() and not (out / "error.txt").exists()
