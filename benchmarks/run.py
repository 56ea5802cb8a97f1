"""Run the benchmark suite, print the table, write ``benchmarks/results/latest.json``.

    python -m benchmarks            # full suite
    python -m benchmarks --quick    # smaller sizes (CI)
    python benchmarks/run.py --only 2,6

Speed targets are printed as pass / miss / inconclusive and never change the exit code.
Correctness checks (our results against the same orders through vectorbt, our trades against
backtesting.py's) are printed as match / MISMATCH; a MISMATCH, like a crash, makes the command
exit 1. Every lakehouse and output directory lives in a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import sys
import tempfile
import time
import traceback
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python benchmarks/run.py``: import the package from the repo root
    _root = str(Path(__file__).resolve().parent.parent)
    sys.path[:] = [_root, *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

from benchmarks import fig1_e2e, fig2_simulation, fig3_ranking, fig4_mtf, fig5_scaling, fig6_peer, fig7_sweeps
from benchmarks.common import MISMATCH, REPO, Row, exit_code, machine_info

FIGURES = {
    "1": ("end-to-end default profile", fig1_e2e, True),
    "2": ("simulation stage", fig2_simulation, True),
    "3": ("ranking throughput", fig3_ranking, True),
    "4": ("lazy MTF ingest and winner slice", fig4_mtf, True),
    "5": ("scaling with the universe", fig5_scaling, True),
    "6": ("peer: backtesting.py", fig6_peer, True),
    "7": ("sweeps: configurations per second", fig7_sweeps, True),
    "8": ("walk-forward optimisation vs grid", __import__("benchmarks.fig8_wfo", fromlist=["run"]), True),
    "9": (
        "object storage: S3 (moto) vs local disk, full only",
        __import__("benchmarks.fig9_s3", fromlist=["run"]),
        False,
    ),
    "10": ("fingerprinting 1,000 user files by content", __import__("benchmarks.fig10_files", fromlist=["run"]), True),
    "11": (
        "market execution: realistic profile, capacity",
        __import__("benchmarks.fig11_execution", fromlist=["run"]),
        True,
    ),
    "12": (
        "portfolio=hrp on 50 winners vs equal weights",
        __import__("benchmarks.fig12_portfolio", fromlist=["run"]),
        True,
    ),
    "13": (
        "speed: SL x TP grid on freqtrade 5m files vs vectorbt and backtesting.py",
        __import__("benchmarks.fig13_speed", fromlist=["run"]),
        True,
    ),
    "14": ("long-short perp book vs long-only", __import__("benchmarks.fig14_long_short", fromlist=["run"]), True),
    "restructure": (
        "figures 1, 2, 6, 7 on the code before the restructure (7581975) and now",
        __import__("benchmarks.restructure", fromlist=["run"]),
        True,
    ),
}
RESULTS = REPO / "benchmarks" / "results"


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, int) or (float(x).is_integer() and abs(x) < 1e6):
        return f"{int(x)}"
    a = abs(x)
    if a >= 1e5:
        return f"{x:.3g}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2e}"


def table(rows: list[Row]) -> str:
    head = ("figure", "measure", "value", "unit", "baseline", "ratio", "target", "")
    body = [
        (
            r.figure,
            r.name,
            _fmt(r.value),
            r.unit,
            f"{_fmt(r.baseline)}" + (f" ({r.baseline_name})" if r.baseline is not None else ""),
            "-"
            if r.ratio is None or not math.isfinite(r.ratio)
            else f"{r.ratio:.2f}x"
            if abs(r.ratio) >= 0.1
            else f"{r.ratio:.3g}x",
            r.target,
            r.status,
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]
    widths[4] = min(widths[4], 48)
    lines = [
        "  ".join(str(c)[:w].ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in (head, *body)
    ]
    lines.insert(1, "-" * max(len(x) for x in lines))
    return "\n".join(lines)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (other jobs on a shared
    machine stretch the wall, much less the CPU time)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run of every figure, for CI)")
    parser.add_argument("--only", default="", help="comma-separated figure numbers, e.g. 2,6")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    wanted = [k for k in FIGURES if not args.only or k in args.only.split(",")]
    if args.quick:
        wanted = [k for k in wanted if FIGURES[k][2]]
    mode = "quick" if args.quick else "full"
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    c0 = cpu_seconds()
    print(
        f"benchmarks ({mode} mode), figures {', '.join(wanted)}; ratio = value / baseline; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start",
        flush=True,
    )
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    crashed = []
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        for key in wanted:
            title, module, _ = FIGURES[key]
            work = Path(tmp) / f"fig{key}"
            work.mkdir()
            f0, fc0 = time.perf_counter(), cpu_seconds()
            print(f"[{key}] {title}: sizes {module.sizes(args.quick)} ...", flush=True)
            try:
                fig_rows, detail = module.run(args.quick, work)
            except Exception as exc:  # a crash: reported, the other figures still run, exit 1
                crashed.append(key)
                traceback.print_exc()
                figures[key] = {"title": title, "error": f"{exc.__class__.__name__}: {exc}"}
                continue
            secs, cpu = time.perf_counter() - f0, cpu_seconds() - fc0
            print(f"[{key}] done in {secs:.1f} s ({cpu:.1f} s CPU)", flush=True)
            rows.extend(fig_rows)
            figures[key] = {
                "title": title,
                "seconds": secs,
                "cpu_seconds": cpu,
                "detail": detail,
                "rows": [r.as_dict() for r in fig_rows],
            }
    duration, cpu_total = time.perf_counter() - t0, cpu_seconds() - c0
    print()
    print(table(rows))
    verdicts = {v: sum(r.status == v for r in rows) for v in ("pass", "miss", "inconclusive", "match", MISMATCH)}
    print(
        f"\n{mode} mode, {duration:.0f} s wall, {cpu_total:.0f} s CPU (this process and its children; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end); speed targets (reported, never enforced): {verdicts['pass']} pass, "
        f"{verdicts['miss']} miss, {verdicts['inconclusive']} inconclusive; correctness checks (enforced): "
        f"{verdicts['match']} match, {verdicts[MISMATCH]} MISMATCH"
    )
    report = {
        "mode": mode,
        "started_utc": started.isoformat(timespec="seconds"),
        "duration_s": duration,
        "cpu_s": cpu_total,
        "load_average_end": os.getloadavg(),  # (1, 5, 15 min): how shared the machine was
        "machine": machine_info(),
        "ratio": "value / baseline",
        "figures": figures,
        "rows": [r.as_dict() for r in rows],
        "crashed": crashed,
        "mismatches": [r.as_dict() for r in rows if r.status == MISMATCH],
        "exit_code": exit_code(rows, crashed),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {args.output}")
    if crashed:
        print(f"figure(s) {', '.join(crashed)} crashed", file=sys.stderr)
    for r in rows:
        if r.status == MISMATCH:
            print(f"correctness MISMATCH in figure {r.figure}: {r.name} ({r.note})", file=sys.stderr)
    return exit_code(rows, crashed)


if __name__ == "__main__":
    raise SystemExit(main())
