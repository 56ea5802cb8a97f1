"""Every command in README.md works exactly as written, offline.

README.md is parsed when the tests are collected: every shell command of its code blocks (indented
or fenced) and of its inline code spans that start with a program (``python -m benchmarks``,
``pip wheel ...``) is split at ``&&``/``||``/``;`` into single commands. Each one is either run
here exactly as written (``python -m engine ...``: the same argv through :func:`shlex.split`, with
``sys.executable`` for ``python``) or listed in :data:`EXCLUDED` with the reason it is not; a
command that is neither fails :func:`test_every_readme_command_is_run_or_excluded`, so a command
added to the README later is covered or explicitly excused.

The engine commands run in one temporary working directory (``lakehouse/`` and ``outputs/`` land
there; the synthetic lakehouse is generated once), with ``HOME`` set to a temporary home whose
``ohlcv/`` folder holds the user's own freqtrade-style files, so ``data.path=~/ohlcv`` resolves as
written. ``data=ccxt`` reaches the local Binance stand-in of ``tests/exchange_server.py`` through
``ENGINE_CCXT_API_URL`` (the default of ``data.api_url``, conf/data/ccxt.yaml), never the internet.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl
import pytest
import yaml
from exchange_server import ExchangeServer
from helpers import feather_write, five_minute_bars

from engine.core.units import DAY_MS, HOUR_MS
from engine.data.sources.synthetic import SyntheticSource

# one worker runs every command in order, in one workspace: task=wfo's trial count (and so its
# deflated Sharpe in metrics.json) counts the trials the earlier commands left in the workspace's ledger
pytestmark = pytest.mark.xdist_group("readme")

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CI_RUN = REPO / ".ci" / "run"
ENGINE = ("python", "-m", "engine")
# inline code spans are commands when they start with one of these programs
PROGRAMS = {"python", "python3", "pip", "pip3", "ruff", "mypy", "sudo", "apt-get"}


class Exclusion(NamedTuple):
    """Why a README command is not run by this module; ``ci``: .ci/run runs it exactly as written."""

    reason: str
    ci: bool = False


_VENV = "creates and activates the venv: .ci/run runs these set-up steps verbatim before the README's test command"
EXCLUDED: dict[str, Exclusion] = {
    "python3 -m venv .venv": Exclusion(_VENV, ci=True),
    ". .venv/bin/activate": Exclusion(_VENV, ci=True),
    "pip install -q -e '.[test]'": Exclusion(
        "installs from the network into the venv; .ci/run runs it verbatim and the tests run in that install", ci=True
    ),
    "pip install -q -e .": Exclusion(
        "installs from the network; .ci/run installs the same package with the test extra (pip install -q -e '.[test]'); "
        "the engine command of the same README line is run here"
    ),
    "python -m pytest -q -n auto": Exclusion(
        "the test suite itself (would recurse); .ci/run runs it verbatim", ci=True
    ),
    'python -m pytest -q -n auto -m "not slow"': Exclusion(
        "the test suite itself (would recurse): the fast subset of `python -m pytest -q -n auto`, which .ci/run runs"
    ),
    "ruff check": Exclusion("prose naming the lint step's `ruff check .` (above), which .ci/run runs verbatim"),
    "ruff check .": Exclusion("the lint step: .ci/run runs it verbatim before the tests", ci=True),
    "ruff format --check .": Exclusion("the lint step: .ci/run runs it verbatim before the tests", ci=True),
    "mypy engine": Exclusion("the lint step: .ci/run runs it verbatim before the tests", ci=True),
    "python -m benchmarks --quick": Exclusion("~5 min; .ci/run runs it verbatim after the tests", ci=True),
    "python -m benchmarks": Exclusion(
        "every performance figure at full size: far longer than a test (docs/PERFORMANCE.md); the same code runs "
        "at smaller sizes in `python -m benchmarks --quick`, which .ci/run runs"
    ),
    "sudo apt-get install chromium": Exclusion(
        "a system install: tests install nothing (.ci/run installs Chromium when it is missing)"
    ),
    "pip wheel --no-deps -w dist .": Exclusion(
        "writes dist/ into the checkout; tests/test_packaging.py builds the same wheel (pip wheel --no-deps) from "
        "a copy of the sources, installs it into a temporary folder and runs a backtest from an unrelated folder"
    ),
    "pip install dist/*.whl": Exclusion(
        "would replace the package of the environment running the tests; tests/test_packaging.py installs the "
        "built wheel into a temporary folder instead"
    ),
}


# ---- parsing --------------------------------------------------------------------------------------


def comment_strip(line: str) -> str:
    """``line`` without its shell comment: a ``#`` outside quotes at the start of a word."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands_split(line: str) -> list[str]:
    """The single commands of a shell line as written: split at ``&&``, ``||`` and ``;`` outside quotes."""
    text = comment_strip(line)
    out, quote, start, i = [], "", 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif text.startswith(("&&", "||"), i) or ch == ";":
            out.append(text[start:i])
            i += 1 if ch == ";" else 2
            start = i
            continue
        i += 1
    out.append(text[start:])
    return [c.strip() for c in out if c.strip()]


