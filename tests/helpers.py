"""Test helpers: the real Hydra config, composed and shrunk to a small universe."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine.compose import config_compose
from engine.config import RunConfig, config_validate

SMALL = [
    "data.n_symbols=30",
    "data.start=2021-01-01",
    "data.end=2021-12-31",
    "ranking.top_n=5",
    "quiet=true",
]


def compose_raw(*overrides: str) -> dict[str, Any]:
    """The composed, validated config as a plain dict (before paths are filled in)."""
    return config_compose([*SMALL, *overrides])[1]


def small_config(lakehouse: Path, output: Path, *overrides: str, **patch: Any) -> RunConfig:
    """A validated small run config pointing at ``lakehouse`` and writing to ``output``."""
    raw = compose_raw(*overrides)
    raw["paths"] = {"lakehouse_dir": str(lakehouse), "output_dir": str(output)}
    for dotted, value in patch.items():
        node = raw
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return config_validate(raw)


# ranking for a universe of a dozen symbols over a few months (short factor windows, no liquidity floor)
TINY_RANKING = [
    "ranking.top_n=3",
    "ranking.min_history_days=40",
    "ranking.momentum_days=20",
    "ranking.vol_days=20",
    "ranking.liquidity_days=20",
    "ranking.min_quote_volume=0",
]


def random_ohlc(
    rng: np.random.Generator, n: int, k: int, vol: float = 0.02, gap: float = 0.01, wick: float = 0.01
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(open, high, low, close) of ``k`` random-walk columns over ``n`` bars: log-normal closes
    with volatility ``vol``, opens off the previous close by ``gap``, wicks of scale ``wick``."""
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, (n, k)), axis=0))
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0, gap, (n, k)))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, wick, (n, k))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, wick, (n, k))))
    return open_, high, low, close


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def browser_found() -> str | None:
    """Path of a Chrome/Chromium: ``$BROWSER_PATH`` (one that names no file hides the browser, as
    .ci/run's browser-hidden step does), else the first of :data:`BROWSERS` on PATH; None without."""
    given = os.environ.get("BROWSER_PATH")
    if given:
        return given if Path(given).is_file() else None
    return next((p for b in BROWSERS if (p := shutil.which(b))), None)


