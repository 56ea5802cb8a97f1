"""Figure 7: parameter sweeps, the cost of one more configuration on the same exit-rule grid.

Base grid: ``exit_rules.sl_stop`` {2, 5, 10} % x ``exit_rules.tp_stop`` {10, 15, 30} % x
``exit_rules.sl_trail`` {false, true, 8 %} = 27 combinations with ``+profile=crypto_rating`` on the
default universe (quick mode: 30 symbols, 2023-01-01..2023-12-31).

Three ways, each one ``python -m engine`` subprocess from its own temp cwd on the same lakehouse
(generated before any timing by one untimed single run):

- sequential multirun: ``-m`` with comma lists; Hydra's basic launcher runs the jobs one after
  another in one process (imports once, then one full backtest + artefacts per job);
- joblib launcher (full mode only): the same plus ``hydra/launcher=joblib
  hydra.launcher.n_jobs=2`` (the plugin's own config; loky worker processes);
- vectorised grid: ``task=grid`` with the lists as ``grid.*``: ONE walk-forward whose every window
  is one vectorbt call for all the books (``VectorBTSimulator.simulate_grid``).

Wall time is launch to exit and includes the sweep summary every multirun and grid ends with
(leaderboard + heatmap PNG rendered by kaleido through Chromium); CPU time is the subprocess's
user + system time (``RUSAGE_CHILDREN``, its waited-for children included), which other jobs on a
shared machine disturb much less than the wall. Every job/combination must have written
``metrics.json``, else the figure crashes.

Per combination (the target's figure): each way runs pairs, back to back, of the 4-combination
corner grid SL {2, 5} % x TP {10, 15} % and a larger grid (heatmap included in both); a pair's slope
is ``(t(large) - t(4)) / (n_large - 4)``: interpreter start, imports, data, ranking and the sweep
summary are paid once per command whatever the grid's size, so they drop out. The sweeps' large
grid is the 27-combination grid (their slope is ~1 s a combination, 20-30 s over the pair). The
vectorised grid's slope is ~30 ms a combination, so over 23 combinations it would be inside the
~1 s run-to-run noise of a process; its large grid is a 108-combination superset of the 27 (quick:
300 combinations, as quick's combinations are ~5x cheaper), and its pair is repeated (5 times, 3 in
quick). The estimate is the median of the pair slopes and its noise interval a distribution-free
95 % interval of that median (``common.median_interval``: the whole range for up to 5 pairs);
a way run once (the sequential multirun in quick mode) gets the interval of its one difference
+- the range of the grid's pair differences, the noise of a pair on this machine at that time.

Verdict of the ratio grid / sequential (target <= 0.05, i.e. >= 20x cheaper per combination),
separately for wall and CPU time: ``inconclusive`` when the grid's estimate or the low end of its
interval is <= 0 (negative or inside its own noise) or the ratio's interval (grid low / sequential
high .. grid high / sequential low) straddles the target; ``pass`` only when all of it is <= the
target, ``miss`` only when all of it is above.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, Row, check_interval, engine_cli, median_interval

FIG = "7 sweeps"
TARGET_GRID = 0.05  # vectorised grid per combination <= 1/20 of sequential multirun's
FULL_GRID = {
    "sl_stop": ["0.02", "0.05", "0.1"],
    "tp_stop": ["0.1", "0.15", "0.3"],
    "sl_trail": ["false", "true", "0.08"],
}
QUICK_DATA = ["data.n_symbols=30", "data.start=2023-01-01", "data.end=2023-12-31"]
SMALL_GRID = {"sl_stop": ["0.02", "0.05"], "tp_stop": ["0.1", "0.15"], "sl_trail": ["false"]}
# the vectorised grid's large grid: supersets of FULL_GRID big enough for its slope to clear the noise
BIG_GRID = {
    "sl_stop": ["0.01", "0.02", "0.03", "0.05", "0.07", "0.1"],
    "tp_stop": ["0.05", "0.1", "0.15", "0.2", "0.3", "0.5"],
    "sl_trail": ["false", "true", "0.08"],
}
BIG_GRID_QUICK = {
    "sl_stop": ["0.01", "0.015", "0.02", "0.03", "0.04", "0.05", "0.07", "0.1", "0.12", "0.15"],
    "tp_stop": ["0.05", "0.08", "0.1", "0.15", "0.2", "0.25", "0.3", "0.4", "0.5", "0.7"],
    "sl_trail": ["false", "true", "0.08"],
}
SEQ, JOBLIB, VEC = "sequential multirun", "joblib launcher (n_jobs=2)", "vectorised grid (task=grid)"


def _count(grid: dict[str, list[str]]) -> int:
    n = 1
    for values in grid.values():
        n *= len(values)
    return n


def sizes(quick: bool) -> dict[str, Any]:
    big = BIG_GRID_QUICK if quick else BIG_GRID
    return {
        "universe": "30 symbols, 2023-01-01..2023-12-31" if quick else "profile default (100 symbols, 2021-2024)",
        "grid": {f"exit_rules.{k}": v for k, v in FULL_GRID.items()},
        "n_combinations": _count(FULL_GRID),
        "small_grid": {f"exit_rules.{k}": v for k, v in SMALL_GRID.items()},
        "n_combinations_small": _count(SMALL_GRID),
        "vectorised_large_grid": {f"grid.{k}": v for k, v in big.items()},
        "n_combinations_vectorised_large": _count(big),
        "ways": [SEQ, VEC] if quick else [SEQ, JOBLIB, VEC],
        "launcher_n_jobs": 2,
        "pairs": {SEQ: 1 if quick else 2, JOBLIB: 1, VEC: 3 if quick else 5},
    }


def _summary_files(directory: Path) -> dict[str, bool]:
    return {name: (directory / name).is_file() for name in ("leaderboard.csv", "heatmap_sl_tp.png")}


def slope_estimate(small: list[float], large: list[float], n_small: int, n_large: int) -> dict[str, Any]:
    """Per-combination cost from back-to-back pairs: the median of the pair slopes and its
    distribution-free interval (the range of the slopes for up to 5 pairs)."""
    diffs = [f - s for s, f in zip(small, large, strict=True)]
    slopes = [d / (n_large - n_small) for d in diffs]
    est, low, high = median_interval(slopes)
    return {"diffs_s": diffs, "slopes_s": slopes, "estimate_s": est, "low_s": low, "high_s": high}


def widen_single(est: dict[str, Any], noise_s: float, n_small: int, n_large: int) -> dict[str, Any]:
    """A way run once has no spread of its own: its one difference +- ``noise_s`` (the range of
    another way's pair differences measured in the same run)."""
    if len(est["slopes_s"]) > 1:
        return est
    d = est["diffs_s"][0]
    return {**est, "low_s": (d - noise_s) / (n_large - n_small), "high_s": (d + noise_s) / (n_large - n_small)}


def ratio_verdict(grid: dict[str, Any], seq: dict[str, Any], target: float) -> tuple[float, float, float, str]:
    """(ratio, low, high, verdict) of grid / sequential per-combination cost against ``<= target``."""
    ratio = grid["estimate_s"] / seq["estimate_s"] if seq["estimate_s"] > 0 else float("nan")
    if seq["low_s"] <= 0 or seq["estimate_s"] <= 0:
        return ratio, float("nan"), float("nan"), check_interval(float("nan"), 0.0, 0.0, target)
    low, high = grid["low_s"] / seq["high_s"], grid["high_s"] / seq["low_s"]
    return ratio, low, high, check_interval(ratio, low, high, target)


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    size = sizes(quick)
    n_small = size["n_combinations_small"]
    big = BIG_GRID_QUICK if quick else BIG_GRID
    lake = tmp / "lh"
    common = ["+profile=crypto_rating", f"paths.lakehouse_dir={lake}", "quiet=true", *(QUICK_DATA if quick else [])]

    def way_args(name: str, g: dict[str, list[str]]) -> list[str]:
        sweep = [f"exit_rules.{k}={','.join(v)}" for k, v in g.items()]
        if name == VEC:
            return ["task=grid", *common, *(f"grid.{k}=[{','.join(v)}]" for k, v in g.items())]
        launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if name == JOBLIB else []
        return ["-m", *common, *sweep, *launcher]

    # untimed: generate the lakehouse; in full mode one timed single run (existing lakehouse) for reference
    t_gen, _, _ = engine_cli(tmp / "gen", common)
    t_single = None if quick else engine_cli(tmp / "single", common)[0]

    ways: dict[str, dict[str, Any]] = {}
    for name in size["ways"]:
        large = big if name == VEC else FULL_GRID
        n_large = _count(large)
        t: dict[str, list[float]] = {"wall_small": [], "wall_large": [], "cpu_small": [], "cpu_large": []}
        for rep in range(size["pairs"][name]):
            for label, g, count in (("small", SMALL_GRID, n_small), ("large", large, n_large)):
                cwd = tmp / f"{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')}_{label}_{rep}"
                args = way_args(name, g)
                wall, cpu, stdout = engine_cli(cwd, args)
                pattern = (
                    "outputs/runs/*/*/combos/*/metrics.json"
                    if args[0] == "task=grid"
                    else "outputs/sweeps/*/*/*/metrics.json"
                )
                found = sorted(cwd.glob(pattern))
                if len(found) != count:
                    msg = f"{name}: {len(found)} metrics.json files for {count} combinations (in {cwd})"
                    raise RuntimeError(msg)
                t[f"wall_{label}"].append(wall)
                t[f"cpu_{label}"].append(cpu)
                if label == "large" and rep == 0:
                    walk = re.search(r"in one walk-forward \(([\d.]+) s\)", stdout)
                    ways[name] = {
                        "n_large": n_large,
                        "metrics_json": len(found),
                        "summary": _summary_files(found[0].parent.parent),
                        "grid_walk_forward_s": float(walk.group(1)) if walk else None,
                        "args": args,
                        "sweep_dir": str(found[0].parent.parent),
                    }
        ways[name].update(
            times_s=t,
            wall_s=statistics.median(t["wall_large"]),
            wall_small_s=statistics.median(t["wall_small"]),
            wall=slope_estimate(t["wall_small"], t["wall_large"], n_small, n_large),
            cpu=slope_estimate(t["cpu_small"], t["cpu_large"], n_small, n_large),
        )
        ways[name]["configs_per_s"] = n_large / ways[name]["wall_s"]

    vec = ways[VEC]
    for kind in ("wall", "cpu"):
        noise = max(vec[kind]["diffs_s"]) - min(vec[kind]["diffs_s"])
        for name, w in ways.items():
            if name != VEC:
                w[kind] = widen_single(w[kind], noise, n_small, w["n_large"])

    # the summary alone (fresh process: imports + DuckDB read + leaderboard + kaleido PNG), full mode
    t_summary = None if quick else _sweep_summary(Path(ways[SEQ]["sweep_dir"]))[0]

    seq = ways[SEQ]
    rows: list[Row] = []
    for name, w in ways.items():
        files = "+".join(k for k, ok in w["summary"].items() if ok) or "no summary files"
        rows.append(
            Row(
                FIG,
                f"{name}: wall, {w['n_large']} configs",
                w["wall_s"],
                "s",
                note=(
                    f"{w['configs_per_s']:.2f} configs/s end to end; {w['metrics_json']}/{w['n_large']} metrics.json; "
                    f"summary: {files}"
                ),
            )
        )
        for kind, label in (("wall", "wall"), ("cpu", "CPU")):
            if kind == "cpu" and name == JOBLIB:
                continue  # two workers' CPU added up: not a per-combination cost comparable with the others
            e = w[kind]
            reps = len(e["slopes_s"])
            spread = f"interval {e['low_s'] * 1e3:.0f}..{e['high_s'] * 1e3:.0f} ms" + (
                f" over {reps} pairs" if reps > 1 else " (one pair +- the grid pairs' spread)"
            )
            measure = f"{name}: per combination, {label} (slope {n_small} -> {w['n_large']})"
            if name == SEQ:
                rows.append(Row(FIG, measure, e["estimate_s"] * 1e3, "ms", note=spread))
                continue
            ratio, lo, hi, verdict = ratio_verdict(e, seq[kind], TARGET_GRID)
            is_target = name == VEC
            rows.append(
                Row(
                    FIG,
                    measure,
                    e["estimate_s"] * 1e3,
                    "ms",
                    seq[kind]["estimate_s"] * 1e3,
                    f"sequential multirun, {label}",
                    target=f"<= {TARGET_GRID}x (>= {1 / TARGET_GRID:.0f}x cheaper)" if is_target else "",
                    status=verdict if is_target else "",
                    ratio=ratio,
                    note=f"{spread}; ratio interval {lo:.3g}..{hi:.3g}",
                )
            )
    detail = {
        "sizes": size,
        "lakehouse_generation_run_s": t_gen,
        "single_run_s": t_single,
        "sweep_summary_alone_s": t_summary,
        "ways": ways,
        "note": (
            "wall includes interpreter start, imports and the sweep summary (leaderboard + heatmap PNG); "
            f"per combination = median over back-to-back pairs of (t(large grid) - t({n_small})) / (n_large - {n_small}), "
            "interval = distribution-free interval of the median (range for <= 5 pairs)"
        ),
    }
    return rows, detail


def _sweep_summary(sweep_dir: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "engine.sweep", str(sweep_dir)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return time.perf_counter() - t0, proc.stdout