def _logical_lines(lines: list[str]) -> list[str]:
    """Join shell continuation lines (a trailing backslash)."""
    out: list[str] = []
    for line in lines:
        if out and out[-1].endswith("\\"):
            out[-1] = out[-1][:-1] + " " + line.strip()
        else:
            out.append(line.strip())
    return [line for line in out if line]


def readme_commands(text: str) -> list[str]:
    """Every single shell command of a Markdown text, in order of appearance, each once."""
    code: list[str] = []
    prose: list[str] = []
    fence: str | None = None
    fence_is_shell = False
    for line in text.splitlines():
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            elif fence_is_shell:
                code.append(line)
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            fence_is_shell = stripped[3:].strip().lower() in ("", "sh", "bash", "shell", "console", "zsh")
            continue
        if line.startswith(("    ", "\t")):
            code.append(line)
        else:
            prose.append(line)
    found: list[str] = []
    for line in _logical_lines(code):
        found.extend(commands_split(line))
    # inline code spans may wrap over a line break: join the prose first
    for span in re.findall(r"`([^`]+)`", " ".join(prose)):
        found.extend(c for c in commands_split(" ".join(span.split())) if c.split()[0] in PROGRAMS)
    return list(dict.fromkeys(found))


def _argv(command: str) -> tuple[str, ...]:
    return tuple(shlex.split(command))


def ci_commands() -> set[tuple[str, ...]]:
    """The argv of every single command .ci/run runs (its lines split like the README's)."""
    found: set[tuple[str, ...]] = set()
    for line in _logical_lines(CI_RUN.read_text().splitlines()):
        for command in commands_split(line):
            try:
                found.add(_argv(command))
            except ValueError:  # shell syntax shlex cannot read (none of the README's commands)
                continue
    return found


COMMANDS = readme_commands(README.read_text())
ENGINE_COMMANDS = [c for c in COMMANDS if _argv(c)[:3] == ENGINE]


# ---- every command is covered ---------------------------------------------------------------------


def test_readme_parser_reads_shell_lines() -> None:
    assert comment_strip("python -m engine x=1   # SL 5 % / the winners' bars") == "python -m engine x=1"
    assert comment_strip("echo 'a # b' c#d # e") == "echo 'a # b' c#d"
    assert commands_split("a && . b/c || d 'e && f' # g; h") == ["a", ". b/c", "d 'e && f'"]
    text = (
        "x\n\n    python -m engine a=1  # c\n    ruff check . && mypy engine\n\nsee (`pip wheel -w d\n.`) and `conf/`\n"
    )
    assert readme_commands(text) == ["python -m engine a=1", "ruff check .", "mypy engine", "pip wheel -w d ."]
    assert readme_commands("```sh\npython -m engine b=2\n```\n```yaml\nkey: 1\n```\n") == ["python -m engine b=2"]