def browser_or_skip() -> str:
    """Path of a Chrome/Chromium for the browser tests (report rendering, heatmap PNG).

    Without one they skip, saying how to enable them; ENGINE_REQUIRE_BROWSER=1 (set by .ci/run, which
    installs Chromium) turns the skip into a failure, so CI cannot pass without running them.
    """
    found = browser_found()
    if found:
        return found
    msg = "no Chrome/Chromium found: install one (e.g. `sudo apt-get install chromium`, as .ci/run does) or set BROWSER_PATH to run the browser tests"
    if os.environ.get("ENGINE_REQUIRE_BROWSER") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def five_minute_bars(hourly: pl.DataFrame) -> pl.DataFrame:
    """12 five-minute bars per hourly bar: a straight path from the hour's open to its close, the
    hour's high reached in the 4th bar and its low in the 8th, the volume split evenly (so complete
    hours resample back to the hourly bars exactly)."""
    o, hi, lo, c, v = (hourly.get_column(k).to_numpy() for k in ("open", "high", "low", "close", "volume"))
    path = o[:, None] + (c - o)[:, None] * (np.arange(13) / 12.0)[None, :]
    op, cl = path[:, :-1], path[:, 1:]
    high, low = np.maximum(op, cl), np.minimum(op, cl)
    high[:, 3], low[:, 7] = hi, lo
    ts = hourly.get_column("timestamp").dt.epoch("ms").to_numpy()[:, None] + np.arange(12)[None, :] * 300_000
    return pl.DataFrame(
        {
            "timestamp": ts.ravel(),
            "open": op.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": cl.ravel(),
            "volume": np.repeat(v / 12.0, 12),
        }
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC")))


def bars_from_closes(close: np.ndarray, start_ms: int, step_ms: int, wick: float = 0.005) -> pl.DataFrame:
    """Bars with these closes: each opens at the previous close, wicks ``wick`` beyond, 1e6 units traded."""
    open_ = np.r_[close[0], close[:-1]]
    return pl.DataFrame(
        {
            "timestamp": start_ms + np.arange(close.size) * step_ms,
            "open": open_,
            "high": np.maximum(open_, close) * (1.0 + wick),
            "low": np.minimum(open_, close) * (1.0 - wick),
            "close": close,
            "volume": np.full(close.size, 1e6),
        }
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC")))


def perp_files_config(tmp: Path, folder: Path, *overrides: str) -> RunConfig:
    """A zero-cost perpetual run on a folder of freqtrade futures files (no funding files: assumed zero)."""
    raw = config_compose(
        ["data=files", f"data.path={folder}", "data.market=perp", "data.funding_missing=zero", "quiet=true",
         *TINY_RANKING, "costs=zero", *overrides]
    )[1]  # fmt: skip
    raw["paths"] = {"lakehouse_dir": str(tmp / "lakehouse"), "output_dir": str(tmp / "out")}
    return config_validate(raw)


def feather_write(bars: pl.DataFrame, path: Path) -> None:
    """Write bars as freqtrade writes its candles: a feather file with a ``date`` column in ns."""
    frame = bars.rename({"timestamp": "date"}).to_pandas()
    frame["date"] = frame["date"].dt.as_unit("ns")
    frame.to_feather(path, compression="lz4")


def engine_cli(
    args: list[str],
    cwd: Path,
    timeout: float = 600,
    *,
    env: Mapping[str, str] | None = None,
    module: str = "engine",
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m engine ARGS`` in ``cwd`` as a user would (not on a terminal: CI=1).

    The one subprocess runner of the tests. ``env`` adds to (or overrides) this process's
    environment; ``module`` runs another command (``engine.sweep``). A run that outlives
    ``timeout`` seconds fails the test with the end of its stderr.
    """
    full = {**os.environ, "CI": "1", **(env or {})}
    try:
        return subprocess.run(
            [sys.executable, "-m", module, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        tail = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
        pytest.fail(f"python -m {module} {' '.join(args)} timed out after {timeout} s:\n{tail[-3000:]}")


def processes_mentioning(text: str) -> list[int]:
    """Live processes (other than this one) whose command line contains ``text``, e.g. a Ray instance's temp dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def ingest_task(cfg: RunConfig) -> int:
    """``task=ingest`` as the command line runs it: the task, then its lines printed; the exit code."""
    from engine.cli import ingest_print
    from engine.tasks import ingest_run

    return ingest_print(ingest_run(cfg))


def fake_perp(monkeypatch: pytest.MonkeyPatch, rate: Any) -> None:
    """Read the built-in bars as a perpetual's, with 8-hourly funding ``rate(symbol)`` and no mark price.

    Stands in for ``engine.data.funding.funding_read`` (``data.market=perp``, written by the perpetual
    data change) until it is merged: ``engine.config.book.market_of`` says ``perp``.
    """
    import types

    import engine.config.book as book_mod

    def funding_read(cfg: Any, symbols: Any, start_ms: int, end_ms: int, **options: Any) -> pl.DataFrame:
        times = np.arange(start_ms - start_ms % 28_800_000, end_ms, 28_800_000, dtype=np.int64)
        rows = [(s, int(t), rate(s), None) for s in sorted(symbols) for t in times]
        schema = {"symbol": pl.String, "time": pl.Int64, "rate": pl.Float64, "mark": pl.Float64}
        return pl.DataFrame(rows, schema=schema, orient="row")

    module = types.ModuleType("engine.data.funding")
    module.funding_read = funding_read  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "engine.data.funding", module)
    monkeypatch.setattr(book_mod, "market_of", lambda cfg: "perp")
