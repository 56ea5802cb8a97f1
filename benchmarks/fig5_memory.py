"""Figure 5, default-run rows (issue 23, item 4): peak RSS of a warm ``python -m engine`` and generation time.

Sizes: 500, 2,000 and 20,000 synthetic symbols of the default profile (2021-2024 daily; quick: 50,
150 and 450). Per size, whole processes from a temp folder:

1. ``python -m engine task=ingest +profile=crypto_rating data.n_symbols=N`` generates the store
   (whole-process wall; target <= 120 s at 20,000, full mode);
2. ``repeat`` warm runs of ``python -m engine +profile=crypto_rating data.n_symbols=N`` on that
   store (numba cache warm), each reporting its own peak RSS (VmHWM at exit) and, from its
   engine.log, ``run_backtest``'s total and stage times;
3. one *reference* run of the same command with the universe read as ONE batch
   (``SCAN_BATCH`` and ``SLICE_BATCH`` set above the universe: the whole panel at once, as before
   the batching), whose peak RSS is the baseline of the memory rows.

Correctness (enforced): every warm run's metrics.json and winners.parquet are byte-identical to the
reference run's. Targets: peak RSS <= 600 MB at 2,000 and <= 2,048 MB at 20,000 (absolute, full
mode); the exponent ``b`` of ``run_backtest``'s warm total ~ symbols**b <= 1.1 (noise interval: the
per-repetition fits).
"""

from __future__ import annotations

import hashlib
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, Row, check, check_equal, check_interval, loglog_exponent

FIG = "5 scaling"
RSS_TARGETS_MB = {2000: 600.0, 20000: 2048.0}
GENERATION_TARGET_S = {20000: 120.0}
EXPONENT_TARGET = 1.1
UNIVERSE = ("data", "ranking", "windows")

# ``python -m engine ARGV`` in a wrapper that prints the process's own peak RSS at exit; "whole" reads
# the universe as one batch (the reference: the panel at once, as before the batching).
CLI_CHILD = r"""
import atexit, sys
if sys.argv[1] == "whole":
    import engine.data.lakehouse as lakehouse, engine.data.panel as panel
    lakehouse.SCAN_BATCH = panel.SLICE_BATCH = 1 << 40
def _hwm():
    mb = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")) / 1024
    print(f"BENCH_RSS_MB {mb}", file=sys.stderr)
atexit.register(_hwm)
sys.argv = ["engine", *sys.argv[2:]]
from engine.cli import main
main()
"""


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"n_symbols": [50, 150, 450], "repeat": 2}
    return {"n_symbols": [500, 2000, 20000], "repeat": 2}


def cli_run(cwd: Path, mode: str, args: list[str], timeout: float = 3600) -> dict[str, Any]:
    """One wrapped ``python -m engine`` process: wall, peak RSS (MB) and its stderr."""
    cwd.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CLI_CHILD, mode, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-15:])
        msg = f"python -m engine failed (exit {proc.returncode}) with {args}:\n{tail}"
        raise RuntimeError(msg)
    rss = float(re.findall(r"BENCH_RSS_MB ([0-9.]+)", proc.stderr)[-1])
    return {"wall_s": wall, "maxrss_mb": rss}


def run_log(cwd: Path) -> dict[str, float]:
    """``run_backtest``'s stage times and total from the engine.log of the one run started in ``cwd``.

    The log is in the run's output directory (``cwd / "out"``), or in Hydra's run directory.
    """
    text = next(iter([*cwd.glob("out/engine.log"), *cwd.glob("outputs/runs/*/*/engine.log")])).read_text()
    times = {m[0]: float(m[1]) for m in re.findall(r"stage (\w+): ([0-9.]+) s", text)}
    times["total"] = float(re.findall(r"total ([0-9.]+) s", text)[-1])
    return times


def digest(out: Path) -> str:
    """sha256 over the run's metrics.json and winners.parquet (the correctness comparison)."""
    h = hashlib.sha256()
    for name in ("metrics.json", "winners.parquet"):
        h.update((out / name).read_bytes())
    return h.hexdigest()