def test_every_readme_command_is_run_or_excluded() -> None:
    # the README's "Use" block alone holds a dozen engine commands: a parser that found fewer is broken
    assert len(ENGINE_COMMANDS) >= 12, ENGINE_COMMANDS
    missing = [c for c in COMMANDS if c not in ENGINE_COMMANDS and c not in EXCLUDED]
    assert not missing, f"README commands neither run by this test nor excluded (with a reason) in EXCLUDED: {missing}"
    stale = [c for c in EXCLUDED if c not in COMMANDS]
    assert not stale, f"EXCLUDED lists commands the README no longer has: {stale}"
    ci = ci_commands()
    not_in_ci = [c for c, why in EXCLUDED.items() if why.ci and _argv(c) not in ci]
    assert not not_in_ci, f"excluded because .ci/run runs them, but .ci/run does not: {not_in_ci}"
    assert all(len(why.reason) > 20 for why in EXCLUDED.values())


def test_the_test_command_spreads_the_full_set_over_xdist_workers() -> None:
    """The README's test command runs the full set on pytest-xdist workers (-n auto), as .ci/run runs
    it; the test extra installs what that needs, and pytest's addopts keep each xdist_group together."""
    import tomllib

    tests = [c for c in COMMANDS if _argv(c)[:3] == ("python", "-m", "pytest") and "-m" not in _argv(c)[3:]]
    assert tests == ["python -m pytest -q -n auto"], tests
    assert _argv(tests[0]) in ci_commands()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extra = {re.split(r"[<>=\[ ]", req)[0] for req in project["project"]["optional-dependencies"]["test"]}
    assert {"pytest-xdist", "filelock"} <= extra
    assert "--dist loadgroup" in project["tool"]["pytest"]["ini_options"]["addopts"]


def test_ccxt_api_url_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.compose import config_compose
    from engine.data.sources.ccxt_source import CcxtSource
    from engine.outputs.rundir import json_dumps

    monkeypatch.delenv("ENGINE_CCXT_API_URL", raising=False)
    assert config_compose(["data=ccxt"])[0].data.api_url is None
    url = "http://user:secret@127.0.0.1:9/api/v3?apikey=abc"
    monkeypatch.setenv("ENGINE_CCXT_API_URL", url)
    cfg = config_compose(["data=ccxt"])[0]
    assert cfg.data.api_url == url
    dumped = json_dumps(cfg.model_dump(mode="json"))  # what manifest.json writes
    assert "secret" not in dumped and "abc" not in dumped
    assert '"api_url": "http://***@127.0.0.1:9/api/v3?apikey=***"' in dumped
    assert CcxtSource(cfg.data).identity()["api_host"] == "http://127.0.0.1:9"
    # the command line still wins over the environment
    assert config_compose(["data=ccxt", "data.api_url=http://mirror:8/x"])[0].data.api_url == "http://mirror:8/x"


# ---- the workspace: a working directory, a home with the user's files, the exchange ---------------

# the user's own files: 5m freqtrade feather files, BASE_USDT-5m.feather, in ~/ohlcv (more pairs than
# the profile's top 10; five months: enough for the daily profile's 60 days of history and weekly
# windows, and for the intraday profile's hourly ranking)
FILES_GEN = SyntheticSource(5, 12, "2023-01-01", "2023-05-31")
# the exchange serves the generator over the ccxt config's default dates, with few symbols
CCXT_GEN = SyntheticSource(3, 3, "2021-01-01", "2024-12-31")


@dataclass
class Workspace:
    cwd: Path
    home: Path
    env: dict[str, str]
    server: ExchangeServer
    files: dict[str, pl.DataFrame]  # the 5m bars written to ~/ohlcv, by symbol
    seconds: dict[str, float] = field(default_factory=dict)


