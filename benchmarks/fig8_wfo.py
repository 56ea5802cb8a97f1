"""Figure 8: walk-forward optimisation (``task=wfo``) against the grid it chooses from (``task=grid``).

Grid: ``grid=sl_tp_27`` (stop loss {2, 5, 10} % x take profit {10, 15, 30} % x trailing {false,
true, 8 %} = 27 combinations) with ``+profile=crypto_rating`` on the default universe (quick mode:
30 symbols, 2023-01-01..2023-12-31, ``wfo.train_windows=8``). Target (issue 15): task=wfo costs at
most 1.5x task=grid over the same combinations: the wfo walks the same 27 books in one pass, then
only the chosen combination's out-of-sample book (one book) and the selection, PBO and CPCV on the
(windows x 27) matrix.

Two measures, each as pairs run back to back (grid, then wfo) so a slow spell of the shared
machine hits both runs of a pair alike:

- **engine**: in this process, after one untimed warm-up of each, ``engine.run.backtest_run`` with
  the 27 rules (what task=grid simulates) against ``engine.run.walk_chosen`` (the same plus the
  choice and the out-of-sample book) — data and ranking included, artefacts excluded;
- **end to end**: ``python -m engine task=grid ...`` against ``python -m engine task=wfo ...``,
  launch to exit, each from its own temp cwd (artefacts, report, the grid's leaderboard and
  heatmap, the wfo's wfo.parquet, ledger writes included).

Verdict: the ratio of each pair is wfo / grid; the figure is their median, the run-to-run noise
``band = 2 * 1.4826 * MAD / sqrt(pairs)`` (MAD: the median absolute deviation of the pair ratios; a
robust two-standard-error band, so one disturbed pair does not decide). ``pass`` when
``median + band <= 1.5``, ``miss`` when ``median - band > 1.5``, else ``inconclusive``: the difference
from the target is inside the noise.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, engine_cli, run_config

FIG = "8 wfo"
TARGET = 1.5
QUICK_DATA = ["data.n_symbols=30", "data.start=2023-01-01", "data.end=2023-12-31"]


def sizes(quick: bool) -> dict[str, Any]:
    return {
        "universe": "30 symbols, 2023-01-01..2023-12-31" if quick else "profile default (100 symbols, 2021-2024)",
        "grid": "sl_tp_27",
        "n_combinations": 27,
        "train_windows": 8 if quick else 12,
        "engine_pairs": 3 if quick else 5,
        "cli_pairs": 2 if quick else 3,
    }


def noise_band(ratios: list[float]) -> float:
    """Two robust standard errors of the median pair ratio: 2 * 1.4826 * MAD / sqrt(n)."""
    med = statistics.median(ratios)
    mad = statistics.median(abs(r - med) for r in ratios)
    return 2.0 * 1.4826 * mad / len(ratios) ** 0.5


def verdict(ratios: list[float], target: float = TARGET) -> str:
    """pass / miss only when the median ratio is beyond the noise band from the target, else inconclusive."""
    if not ratios:
        return ""
    med, band = statistics.median(ratios), noise_band(ratios)
    if med + band <= target:
        return "pass"
    if med - band > target:
        return "miss"
    return "inconclusive"


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from engine.config.exit_rules import grid_combos
    from engine.run import backtest_run, walk_chosen
    from engine.run.selection import wfo_choices

    size = sizes(quick)
    lake = tmp / "lh"
    data = QUICK_DATA if quick else []
    train = size["train_windows"]
    common = ["+profile=crypto_rating", "grid=sl_tp_27", f"wfo.train_windows={train}", *data]
    engine_cli(tmp / "gen", ["+profile=crypto_rating", f"paths.lakehouse_dir={lake}", "quiet=true", *data])

    cfg = run_config(lake, tmp / "engine_out", ["task=wfo", *common])
    rules = grid_combos(cfg)

    def grid_once() -> float:
        t0 = time.perf_counter()
        backtest_run(cfg, rules)
        return time.perf_counter() - t0

    def wfo_once() -> float:
        t0 = time.perf_counter()
        walk_chosen(
            cfg, rules, lambda r: wfo_choices(r, cfg.wfo.train_windows, cfg.wfo.anchored, cfg.wfo.objective).choices
        )
        return time.perf_counter() - t0

    grid_once(), wfo_once()  # warm-up: imports, first-call costs
    engine_pairs = [(grid_once(), wfo_once()) for _ in range(size["engine_pairs"])]

    cli_pairs = []
    for rep in range(size["cli_pairs"]):
        base = [f"paths.lakehouse_dir={lake}", "quiet=true", *common]
        g = engine_cli(tmp / f"grid_{rep}", ["task=grid", *base])[0]
        w = engine_cli(tmp / f"wfo_{rep}", ["task=wfo", *base])[0]
        cli_pairs.append((g, w))

    rows: list[Row] = []
    detail: dict[str, Any] = {"sizes": size}
    for label, pairs in (
        ("engine (in process, no artefacts)", engine_pairs),
        ("end to end (python -m engine)", cli_pairs),
    ):
        row, detail[label] = pair_row(
            FIG, f"task=wfo vs task=grid, 27 combinations: {label}", "task=grid, same combinations", pairs, TARGET
        )
        rows.append(row)
    detail["note"] = (
        "verdict: median wfo/grid pair ratio +- 2 robust standard errors (1.4826 MAD / sqrt(n)): "
        "pass when wholly <= 1.5, miss when wholly > 1.5, else inconclusive"
    )
    return rows, detail


def pair_row(
    figure: str, name: str, baseline_name: str, pairs: list[tuple[float, float]], target: float
) -> tuple[Row, dict[str, Any]]:
    """The row of a paired comparison: ``(baseline, value)`` seconds per pair, verdict on the pair ratios.

    Value and baseline are the medians; the verdict is :func:`verdict` of the ratios against ``target``.
    """
    ratios = [b / a for a, b in pairs]
    status = verdict(ratios, target)
    row = Row(
        figure,
        name,
        statistics.median(b for _, b in pairs),
        "s",
        statistics.median(a for a, _ in pairs),
        baseline_name,
        target=f"<= {target}x",
        status=status,
        ratio=statistics.median(ratios),
        note=f"median pair ratio {statistics.median(ratios):.2f} +- {noise_band(ratios):.2f} (noise band); "
        f"pairs {min(ratios):.2f}-{max(ratios):.2f} over {len(pairs)}"
        + ("; the target is inside the noise band" if status == "inconclusive" else ""),
    )
    return row, {"pairs_s": pairs, "ratios": ratios, "noise_band": noise_band(ratios), "verdict": status}
