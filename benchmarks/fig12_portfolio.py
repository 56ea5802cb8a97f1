"""Figure 12: hierarchical risk parity on 50 winners every window against equal weights (issue 25).

Both runs are the default profile (``+profile=crypto_rating``, 100 symbols, 2021-2024; quick: 60
symbols over 2023) with ``ranking.top_n=50``; the measured one adds ``portfolio=hrp`` (its
Ledoit-Wolf covariance over ``portfolio.cov_window`` and the recursive bisection, every window),
the baseline keeps ``portfolio=equal``. Target: HRP adds at most 20 % (ratio <= 1.2).

Two measures, each as pairs run back to back (equal, then hrp) so a slow spell of the shared
machine hits both runs of a pair alike:

- **engine**: in this process, after one untimed warm-up of each, ``engine.run.backtest_run``
  (data, ranking, plan with the weights, simulation, metrics; artefacts excluded);
- **engine, CPU time**: the same runs' CPU time (``time.process_time``: this process, all its
  threads), which other jobs on a shared machine stretch much less than the wall;
- **end to end**: ``python -m engine ...`` launch to exit, each from its own temp cwd.

Verdict as figure 8: the median pair ratio with its robust noise band (pass when wholly <= 1.2,
miss when wholly above, else inconclusive).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, engine_cli, run_config
from benchmarks.fig8_wfo import pair_row

FIG = "12 portfolio"
TARGET = 1.2
QUICK_DATA = ["data.n_symbols=60", "data.start=2023-01-01", "data.end=2023-12-31"]


def sizes(quick: bool) -> dict[str, Any]:
    return {
        "universe": "60 symbols, 2023-01-01..2023-12-31" if quick else "profile default (100 symbols, 2021-2024)",
        "top_n": 50,
        "engine_pairs": 3 if quick else 5,
        "cli_pairs": 2 if quick else 3,
    }


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from engine.run import backtest_run

    size = sizes(quick)
    lake = tmp / "lh"
    data = QUICK_DATA if quick else []
    common = ["+profile=crypto_rating", "ranking.top_n=50", *data]
    engine_cli(tmp / "gen", [*common, f"paths.lakehouse_dir={lake}", "quiet=true"])
    cfgs = {w: run_config(lake, tmp / f"engine_{w}", [*common, f"portfolio={w}"]) for w in ("equal", "hrp")}

    def once(weighting: str) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        backtest_run(cfgs[weighting])
        return time.perf_counter() - t0, time.process_time() - c0

    once("equal"), once("hrp")  # warm-up: imports, first-call costs
    timed = [(once("equal"), once("hrp")) for _ in range(size["engine_pairs"])]
    engine_pairs = [(e[0], h[0]) for e, h in timed]
    cpu_pairs = [(e[1], h[1]) for e, h in timed]
    cli_pairs = []
    for rep in range(size["cli_pairs"]):
        base = [*common, f"paths.lakehouse_dir={lake}", "quiet=true"]
        e = engine_cli(tmp / f"equal_{rep}", [*base, "portfolio=equal"])[0]
        h = engine_cli(tmp / f"hrp_{rep}", [*base, "portfolio=hrp"])[0]
        cli_pairs.append((e, h))

    rows: list[Row] = []
    detail: dict[str, Any] = {"sizes": size}
    for label, pairs in (
        ("engine (in process, no artefacts)", engine_pairs),
        ("engine, CPU time of the same runs", cpu_pairs),
        ("end to end (python -m engine)", cli_pairs),
    ):
        row, detail[label] = pair_row(
            FIG, f"portfolio=hrp vs equal, top 50 every window: {label}", "portfolio=equal, same run", pairs, TARGET
        )
        rows.append(row)
    return rows, detail