def _freqtrade_folder(folder: Path) -> dict[str, pl.DataFrame]:
    folder.mkdir(parents=True)
    written = {}
    for symbol in FILES_GEN.symbols():
        bars = five_minute_bars(FILES_GEN.ohlcv_fetch(symbol, "1h", FILES_GEN.start_ms, FILES_GEN.end_ms))
        feather_write(bars, folder / f"{symbol.replace('/', '_')}-5m.feather")
        written[symbol] = bars
    return written


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("readme")
    cwd, home = root / "cwd", root / "home"
    cwd.mkdir()
    files = _freqtrade_folder(home / "ohlcv")
    with ExchangeServer(CCXT_GEN) as server:
        # credentials in the URL: the run must use them and never write them anywhere
        api_url = server.api_url.replace("http://", "http://reader:s3cr3t@")
        env = {**os.environ, "HOME": str(home), "ENGINE_CCXT_API_URL": api_url}
        ws = Workspace(cwd, home, env, server, files)
        yield ws
    for command, seconds in ws.seconds.items():
        print(f"{seconds:7.1f} s  {command}")


# ---- running one command and checking what it promises --------------------------------------------


def _dirs(pattern: str, cwd: Path) -> set[Path]:
    return set(cwd.glob(pattern))


def _argv_split(args: list[str]) -> tuple[bool, str | None, list[str]]:
    """(multirun, --cfg value, overrides) of the arguments after ``python -m engine``."""
    multirun, cfg, overrides = False, None, []
    it = iter(args)
    for a in it:
        if a in ("-m", "--multirun"):
            multirun = True
        elif a in ("--cfg", "-c"):
            cfg = next(it)
        elif a.startswith("-"):
            pytest.fail(f"README flag {a!r} is unknown to this test: teach test_readme_commands.py what it promises")
        else:
            overrides.append(a)
    return multirun, cfg, overrides


def _expected(overrides: list[str], ws: Workspace, printed: str | None = None) -> Any:
    """The validated config the command line describes, composed in process with the same HOME.

    With ``printed`` (the output of ``--cfg job``): that YAML resolved in the same environment and
    the composed config as a plain dict, to compare.
    """
    from omegaconf import OmegaConf

    from engine.compose import config_compose, tilde_quote

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(ws.home))
        mp.setenv("ENGINE_CCXT_API_URL", ws.env["ENGINE_CCXT_API_URL"])
        cfg, raw = config_compose([tilde_quote(o) for o in overrides])
        if printed is None:
            return cfg
        return OmegaConf.to_container(OmegaConf.create(printed), resolve=True), raw


def _config_matches(manifest: dict[str, Any], cfg: Any) -> None:
    """The run's manifest holds the configuration its command line composes (secrets redacted)."""
    from engine.outputs.rundir import json_dumps

    got = dict(manifest["config"])
    want = json.loads(json_dumps(cfg.model_dump(mode="json")))
    got.pop("paths")
    want.pop("paths")
    assert got == want


def readme_artefacts(text: str) -> tuple[str, ...]:
    """The files the README says every run writes: the backticked names of its "Each run writes" paragraph."""
    paragraph = text[text.index("Each run writes") :].split("\n\n", 1)[0].split("`task=wfo` adds", 1)[0]
    names = re.findall(r"`([\w.]+\.(?:yaml|json|parquet|jsonl|html|log))`", paragraph)
    return tuple(dict.fromkeys(names))


README_ARTEFACTS = readme_artefacts(README.read_text())


def test_the_readme_lists_what_a_run_writes() -> None:
    """The README's list is the engine's own (``engine.outputs.rundir.ARTEFACTS``, less the sweep job's
    params.json, task=wfo's wfo.parquet and the completion markers, named apart) plus the log."""
    from engine.outputs.rundir import ARTEFACTS, COMPLETE, ERROR

    apart = {"params.json", "wfo.parquet", "capacity.parquet", "capacity.json", COMPLETE, ERROR}  # own sentences
    assert set(README_ARTEFACTS) == (set(ARTEFACTS) - apart) | {"engine.log"}


def _complete(run: Path) -> dict[str, Any]:
    """The run directory is complete: ``_COMPLETE`` lists files that exist, no ``error.txt``."""
    assert (run / "_COMPLETE").is_file(), f"{run} has no _COMPLETE"
    assert not (run / "error.txt").exists(), (run / "error.txt").read_text()
    done = json.loads((run / "_COMPLETE").read_text())
    assert done["status"] == "complete"
    assert all((run / f).is_file() for f in done["files"])
    return done


