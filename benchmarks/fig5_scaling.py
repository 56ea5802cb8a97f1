"""Figure 5: scaling with the universe size, MTF on (``backtest.timeframes=[4h]``).

Sizes: 100, 500 and 2,000 synthetic symbols over 2021-01-01..2024-12-31 (quick: 30, 90 and 270
symbols over 2024), top-10 winners, default profile. Per size:

1. the lakehouse is prepared in the benchmark's own process (one ``run_backtest`` on an empty
   lakehouse: generation and the lazy 4h fetch of the winners; its stage times are reported, not
   fitted);
2. ONE fresh ``python -c`` subprocess runs ``run_backtest`` ``repeat`` times on that lakehouse and
   reports its in-process stage timings and its own peak RSS (``VmHWM`` of /proc/self/status at
   its end; ``ru_maxrss`` would include the parent's RSS at fork, which Linux keeps across exec).
   A fresh process per size keeps the sizes from contaminating each other's memory.

The import baseline is measured the same way: a fresh subprocess that imports every module the
smallest size's run had loaded (the list is reported by that run) and reports its VmHWM without
running anything. Peak memory of a size = its VmHWM - that baseline.

Fitted figures: the least-squares slope of log(y) on log(symbols) (``y ~ symbols**b``) for
- the in-process time of a warm run (``run_backtest`` total; the first run of a process also loads
  numba caches and lazy imports, and is reported, not fitted),
- the universe stages of a warm run (data + ranking + windows: the part expected to grow),
- the peak memory above the import baseline.
Target b <= 1.1 (at most ~linear). The default run's rows (peak RSS of a warm ``python -m engine``
at 500 / 2,000 / 20,000 symbols, generation time, warm-time exponents: issue 23, item 4) are
:mod:`benchmarks.fig5_memory`'s, appended to this figure. Time is fitted per warm repetition too: the spread of those
exponents is the estimate's noise interval, and the verdict is ``pass`` only when the whole
interval is <= 1.1, ``miss`` only when all of it is above, ``inconclusive`` otherwise. Nothing is
compared with itself: every size counts equally in the fit.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import fig5_memory
from benchmarks.common import REPO, Row, backtest_subprocess, check, check_interval, loglog_exponent, run_config

FIG = "5 scaling"
EXPONENT_TARGET = 1.1
RSS_TARGET_MB = 1536.0  # an absolute limit at the largest full size (a spec value, not a baseline)
UNIVERSE_STAGES = ("data", "ranking", "windows")

# A fresh interpreter that imports the given modules (those a run had loaded) and reports its VmHWM.
IMPORTS_CHILD = r"""
import importlib, json, sys, warnings
warnings.filterwarnings("ignore")
mods = [m for m in json.loads(sys.argv[1]) if m not in ("__main__", "__mp_main__", "this", "antigravity")]
failed = []
for m in mods:
    try:
        importlib.import_module(m)
    except BaseException:
        failed.append(m)