def size_run(n: int, rep: int, tmp: Path, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """Generate the store of ``n`` symbols, run the reference and ``rep`` warm runs; their rows."""
    lake = tmp / f"lake-{n}"
    common = ["+profile=crypto_rating", f"data.n_symbols={n}", f"paths.lakehouse_dir={lake}", "quiet=true"]
    gen = cli_run(tmp / f"gen-{n}", "batched", ["task=ingest", *common])
    cli_run(tmp / f"warmup-{n}", "batched", [*common, f"paths.output_dir={tmp / f'warmup-{n}' / 'out'}"])
    ref_out = tmp / f"ref-{n}"
    ref = cli_run(ref_out, "whole", [*common, f"paths.output_dir={ref_out / 'out'}"])
    runs = []
    for i in range(rep):
        out = tmp / f"warm-{n}-{i}"
        r = cli_run(out, "batched", [*common, f"paths.output_dir={out / 'out'}"])
        runs.append({**r, "timings": run_log(out), "same": digest(out / "out") == digest(ref_out / "out")})
    peak = max(r["maxrss_mb"] for r in runs)
    full = not quick and n in RSS_TARGETS_MB
    stages = {k: statistics.median(r["timings"].get(k, 0.0) for r in runs) for k in runs[0]["timings"]}
    rows = [
        Row(
            FIG,
            f"{n} symbols, default run: peak RSS of the warm process",
            peak,
            "MB",
            ref["maxrss_mb"],
            "same run, universe in one batch",
            target=f"<= {RSS_TARGETS_MB[n]:.0f} MB (absolute)" if full else "",
            status=check(peak, RSS_TARGETS_MB[n]) if full else "",
            note=f"max of {rep} processes; stages s: "
            + ", ".join(f"{k} {v:.2f}" for k, v in stages.items() if k != "total"),
        ),
        Row(
            FIG,
            f"{n} symbols, default run: metrics.json + winners.parquet equal the one-batch run's",
            sum(r["same"] for r in runs),
            "runs",
            rep,
            "warm runs",
            status=check_equal(all(r["same"] for r in runs)),
        ),
        Row(
            FIG,
            f"{n} symbols: generate the store (task=ingest, whole process)",
            gen["wall_s"],
            "s",
            target=f"<= {GENERATION_TARGET_S[n]:.0f} s (absolute)" if not quick and n in GENERATION_TARGET_S else "",
            status=check(gen["wall_s"], GENERATION_TARGET_S[n]) if not quick and n in GENERATION_TARGET_S else "",
            note=f"peak RSS {gen['maxrss_mb']:.0f} MB",
        ),
    ]
    return rows, {"generate": gen, "reference": ref, "warm": runs}


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    """The default-run memory and generation rows of figure 5, and the warm-time exponents."""
    size = sizes(quick)
    ns, rep = size["n_symbols"], size["repeat"]
    rows: list[Row] = []
    detail: dict[str, Any] = {"sizes": size}
    for n in ns:
        r, d = size_run(n, rep, tmp, quick)
        rows += r
        detail[str(n)] = d
    x = [float(n) for n in ns]
    for label, keys in (("run_backtest total", ("total",)), ("universe stages (data+ranking+windows)", UNIVERSE)):
        per = [[sum(detail[str(n)]["warm"][i]["timings"].get(k, 0.0) for k in keys) for n in ns] for i in range(rep)]
        med = [statistics.median(p[j] for p in per) for j in range(len(ns))]
        b = loglog_exponent(x, med)
        fits = [loglog_exponent(x, p) for p in per]
        lo, hi = min([b, *fits]), max([b, *fits])
        rows.append(
            Row(
                FIG,
                f"default run, time vs symbols: {label} ({len(ns)} sizes)",
                b,
                "exponent",
                target=f"<= {EXPONENT_TARGET} (~linear or better)",
                status=check_interval(b, lo, hi, EXPONENT_TARGET, positive=False),
                note=f"interval {lo:.2f}..{hi:.2f} over {rep} repetitions; "
                + ", ".join(f"{n}: {v:.2f} s" for n, v in zip(ns, med, strict=True)),
            )
        )
    return rows, detail