def _backtest_checks(run: Path, cfg: Any) -> dict[str, Any]:
    """A run directory holds what the README promises, and ran the configuration of its command."""
    done = _complete(run)
    for name in README_ARTEFACTS:
        assert (run / name).is_file(), f"{run} lacks {name}"
        if name != "engine.log":
            assert name in done["files"]
    manifest = json.loads((run / "manifest.json").read_text())
    _config_matches(manifest, cfg)
    assert manifest["data"]["files"] > 0 and re.fullmatch(r"[0-9a-f]{64}", manifest["data"]["fingerprint"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_windows"] > 0 and metrics["n_returns"] > 0
    assert math.isfinite(metrics["total_return"]) and metrics["final_equity"] > 0
    stops = cfg.exit_rules is not None and cfg.exit_rules.active
    assert metrics["mode"] == ("exit_rules" if stops else "rebalance")
    finest = min(cfg.backtest.timeframes, key=lambda tf: _ms(tf), default=cfg.backtest.interval)
    assert metrics["interval"] == finest and metrics["base_interval"] == cfg.backtest.interval
    assert metrics["periods_per_year"] == 365 * 86_400_000 / _ms(cfg.backtest.interval)
    winners = pl.read_parquet(run / "winners.parquet")
    held = winners.filter(pl.col("weight").is_not_null()).group_by("window").len()
    side, bottom = cfg.portfolio.side, cfg.ranking.bottom_n or cfg.ranking.top_n
    n_held = {"long": cfg.ranking.top_n, "short": bottom, "long_short": cfg.ranking.top_n + bottom}[side]
    assert held.height > 0 and held.get_column("len").max() <= n_held
    orders = pl.read_parquet(run / "orders.parquet")
    assert orders.height == metrics["n_orders"] > 0
    if cfg.costs.fees == 0:
        assert orders.get_column("fees").abs().max() == 0.0
    else:
        assert orders.get_column("fees").min() > 0
    trades = pl.read_parquet(run / "trades.parquet")
    assert trades.height == metrics["n_trades"]
    return metrics


def _ms(interval: str) -> int:
    from engine.core.units import interval_ms

    return interval_ms(interval)


INGESTED = re.compile(
    r"^ingested (\d+) daily bars for (\d+) symbols \((\d{4}-\d\d-\d\d) 00:00 \.\. (\d{4}-\d\d-\d\d) 00:00\) into (\S+)$",
    re.MULTILINE,
)


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def _ccxt_ingest_checks(out: str, ws: Workspace) -> None:
    """The bars came from the local exchange server, all of them, and are the generator's."""
    from engine.data.lakehouse import namespaces, store_open

    klines = ws.server.klines()
    symbols = CCXT_GEN.symbols()
    # and the delisted OLD/USDT, asked once: the exchange serves no history of it, so it is left out
    assert {r.params["symbol"] for r in klines} == {s.replace("/", "") for s in symbols} | {"OLDUSDT"}
    assert {r.params["interval"] for r in klines} == {"1d"}
    assert any(r.path.endswith("/exchangeInfo") for r in ws.server.log)
    daily = {s: CCXT_GEN.ohlcv_fetch(s, "1d", CCXT_GEN.start_ms, CCXT_GEN.end_ms) for s in symbols}
    m = INGESTED.search(out)
    assert m is not None, out
    # ccxt's defaults (data.start 2021-01-01 .. data.end 2024-12-31) are the server's whole range
    assert m.groups()[:4] == (str(sum(f.height for f in daily.values())), "3", "2021-01-01", "2025-01-01")
    assert len(klines) == sum(-(-f.height // 1000) for f in daily.values()) + 1  # 1000 bars a page
    (lake,) = [name for name, ident in namespaces(ws.cwd / "lakehouse") if ident and ident["source"] == "ccxt"]
    ident = json.loads((ws.cwd / "lakehouse" / lake / "_identity.json").read_text())
    assert ident == {"source": "ccxt", "exchange": "binance", "api_host": ws.server.url, "quote": "USDT"}
    store = store_open(ws.cwd / "lakehouse", ident)
    for s, bars in daily.items():
        assert store.read("bars", "1d", s).equals(bars)


def _files_days(ws: Workspace) -> dict[str, int]:
    """Complete days (288 five-minute bars) per symbol of ~/ohlcv, counted here, not by the engine."""
    return {
        s: f.group_by(pl.col("timestamp").dt.truncate("1d")).len().filter(pl.col("len") == 288).height
        for s, f in ws.files.items()
    }


def _files_span(ws: Workspace) -> tuple[int, int]:
    first = min(f.get_column("timestamp").dt.epoch("ms").min() for f in ws.files.values())
    last = max(f.get_column("timestamp").dt.epoch("ms").max() for f in ws.files.values())
    return int(first), int(last)


def _files_ingest_checks(out: str, ws: Workspace) -> None:
    m = INGESTED.search(out)
    assert m is not None, out
    first, last = _files_span(ws)
    n, k, start, end, where = m.groups()
    if "nothing new" not in out:
        assert int(n) == sum(_files_days(ws).values())
    assert (int(k), start, end) == (len(ws.files), _day(first), _day(last // DAY_MS * DAY_MS + DAY_MS))
    ident = json.loads((ws.cwd / where / "_identity.json").read_text())
    assert ident == {"source": "files", "path": str((ws.home / "ohlcv").resolve()), "quote": "USDT"}


def _files_run_checks(run: Path, metrics: dict[str, Any], ws: Workspace) -> None:
    """A run on ~/ohlcv traded the files' symbols inside the files' range."""
    from datetime import datetime

    first, last = _files_span(ws)
    start = datetime.fromisoformat(metrics["start"]).timestamp() * 1000
    end = datetime.fromisoformat(metrics["end"]).timestamp() * 1000
    assert first <= start < end <= last + HOUR_MS
    winners = pl.read_parquet(run / "winners.parquet")
    assert set(winners.get_column("symbol").to_list()) <= set(ws.files)
    # the data read: the base bars of every file's pair, and the finer bars of the pairs traded
    manifest = json.loads((run / "manifest.json").read_text())
    traded = pl.read_parquet(run / "trades.parquet").get_column("symbol").n_unique()
    fine = traded if manifest["config"]["backtest"]["timeframes"] else 0
    assert manifest["data"]["files"] == len(ws.files) + fine


# ---- behaviour unchanged: the artefacts of every command against the recorded golden digests --------

GOLDEN = REPO / "tests" / "golden" / "readme_artefacts.json"
# the artefacts whose numbers a refactor must not move (the run's own files and a grid's combinations)
GOLDEN_NAMES = ("metrics.json", "equity.parquet", "orders.parquet", "trades.parquet", "winners.parquet", "wfo.parquet")


# metrics.json keys added after the golden record, each a block of its own that the digest leaves out
GOLDEN_NEW_KEYS = ("survivorship",)


def metrics_bytes_golden(path: Path) -> bytes:
    """metrics.json's bytes as they were before the blocks of :data:`GOLDEN_NEW_KEYS` were added.

    The ``survivorship`` block (the survivors-only audit, on by default) was added to every run's
    metrics.json after the golden digests were recorded. The digest is taken over the file with that
    top-level key removed, and only that key: the rest is written again by the engine's own
    serialiser (:func:`engine.outputs.rundir.json_dumps`, sorted keys, indent 2, then a newline), which
    is checked to give back the file's exact bytes when nothing is removed. Every other value of
    metrics.json is so still compared byte for byte with the recorded golden digests, which are not
    re-recorded.
    """
    from engine.outputs.rundir import json_dumps

    raw = path.read_bytes()
    obj = json.loads(raw)
    if not any(k in obj for k in GOLDEN_NEW_KEYS):
        return raw
    assert (json_dumps(obj) + "\n").encode() == raw, f"{path}: json_dumps does not give back the file's bytes"
    return (json_dumps({k: v for k, v in obj.items() if k not in GOLDEN_NEW_KEYS}) + "\n").encode()


def artefact_digests(root: Path) -> dict[str, str]:
    """sha256 of every golden artefact below ``root``, by path relative to it.

    metrics.json by its bytes, less the blocks added since the record (:func:`metrics_bytes_golden`);
    a parquet file by its content (schema, then every value by ``repr``, exact for floats), so a
    newer parquet writer that lays out the same values differently still matches, while any value
    that moves by one ulp does not.
    """
    import hashlib

    out: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.name in GOLDEN_NAMES):
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            text = repr(list(frame.schema.items())) + "\n" + "\n".join(repr(c.to_list()) for c in frame.get_columns())
            data = text.encode()
        else:
            data = metrics_bytes_golden(path)
        out[path.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


def golden_check(command: str, roots: list[Path]) -> None:
    """The command's artefacts equal the recorded ones; ``ENGINE_GOLDEN_RECORD=1`` records them instead.

    The record is made once, before a change that must not move a number, and committed: a test that
    passes only after re-recording is a change of behaviour, to be said in its commit. metrics.json's
    ``survivorship`` block (added after the record, on by default) is left out of its digest and only
    it (:func:`metrics_bytes_golden`): the recorded digests were not re-recorded and still match.
    """
    import fcntl

    got: dict[str, str] = {}
    for i, root in enumerate(roots):
        got.update({f"{i}/{k}": v for k, v in artefact_digests(root).items()})
    if not got:
        return
    if os.environ.get("ENGINE_GOLDEN_RECORD") == "1":  # parallel workers record one at a time
        GOLDEN.parent.mkdir(exist_ok=True)
        with open(GOLDEN.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
            golden[command] = got
            GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        return
    golden = json.loads(GOLDEN.read_text())
    assert command in golden, f"no golden artefacts for {command!r}: record them with ENGINE_GOLDEN_RECORD=1"
    moved = sorted(k for k in golden[command].keys() | got.keys() if golden[command].get(k) != got.get(k))
    assert not moved, f"{command}: artefacts differ from the recorded golden ones: {moved}"


@pytest.mark.slow
@pytest.mark.parametrize("command", ENGINE_COMMANDS)
def test_readme_command(command: str, workspace: Workspace) -> None:
    ws = workspace
    argv = shlex.split(command)
    multirun, cfg_flag, overrides = _argv_split(argv[3:])
    runs_before, sweeps_before = _dirs("outputs/runs/*/*", ws.cwd), _dirs("outputs/sweeps/*/*", ws.cwd)
    ws.server.clear()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *argv[1:]], cwd=ws.cwd, env=ws.env, capture_output=True, text=True, timeout=900
    )
    ws.seconds[command] = time.perf_counter() - t0
    assert proc.returncode == 0, f"{command} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    runs = sorted(_dirs("outputs/runs/*/*", ws.cwd) - runs_before)
    sweeps = sorted(_dirs("outputs/sweeps/*/*", ws.cwd) - sweeps_before)
    golden_check(command, runs + sweeps)
    secret = ws.env["ENGINE_CCXT_API_URL"].split("//")[1].split("@")[0]
    assert secret not in proc.stdout + proc.stderr

    if cfg_flag is not None:  # --cfg job: print the composed config, run nothing
        assert cfg_flag == "job"
        assert runs == [] and sweeps == []
        assert isinstance(yaml.safe_load(proc.stdout), dict)
        printed, raw = _expected(overrides, ws, proc.stdout)
        assert printed == raw
        return

    if multirun:  # one job per combination, each a complete run, and a leaderboard
        from engine.compose import overrides_expand

        combos = overrides_expand(overrides)
        assert runs == [] and len(sweeps) == 1
        sweep = sweeps[0]
        jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name))
        assert [j.name for j in jobs] == [str(i) for i in range(len(combos))]
        for job, combo in zip(jobs, combos, strict=True):
            _backtest_checks(job, _expected(combo, ws))
        board = pl.read_csv(sweep / "leaderboard.csv")
        assert board.height == len(combos)
        assert sorted(board.get_column("job").to_list()) == list(range(len(combos)))
        return

    assert sweeps == [] and len(runs) == 1, (runs, sweeps)
    run = runs[0]
    cfg = _expected(overrides, ws)
    if cfg.task == "ingest":
        _complete(run)
        if cfg.data.source == "ccxt":
            _ccxt_ingest_checks(proc.stdout, ws)
        elif cfg.data.source == "files":
            _files_ingest_checks(proc.stdout, ws)
        else:
            assert INGESTED.search(proc.stdout), proc.stdout
    elif cfg.task == "grid":
        from engine.config.exit_rules import grid_combos

        n = len(grid_combos(cfg))
        assert f"simulated {n} exit-rule combinations in one walk-forward" in proc.stdout
        _complete(run)
        combos = sorted((run / "combos").glob("[0-9][0-9][0-9]"))
        assert [c.name for c in combos] == [f"{i:03d}" for i in range(n)]
        for c in combos:
            metrics = json.loads((c / "metrics.json").read_text())
            assert metrics["n_windows"] > 0 and math.isfinite(metrics["total_return"])
        assert pl.read_csv(run / "combos" / "leaderboard.csv").height == n
        manifest = json.loads((run / "manifest.json").read_text())
        _config_matches(manifest, cfg)
    elif cfg.task == "wfo":
        from engine.config.exit_rules import grid_combos

        metrics = _backtest_checks(run, cfg)
        wfo = pl.read_parquet(run / "wfo.parquet")
        assert "wfo.parquet" in json.loads((run / "_COMPLETE").read_text())["files"]
        assert wfo.filter(pl.col("phase") == "train").height == cfg.wfo.train_windows
        oos = wfo.filter(pl.col("phase") == "oos")
        assert oos.height == metrics["n_windows"]
        assert oos.get_column("combo").is_between(0, len(grid_combos(cfg)) - 1).all()
        assert (oos.get_column("n_combinations") == len(grid_combos(cfg))).all()
    elif cfg.task == "capacity":  # the run's own artefacts and one capacity row per capital
        _backtest_checks(run, cfg)
        capacity = pl.read_parquet(run / "capacity.parquet")
        assert capacity.get_column("capital").to_list() == cfg.execution.capitals()
        assert {"capacity.parquet", "capacity.json"} <= set(json.loads((run / "_COMPLETE").read_text())["files"])
        assert "Sharpe at half the smallest capital's" in proc.stdout
    else:
        assert cfg.task == "backtest"
        metrics = _backtest_checks(run, cfg)
        assert f"artefacts: {run}" in proc.stdout
        if cfg.data.source == "files":
            _files_run_checks(run, metrics, ws)
    # nothing the command wrote holds the credentials of the exchange URL in its environment
    written = [p for d in runs for p in d.rglob("*")] + list(ws.cwd.glob("lakehouse/*/_identity.json"))
    for path in written:
        if path.is_file() and path.suffix in (".json", ".yaml", ".log", ".jsonl", ".txt", ".html", ".md", ".csv"):
            assert secret not in path.read_text(errors="replace"), path


# profiles the README runs only on other data: run here on the built-in data, for their golden artefacts
PROFILES_BUILT_IN = sorted(
    f"+profile={p.stem}"
    for p in (REPO / "conf" / "profile").glob("*.yaml")
    if not any(_argv(c)[3:] == (f"+profile={p.stem}",) for c in ENGINE_COMMANDS)
)


@pytest.mark.slow
@pytest.mark.parametrize("profile", PROFILES_BUILT_IN)
def test_profile_on_built_in_data(profile: str, workspace: Workspace) -> None:
    ws = workspace
    before = _dirs("outputs/runs/*/*", ws.cwd)
    proc = subprocess.run(
        [sys.executable, "-m", "engine", profile], cwd=ws.cwd, env=ws.env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{profile} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    (run,) = sorted(_dirs("outputs/runs/*/*", ws.cwd) - before)
    _backtest_checks(run, _expected([profile], ws))
    golden_check(f"python -m engine {profile}", [run])