from engine.compose import config_compose
config_compose(["quiet=true", "+profile=crypto_rating"])
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")) / 1024
print("BENCH_JSON " + json.dumps({"maxrss_mb": hwm, "n_modules": len(mods), "failed": failed}))
"""


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "n_symbols": [30, 90, 270],
            "data": ["data.start=2024-01-01", "data.end=2024-12-31"],
            "days": 366,
            "top_n": 10,
            "timeframes": ["4h"],
            "repeat": 3,
        }
    return {"n_symbols": [100, 500, 2000], "data": [], "days": 1461, "top_n": 10, "timeframes": ["4h"], "repeat": 3}


def import_baseline(modules: list[str], cwd: Path) -> dict[str, Any]:
    """VmHWM of a fresh interpreter that only imports ``modules`` (and composes a config)."""
    proc = subprocess.run(
        [sys.executable, "-c", IMPORTS_CHILD, json.dumps(modules)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        msg = f"import-baseline subprocess failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        raise RuntimeError(msg)
    return json.loads(line.removeprefix("BENCH_JSON "))


def exponent_row(name: str, x: list[float], y: list[float], per_rep: list[float], unit_note: str) -> Row:
    """A fitted-exponent row: estimate from ``y``, noise interval from the per-repetition fits."""
    b = loglog_exponent(x, y)
    lo, hi = (min(per_rep), max(per_rep)) if per_rep else (b, b)
    lo, hi = min(lo, b), max(hi, b)
    return Row(
        FIG,
        name,
        b,
        "exponent",
        target=f"<= {EXPONENT_TARGET} (~linear or better)",
        status=check_interval(b, lo, hi, EXPONENT_TARGET, positive=False),
        note=f"interval {lo:.2f}..{hi:.2f} over {len(per_rep)} repetitions; {unit_note}",
    )


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from engine.tasks import run_backtest

    size = sizes(quick)
    ns = size["n_symbols"]
    rep = size["repeat"]
    rows: list[Row] = []
    detail: dict[str, Any] = {"sizes": size}
    warm_total: dict[int, list[float]] = {}
    warm_uni: dict[int, list[float]] = {}
    peak: dict[int, float] = {}
    modules: list[str] = []
    for n in ns:
        base = [
            "+profile=crypto_rating",
            f"data.n_symbols={n}",
            "ranking.top_n=10",
            "backtest.timeframes=[4h]",
            *size["data"],
        ]
        lake = tmp / f"lake-{n}"
        prep = run_backtest(run_config(lake, tmp / f"out-{n}-prep", base)).timings
        child = backtest_subprocess(lake, tmp / f"out-{n}", base, repeat=rep, env={"BENCH_REPORT_MODULES": "1"})
        runs = child["runs"]
        warm = runs[1:]
        warm_total[n] = [r["timings"]["total"] for r in warm]
        warm_uni[n] = [sum(r["timings"].get(k, 0.0) for k in UNIVERSE_STAGES) for r in warm]
        peak[n] = child["maxrss_mb"]
        if not modules:
            modules = child.get("modules", [])
        detail[str(n)] = {"prepare_timings": prep, "subprocess": child}
        med = {k: statistics.median(r["timings"].get(k, 0.0) for r in warm) for k in runs[0]["timings"]}
        stages = ", ".join(f"{k} {v:.2f}" for k, v in med.items() if k != "total")
        rows.append(
            Row(
                FIG,
                f"{n} symbols: warm run in process (median of {len(warm)})",
                statistics.median(warm_total[n]),
                "s",
                note=f"stages s: {stages}; first run {runs[0]['timings']['total']:.2f} s",
            )
        )
        rows.append(
            Row(
                FIG,
                f"{n} symbols: universe stages (data+ranking+windows), warm",
                statistics.median(warm_uni[n]),
                "s",
                note=f"ambiguous exits {runs[-1]['n_ambiguous']} (> 0: a second, optimistic pass)",
            )
        )
        rows.append(
            Row(
                FIG,
                f"{n} symbols: empty lakehouse, in the benchmark's process",
                prep["total"],
                "s",
                note=f"generation {prep['data']:.1f} s, 4h fetch {prep.get('mtf', 0):.1f} s",
            )
        )

    base_mem = import_baseline(modules, tmp)
    detail["import_baseline"] = base_mem
    above = {n: peak[n] - base_mem["maxrss_mb"] for n in ns}
    for n in ns:
        is_last_full = not quick and n == ns[-1]
        rows.append(
            Row(
                FIG,
                f"{n} symbols: peak RSS (VmHWM) of the run's process",
                peak[n],
                "MB",
                base_mem["maxrss_mb"],
                "imports alone, fresh process",
                target=f"<= {RSS_TARGET_MB:.0f} MB (absolute)" if is_last_full else "",
                status=check(peak[n], RSS_TARGET_MB) if is_last_full else "",
                note=f"{above[n]:.0f} MB above the imports",
            )
        )
    x = [float(n) for n in ns]
    per_rep_total = [loglog_exponent(x, [warm_total[n][i] for n in ns]) for i in range(rep - 1)]
    per_rep_uni = [loglog_exponent(x, [warm_uni[n][i] for n in ns]) for i in range(rep - 1)]
    rows.append(
        exponent_row(
            f"time vs symbols: warm run ({len(ns)} sizes)",
            x,
            [statistics.median(warm_total[n]) for n in ns],
            per_rep_total,
            "log-log least squares of the medians",
        )
    )
    rows.append(
        exponent_row(
            f"time vs symbols: universe stages ({len(ns)} sizes)",
            x,
            [statistics.median(warm_uni[n]) for n in ns],
            per_rep_uni,
            "data + ranking + windows",
        )
    )
    b_mem = loglog_exponent(x, [above[n] for n in ns])
    rows.append(
        Row(
            FIG,
            f"peak memory above imports vs symbols ({len(ns)} sizes)",
            b_mem,
            "exponent",
            target=f"<= {EXPONENT_TARGET} (~linear or better)",
            status=check_interval(b_mem, b_mem, b_mem, EXPONENT_TARGET, positive=False),
            note="one process per size; " + ", ".join(f"{n}: {above[n]:.0f} MB" for n in ns),
        )
    )
    detail.update(
        {
            "warm_total_s": warm_total,
            "warm_universe_s": warm_uni,
            "peak_rss_mb": peak,
            "peak_above_imports_mb": above,
            "exponents": {
                "time_warm": rows[-3].value,
                "time_warm_per_repetition": per_rep_total,
                "time_universe": rows[-2].value,
                "time_universe_per_repetition": per_rep_uni,
                "peak_memory_above_imports": b_mem,
            },
        }
    )
    mem_rows, detail["default_run"] = fig5_memory.run(quick, tmp)  # issue 23: the default run's memory
    rows += mem_rows
    return rows, detail
