"""Shared pieces: result rows, timers, machine info, config building and the subprocess runner."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PACKAGES = (
    "quant-engine",
    "vectorbt",
    "vectorbt-rust",
    "numba",
    "numpy",
    "pandas",
    "polars",
    "duckdb",
    "pyarrow",
    "hydra-core",
    "pydantic",
    "backtesting",
    "scipy",
)


@dataclass
class Row:
    """One measured figure. ``ratio = value / baseline`` (see the table header)."""

    figure: str
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    status: str = ""  # PASS | MISS | INCONCLUSIVE (speed, reported) | MATCH | MISMATCH (correctness, enforced) | ""
    note: str = ""
    ratio: float | None = field(default=None)

    def __post_init__(self) -> None:
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PASS, MISS, INCONCLUSIVE = "pass", "miss", "inconclusive"  # speed targets: reported, never enforced
MATCH, MISMATCH = "match", "MISMATCH"  # correctness checks: a MISMATCH makes the command exit 1


def check(value: float | None, limit: float) -> str:
    """Verdict of a point estimate against ``value <= limit``.

    ``pass`` / ``miss``; ``inconclusive`` when the estimate is not a positive finite number (a cost
    or a ratio of two costs cannot be <= 0: such a value is noise, not a result).
    """
    if value is None:
        return ""
    if not (math.isfinite(value) and value > 0):
        return INCONCLUSIVE
    return PASS if value <= limit else MISS


def check_interval(estimate: float, low: float, high: float, limit: float, *, positive: bool = True) -> str:
    """Verdict of a noisy estimate, given its noise interval ``[low, high]``, against ``<= limit``.

    ``inconclusive`` when the interval straddles the limit or, for a quantity that must be
    positive (a cost, a ratio of costs: ``positive=True``), when the estimate or the interval's low
    end is <= 0 (the estimate is negative or inside its own noise); ``pass`` only when the whole
    interval is <= limit, ``miss`` only when the whole interval is above it. A non-finite value or
    an interval that does not hold the estimate is ``inconclusive``.
    """
    if not all(math.isfinite(x) for x in (estimate, low, high)) or not low <= estimate <= high:
        return INCONCLUSIVE
    if positive and (estimate <= 0 or low <= 0):
        return INCONCLUSIVE
    if high <= limit:
        return PASS
    if low > limit:
        return MISS
    return INCONCLUSIVE


def check_equal(equal: bool) -> str:
    """Verdict of a correctness check: ``match`` or ``MISMATCH`` (which fails the command)."""
    return MATCH if equal else MISMATCH


def exit_code(rows: list[Row], crashed: list[str]) -> int:
    """1 when a figure crashed or any correctness row is a ``MISMATCH``; speed verdicts never count."""
    return 1 if crashed or any(r.status == MISMATCH for r in rows) else 0


def loglog_exponent(x: list[float], y: list[float]) -> float:
    """Least-squares slope of ``log y`` on ``log x``: ``y ~ x**b`` returns ``b`` (1 = linear).

    NaN when fewer than two distinct ``x`` or any value is not > 0.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xs) < 2 or len(np.unique(xs)) < 2 or (xs <= 0).any() or not (ys > 0).all():
        return float("nan")
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def best_of(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired_times(
    fn_a: Callable[[], Any], fn_b: Callable[[], Any], repeat: int = 5, warmup: int = 1
) -> tuple[list[float], list[float]]:
    """Wall times of ``fn_a`` and ``fn_b`` called alternately (a, b, a, b, ...) after ``warmup``
    untimed calls of each, so that a slow spell of a shared machine hits both sides of a pair."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn_a()
        t1 = time.perf_counter()
        fn_b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return ta, tb


def median_interval(values: list[float], coverage: float = 0.95) -> tuple[float, float, float]:
    """``(median, low, high)``: the median and a distribution-free confidence interval for it.

    The interval is ``[x(k), x(n+1-k)]`` of the sorted values with the largest ``k`` whose coverage
    ``1 - 2 P(Binomial(n, 1/2) <= k-1)`` is >= ``coverage``; with too few values to reach it
    (n <= 5 for 95 %) it is the whole range. One outlier among many pairs thus does not decide a
    verdict, and a handful of pairs gives their full spread.
    """
    xs = sorted(values)
    n = len(xs)
    k = 1
    while k + 1 <= (n + 1) // 2:
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # P(Bin(n, 1/2) <= k)
        if 1 - 2 * tail < coverage:
            break
        k += 1
    return statistics.median(xs), xs[k - 1], xs[n - k]


def ratio_interval(ta: list[float], tb: list[float]) -> tuple[float, float, float]:
    """``(median, low, high)`` of the paired ratios ``ta[i] / tb[i]`` (see ``median_interval``)."""
    return median_interval([a / b for a, b in zip(ta, tb, strict=True)])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def machine_info() -> dict[str, Any]:
    """CPU count, platform, python, package versions, memory and the git commit."""
    from engine.outputs.artefacts import package_versions

    versions = package_versions(PACKAGES)
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": sys.version.split()[0],
        "packages": versions,
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True)
        info["git_commit"] = sha.stdout.strip()
        info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = None
    return info


def run_config(lakehouse: Path, output: Path, overrides: list[str]) -> Any:
    """A validated RunConfig like tests/helpers.py builds it: compose, set paths, validate."""
    from engine.compose import config_compose
    from engine.config import config_validate

    raw = config_compose(["quiet=true", *overrides])[1]
    raw["paths"] = {"lakehouse_dir": str(lakehouse), "output_dir": str(output)}
    return config_validate(raw)


# The code a fresh interpreter runs (``python -c``): compose, run_backtest ``repeat`` times in one
# process, report wall times, stage timings and the process's own peak RSS as one JSON line.
CHILD = r"""
import json, os, resource, sys, time
t_start = time.time()
args = json.loads(sys.argv[1])
from engine.compose import config_compose
from engine.tasks import run_backtest
from engine.config import config_validate
raw = config_compose(["quiet=true", *args["overrides"]])[1]
runs = []
for i in range(args["repeat"]):
    raw["paths"] = {"lakehouse_dir": args["lake"], "output_dir": args["out"] + f"/run{i}"}
    cfg = config_validate(raw)
    t0 = time.perf_counter()
    r = run_backtest(cfg)
    runs.append({"wall_s": time.perf_counter() - t0, "end_epoch": time.time(), "timings": r.timings,
                 "n_trades": r.metrics.get("n_trades"), "n_windows": r.metrics.get("n_windows"),
                 "n_ambiguous": r.metrics.get("n_ambiguous_exits")})
out = {"start_epoch": t_start, "runs": runs}
if os.environ.get("BENCH_REPORT_MODULES"):  # the modules a run loads (figure 5's import baseline)
    out["modules"] = sorted(sys.modules)
# VmHWM: this image's own peak RSS (ru_maxrss would include the parent's RSS at fork, kept over exec)
try:
    hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["maxrss_mb"] = hwm
print("BENCH_JSON " + json.dumps(out))
"""


def backtest_subprocess(
    lake: Path,
    out: Path,
    overrides: list[str],
    repeat: int = 1,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
) -> dict[str, Any]:
    """Run ``run_backtest`` ``repeat`` times in a fresh ``python -c`` and return its measurements.

    Adds ``lakehouse_existed`` (before the launch), ``first_s`` (launch to the end of the first
    run: interpreter start, imports, compose and the run) and ``process_wall_s``.
    """
    existed = any(lake.glob("*/bars"))  # one namespace per data identity under the lakehouse
    out.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"lake": str(lake), "out": str(out), "overrides": overrides, "repeat": repeat})
    t_launch = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, payload],
        cwd=out,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - t0
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        msg = f"backtest subprocess failed (exit {proc.returncode}) with {overrides}:\n{tail}"
        raise RuntimeError(msg)
    res = json.loads(line.removeprefix("BENCH_JSON "))
    res["lakehouse_existed"] = existed
    res["first_s"] = res["runs"][0]["end_epoch"] - t_launch
    res["startup_s"] = res["start_epoch"] - t_launch
    res["process_wall_s"] = wall
    return res


def engine_cli(cwd: Path, args: list[str], timeout: float = 3600, tree: Path = REPO) -> tuple[float, float, str]:
    """``python -m engine ARGS`` from ``cwd`` with the engine of ``tree``; returns (wall s, CPU s, stdout); raises on failure."""
    cwd.mkdir(parents=True, exist_ok=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-15:])
        msg = f"python -m engine failed (exit {proc.returncode}) with {args} in {tree}:\n{tail}"
        raise RuntimeError(msg)
    return wall, cpu, proc.stdout
