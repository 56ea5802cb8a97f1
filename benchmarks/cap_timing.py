"""The experiment behind docs/EXECUTION.md, "Why a tighter cap can raise the return" (not a figure).

``python -m benchmarks.cap_timing [WORKDIR]`` runs, on the built-in data with ``costs=zero``, the
rebalance and stop profiles uncapped and at ``execution.max_participation=0.001``, and the
frictionless rebalance run with every rebalance order placed one bar late; then it prints each
run's total return and the mark-to-market P&L (over the morning's equity, summed over the run) of

- the new winners, the winners that stay, and the coins that left, on a window's first bar and on
  the rest of it;
- the unsold part of a stopped position, from the bar after the stop until it is sold or replaced.

The channel split of the doc's tables (the cap on buys only, on sells only, ...) ran a copy of the
kernel and is not repeated here. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
from omegaconf import OmegaConf

DAY_MS = 86_400_000
RUNS = {
    "rebalance, no cap": ["+profile=crypto_rating_baseline", "execution.max_participation=1.0"],
    "rebalance, cap 0.001": ["+profile=crypto_rating_baseline", "execution.max_participation=0.001"],
    "rebalance, no cap, one bar late": ["+profile=crypto_rating_baseline", "DELAY"],
    "stops, no cap": ["+profile=crypto_rating", "execution.max_participation=1.0"],
    "stops, cap 0.001": ["+profile=crypto_rating", "execution.max_participation=0.001"],
}
LATE = """
import sys
import numpy as np
import engine.run.fold
fold = sys.modules["engine.run.fold"]
grid_book = fold._grid_book
def late(book, columns, weights, market=False):
    if weights.shape[0] > 1:  # a one-bar window (the last) trades on its bar
        weights = weights.copy()
        first = weights[0].copy()
        weights[0] = np.nan
        weights[1] = np.where(np.isnan(weights[1]), first, weights[1])
    return grid_book(book, columns, weights, market)
fold._grid_book = late
from engine.cli import main
main(sys.argv[1:])
"""


def _run(work: Path, name: str, args: list[str]) -> Path:
    out = work / name.replace(", ", "_").replace(" ", "-")
    common = ["costs=zero", "quiet=true", "paths.ledger=null", f"paths.output_dir={out}"]
    if "DELAY" in args:
        cmd = [sys.executable, "-c", LATE, *[a for a in args if a != "DELAY"], *common]
    else:
        cmd = [sys.executable, "-m", "engine", *args, *common]
    if not (out / "_COMPLETE").exists():
        subprocess.run(cmd, check=True, cwd=work, capture_output=True)
    return out


def _closes(work: Path) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    files = sorted(work.glob("lakehouse/*/bars/interval=1d/symbol=*/*.parquet"))
    bars = pl.concat(
        pl.read_parquet(f).with_columns(symbol=pl.lit(f.parent.name.removeprefix("symbol=").replace("_", "/")))
        for f in files
    )
    close = bars.pivot(on="symbol", index="timestamp", values="close").sort("timestamp")
    names = [c for c in close.columns if c != "timestamp"]
    return (
        close["timestamp"].cast(pl.Int64).to_numpy(),
        close.select(names).to_numpy(),
        {s: j for j, s in enumerate(names)},
    )


def _roles(run: Path, col: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Window start times and each window's role per symbol: 0 new winner, 1 stays, 2 not a winner."""
    w = pl.read_parquet(run / "winners.parquet").filter(pl.col("selected"))
    starts, roles, prev = [], [], set()
    for win in sorted(w["window"].unique().to_list()):
        rows = w.filter(pl.col("window") == win)
        names = set(rows["symbol"].to_list())
        starts.append(int(rows["rank_time"].cast(pl.Int64)[0]) + DAY_MS)
        role = np.full(len(col), 2)
        for s in names:
            role[col[s]] = 1 if s in prev else 0
        roles.append(role)
        prev = names
    return np.array(starts), np.array(roles)


def attribution(run: Path, ts: np.ndarray, close: np.ndarray, col: dict[str, int]) -> np.ndarray:
    """P&L over the morning's equity: rows new/stay/left, columns first bar/rest; then the stopped part."""
    starts, roles = _roles(run, col)
    orders = pl.read_parquet(run / "orders.parquet").with_row_index("n").sort(["timestamp", "n"])
    eq = pl.read_parquet(run / "equity.parquet")
    init_cash = float(OmegaConf.load(run / "config.yaml").backtest.init_cash)
    equity = eq["equity"].to_numpy()
    first_day = int(np.searchsorted(ts, int(eq["timestamp"].cast(pl.Int64)[0]) - DAY_MS))
    day = np.searchsorted(ts, orders["timestamp"].cast(pl.Int64).to_numpy())
    held, stopped = np.zeros(len(col)), np.zeros(len(col), dtype=bool)
    out = np.zeros(7)
    rows, k = orders.to_dicts(), 0
    for i in range(first_day, first_day + len(equity)):
        morning = equity[i - first_day - 1] if i > first_day else init_cash
        pnl = np.where(held != 0, held * (close[i] - close[i - 1]), 0.0)
        was_stopped = stopped.copy()
        while k < len(rows) and day[k] == i:
            r = rows[k]
            j = col[r["symbol"]]
            sign = 1.0 if r["side"] == "buy" else -1.0
            pnl[j] += sign * r["size"] * (close[i, j] - r["price"])
            held[j] += sign * r["size"]
            stopped[j] = r["reason"] in ("stop_loss", "take_profit") and held[j] > 1e-9
            k += 1
        wi = int(np.searchsorted(starts, ts[i], side="right") - 1)
        at = 0 if ts[i] == starts[wi] else 1
        for role in range(3):
            out[2 * role + at] += np.nansum(pnl[roles[wi] == role]) / morning
        out[6] += np.nansum(pnl[was_stopped]) / morning
    return out


def main(argv: list[str]) -> None:
    """Run the five runs in WORKDIR (default ./cap_timing) and print the table."""
    work = Path(argv[0] if argv else "cap_timing").resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs = {name: _run(work, name, args) for name, args in RUNS.items()}
    ts, close, col = _closes(work)
    print("run | total return | new winners: first bar / rest | stay: first / rest | left: first / rest | stopped part")
    for name, run in runs.items():
        m = json.loads((run / "metrics.json").read_text())
        a = attribution(run, ts, close, col)
        print(
            f"{name} | {m['total_return']:+.2%} | {a[0]:+.3f} / {a[1]:+.3f} | {a[2]:+.3f} / {a[3]:+.3f} | "
            f"{a[4]:+.3f} / {a[5]:+.3f} | {a[6]:+.3f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
