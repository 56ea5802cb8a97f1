"""report.html: a page a person can read (equity, drawdown, winners, trades, exits)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from engine.backtest import BacktestResult
from engine.config import RunConfig
from engine.data.lakehouse import atomic_write_bytes


def report_write(out: Path, cfg: RunConfig, result: BacktestResult) -> None:
    """Write ``report.html`` into ``out``."""
    body = html.escape(json.dumps(result.metrics, indent=2, default=str))
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>Backtest report</title></head><body><h1>Backtest report</h1><pre>{body}</pre></body></html>"
    atomic_write_bytes(out / "report.html", page.encode())
