"""Restructure: the workloads of figures 1, 2, 6 and 7 on the code before the restructure and now (issue 21).

The golden artefacts were recorded at commit 7581975, before the run layer was restructured; the
issue asks that figures 1, 2, 6 and 7 be not slower since. This figure runs the same workloads on
both trees in the same command:

- the old tree is ``git archive 7581975`` unpacked in a temp dir (no worktree to register or leave
  behind; removed with the temp dir), with ``engine/conf`` and ``engine/queries`` linked to its own
  ``conf/`` and ``sql/`` so its configuration and queries are its own, not the editable install's;
- each side runs in its own ``python`` subprocess with ``PYTHONPATH`` at its tree, the same
  interpreter and packages (the child checks that ``engine`` and ``engine.conf`` come from its tree);
- the workloads:
  1. figure 1: the default profile (``+profile=crypto_rating``; quick: 50 symbols from 2023) in a
     fresh process calling ``run_backtest`` twice: the first run (launch to its end: imports,
     numba cache loads, compose, the run and its artefacts) and the warm run (the second call);
  2. figure 2: ``VectorBTSimulator.simulate`` on 10 columns x 8,766 4h bars with exit rules
     (SL 5 % / TP 15 %) and in rebalance mode, and one window call (7 daily bars x 10 columns,
     shares carried in), in process, the fastest of repeated calls (the least disturbed by other jobs);
  6. figure 6: the vectorised grid of the backtesting.py comparison (one asset, 1,500 daily bars,
     SMA 10/30 cross): the entries of every combination and ``simulate_grid`` of 9 and of 25 books;
  7. figure 7: the vectorised grid ``python -m engine task=grid grid=sl_tp_27`` (27 combinations;
     quick: 30 symbols over 2023), launch to exit (the sweep summary and its heatmap included);
- beside each wall time of a process, its CPU time (user + system, ``RUSAGE_CHILDREN``), which the
  other jobs of a shared machine disturb much less;
- the current tree runs with ``survivorship.audit=false``: the audit (a second, survivors-only walk)
  is a feature added after the restructure, not in the old code's work; like with like.

Pairs: each pair runs the old side and the current side back to back, the order alternating from
pair to pair over an even number of pairs (on a loaded machine the second process of a pair was
seen to be the slower one, whichever tree it ran), so a slow spell of the shared machine hits both. Ratio = current / old per pair;
verdict as figure 8 (:func:`benchmarks.fig8_wfo.pair_row`): the median pair ratio with its noise
band, two robust standard errors from the spread of the pairs (``2 * 1.4826 * MAD / sqrt(pairs)``);
``pass`` when median + band <= 1.05 (not slower, within 5 %), ``miss`` when median - band > 1.05,
else ``inconclusive``. Correctness (enforced): both trees give the same numbers: metrics.json
(less the blocks added since, as the golden test does), trades, orders, equity and winners of the
runs and of every grid combination, and the order records of the simulation calls; a difference
is a ``MISMATCH``. Skipped, with the reason as the row's note, when git or the commit is missing
(e.g. in an sdist) or the old tree does not import in this environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, Row, check_equal, engine_cli
from benchmarks.fig8_wfo import pair_row

FIG = "restructure"
COMMIT = "7581975"
TARGET = 1.05
NEW_KEYS = ("survivorship",)  # metrics.json blocks added after the golden record (tests/test_readme_commands.py)
ARTEFACTS = ("metrics.json", "equity.parquet", "orders.parquet", "trades.parquet", "winners.parquet")
QUICK_E2E = ["data.n_symbols=50", "data.start=2023-01-01"]
QUICK_GRID = ["data.n_symbols=30", "data.start=2023-01-01", "data.end=2023-12-31"]

# Run in each tree (``python -c``): checks the tree, then the in-process workloads of figures 2 and 6,
# or figure 1's two runs; one JSON line of seconds and digests.
CHILD = r"""
import hashlib, json, sys, time
t_launch = float(sys.argv[2])
args = json.loads(sys.argv[1])
from importlib import resources
import engine
tree = args["tree"]
for what, path in (("engine", engine.__file__), ("engine.conf", str(resources.files("engine.conf")))):
    if not path.startswith(tree):
        raise SystemExit(f"{what} imports from {path}, not from the tree {tree}")
out = {"tree": tree}
if args["kind"] == "e2e":
    try:
        from engine.compose import config_compose
        from engine.tasks import run_backtest
    except ImportError:  # before the restructure
        from engine.cli import config_compose, run_backtest
    from engine.config import config_validate
    raw = config_compose(["quiet=true", *args["overrides"]])[1]
    walls = []
    for i in range(2):
        raw["paths"] = {"lakehouse_dir": args["lake"], "output_dir": args["out"] + f"/run{i}"}
        t0 = time.perf_counter()
        run_backtest(config_validate(raw))
        walls.append(time.perf_counter() - t0)
        if i == 0:
            out["first_s"] = time.time() - t_launch
    out["warm_s"] = walls[1]
else:
    import numpy as np
    try:
        from engine.config.exit_rules import ExitRules
    except ImportError:
        from engine.exit_rules import ExitRules
    from engine.simulation.vbt import PriceBlock, VectorBTSimulator
    from engine.testing import crosscheck_ohlc, entries_while_flat, sma_cross

    def ohlc(n, k, hours, seed):
        rng = np.random.default_rng(seed)
        close = 100 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (n, k)), axis=0))
        open_ = np.vstack([np.full((1, k), 100.0), close[:-1]]) * np.exp(rng.normal(0, 0.002, (n, k)))
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.006, (n, k))))
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.006, (n, k))))
        index = np.datetime64("2021-01-01", "ns") + np.arange(n) * np.timedelta64(hours, "h")
        return PriceBlock(open_, high, low, close, index.astype("datetime64[ns]"), tuple(f"S{j}" for j in range(k)))

    def every(n, k, step):
        w = np.full((n, k), np.nan)
        w[::step] = 1.0 / k
        return w

    sim = VectorBTSimulator(0.001, 0.0005, "rust")
    prices, w = ohlc(1461 * 6, 10, 4, 1), every(1461 * 6, 10, 42)
    wp, ww = ohlc(7, 10, 24, 2), every(7, 10, 7)
    rules = ExitRules(sl_stop=0.05, tp_stop=0.15)
    df = crosscheck_ohlc()
    one = PriceBlock(*(df[[c]].to_numpy(dtype=np.float64).copy() for c in ("Open", "High", "Low", "Close")),
                     df.index.to_numpy(dtype="datetime64[ns]"), ("X",))
    close = df["Close"].to_numpy()
    peer = VectorBTSimulator(0.0, 0.0, "rust")

    def grid(sls, tps):
        rs = [ExitRules(sl_stop=a, tp_stop=b) for a in sls for b in tps]
        s = sma_cross(close)
        ws = [entries_while_flat(one, s, r) for r in rs]
        return peer.simulate_grid(one, ws, rs, init_cash=[1e7] * len(rs), carry_shares=[None] * len(rs))

    work = {
        "fig2_exit_rules": lambda: [sim.simulate(prices, w, rules, init_cash=1e5)],
        "fig2_rebalance": lambda: [sim.simulate(prices, w, None, init_cash=1e5)],
        "fig2_window": lambda: [sim.simulate(wp, ww, rules, init_cash=1e5, carry_shares=np.full(10, 50.0),
                                             carry_price=wp.open[0])],
        "fig6_grid_9": lambda: grid((0.05, 0.07, 0.10), (0.10, 0.15, 0.20)),
        "fig6_grid_25": lambda: grid((0.03, 0.05, 0.07, 0.10, 0.12), (0.10, 0.15, 0.20, 0.25, 0.30)),
    }
    for name, fn in work.items():
        res = fn()  # warm-up (numba cache loads, first calls); its records are the digest
        h = hashlib.sha256()
        for r in res:
            h.update(np.ascontiguousarray(r.order_records).tobytes())
        reps = args["repeat"] * (10 if name == "fig2_window" else 1)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = {"s": min(times), "digest": h.hexdigest()}  # the least disturbed call of a shared machine
print("BENCH_JSON " + json.dumps(out))
"""


def sizes(quick: bool) -> dict[str, Any]:
    return {
        "old_commit": COMMIT,
        "figure_1": "default profile, 50 symbols from 2023 (quick)"
        if quick
        else "default profile (100 symbols, 2021-2024)",
        "figure_2": "10 cols x 8766 4h bars (exit rules, rebalance); one window call 7 x 10",
        "figure_6": "1 asset x 1500 daily bars, grids of 9 and 25 combinations",
        "figure_7": "task=grid grid=sl_tp_27, " + ("30 symbols over 2023 (quick)" if quick else "default universe"),
        "pairs": 2 if quick else 8,  # even: each side goes first in half of the pairs (quick: a smoke run for CI)
        # calls of 0.3-9 ms: the fastest of many is the one no other job disturbed (with 9, one pair
        # of six read 1.58x on a quiet machine)
        "repeat": 5 if quick else 60,
    }


def old_tree(tmp: Path) -> tuple[Path | None, str]:
    """Unpack commit :data:`COMMIT` into ``tmp/old``; (None, why) when git or the commit is missing."""
    if shutil.which("git") is None:
        return None, "git is not installed"
    if not (REPO / ".git").exists():
        return None, f"{REPO} is not a git checkout (an sdist or an installed package)"
    probe = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{COMMIT}^{{commit}}"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return None, f"commit {COMMIT} is not in this repository (a shallow clone? `git fetch --unshallow`)"
    archive = tmp / "old.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), COMMIT], check=True)
    root = tmp / "old"
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    archive.unlink()
    for link, target in (("conf", "conf"), ("queries", "sql")):  # its own conf/ and sql/, not the installed ones
        (root / "engine" / link).symlink_to(Path("..") / target)
    return root, ""


def child(tree: Path, payload: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """Run :data:`CHILD` in ``tree``; returns its JSON (``first_s`` counts from the launch)."""
    cwd.mkdir(parents=True, exist_ok=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps({**payload, "tree": str(tree)}), repr(t)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-12:])
        msg = f"{payload['kind']} in {tree} failed (exit {proc.returncode}):\n{tail}"
        raise RuntimeError(msg)
    out: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    out["cpu_s"] = _cpu_since(r0)
    return out


def _cpu_since(r0: resource.struct_rusage) -> float:
    """User + system CPU seconds of the children waited for since ``r0``."""
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def cli(tree: Path, args: list[str], cwd: Path) -> tuple[float, float]:
    """``python -m engine ARGS`` in ``tree`` from ``cwd``: (launch to exit, CPU of the process), seconds."""
    wall, cpu, _ = engine_cli(cwd, args, tree=tree)
    return wall, cpu


def digests(root: Path) -> dict[str, str]:
    """sha256 of every artefact below ``root`` by its path from the run directory (metrics less :data:`NEW_KEYS`)."""
    import polars as pl

    out: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.name in ARTEFACTS):
        # from the outermost run directory (params.json) below root: a grid's combos/NNN keep their path
        runs = [a for a in path.parents if a.is_relative_to(root) and (a / "params.json").is_file()]
        run_dir = runs[-1] if runs else root
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            data = (
                repr(list(frame.schema.items())) + "\n" + "\n".join(repr(c.to_list()) for c in frame.get_columns())
            ).encode()
        else:
            obj = json.loads(path.read_bytes())
            data = json.dumps({k: v for k, v in obj.items() if k not in NEW_KEYS}, sort_keys=True).encode()
        out[path.relative_to(run_dir).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


def _skip(size: dict[str, Any], why: str) -> tuple[list[Row], dict[str, Any]]:
    row = Row(FIG, f"figures 1, 2, 6, 7: current / {COMMIT}", None, "", note=f"skipped: {why}")
    return [row], {"sizes": size, "skipped": why}


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    size = sizes(quick)
    old, why = old_tree(tmp)
    if old is None:
        return _skip(size, why)
    trees = {"old": old, "current": REPO}
    lakes = {side: tmp / f"lake_{side}" for side in trees}  # each tree's data layer writes its own store
    extra = {"old": [], "current": ["survivorship.audit=false"]}  # like with like (module docstring)
    e2e = ["+profile=crypto_rating", *(QUICK_E2E if quick else [])]
    grid = ["+profile=crypto_rating", "task=grid", "grid=sl_tp_27", "quiet=true", *(QUICK_GRID if quick else [])]

    def e2e_run(side: str, tag: str) -> dict[str, Any]:
        payload = {"kind": "e2e", "lake": str(lakes[side]), "out": str(tmp / f"e2e_{side}_{tag}"),
                   "overrides": [*e2e, *extra[side]]}  # fmt: skip
        return child(trees[side], payload, tmp / f"cwd_{side}")

    def sim_run(side: str) -> dict[str, Any]:
        return child(trees[side], {"kind": "sim", "repeat": size["repeat"]}, tmp / f"cwd_{side}")

    def grid_run(side: str, tag: str) -> tuple[float, float]:
        return cli(trees[side], [*grid, f"paths.lakehouse_dir={lakes[side]}", *extra[side]], tmp / f"grid_{side}_{tag}")

    try:  # untimed: the old tree's store, numba caches and imports (it must run in this environment)
        e2e_run("old", "warmup"), sim_run("old"), grid_run("old", "warmup")
    except RuntimeError as exc:
        return _skip(size, f"the tree of {COMMIT} does not run in this environment: {str(exc).splitlines()[-1]}")
    e2e_run("current", "warmup"), sim_run("current"), grid_run("current", "warmup")
    res: dict[str, list[tuple[float, float]]] = {}
    checks: dict[str, bool] = {}
    for i in range(size["pairs"]):
        order = ("old", "current") if i % 2 == 0 else ("current", "old")  # who goes first alternates
        e = {side: e2e_run(side, str(i)) for side in order}
        s = {side: sim_run(side) for side in order}
        g = {side: grid_run(side, str(i)) for side in order}
        res.setdefault("figure 1: first run (fresh process, launch to end)", []).append(
            (e["old"]["first_s"], e["current"]["first_s"])
        )
        res.setdefault("figure 1: warm run (2nd call, same process)", []).append(
            (e["old"]["warm_s"], e["current"]["warm_s"])
        )
        res.setdefault("figure 1: CPU time of that process (both runs)", []).append(
            (e["old"]["cpu_s"], e["current"]["cpu_s"])
        )
        for key in ("fig2_exit_rules", "fig2_rebalance", "fig2_window", "fig6_grid_9", "fig6_grid_25"):
            res.setdefault(key, []).append((s["old"][key]["s"], s["current"][key]["s"]))
            checks[key] = checks.get(key, True) and s["old"][key]["digest"] == s["current"][key]["digest"]
        res.setdefault("figure 7: task=grid grid=sl_tp_27, launch to exit", []).append((g["old"][0], g["current"][0]))
        res.setdefault("figure 7: task=grid grid=sl_tp_27, CPU time", []).append((g["old"][1], g["current"][1]))
        if i == 0:
            checks["figure 1 artefacts"] = digests(tmp / "e2e_old_0") == digests(tmp / "e2e_current_0") != {}
            checks["figure 7 artefacts"] = digests(tmp / "grid_old_0") == digests(tmp / "grid_current_0") != {}
    return _rows(res, checks, size)


NAMES = {
    "fig2_exit_rules": "figure 2: simulate, exit rules (10 cols x 8766 4h bars)",
    "fig2_rebalance": "figure 2: simulate, rebalance (10 cols x 8766 4h bars)",
    "fig2_window": "figure 2: one window call (7 daily bars x 10 cols, carry-in)",
    "fig6_grid_9": "figure 6: entries + simulate_grid, 9 books",
    "fig6_grid_25": "figure 6: entries + simulate_grid, 25 books",
}


def _rows(
    res: dict[str, list[tuple[float, float]]], checks: dict[str, bool], size: dict[str, Any]
) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    detail: dict[str, Any] = {"sizes": size}
    for key, pairs in res.items():
        row, detail[key] = pair_row(
            FIG, f"{NAMES.get(key, key)}: current / {COMMIT}", f"{COMMIT}, before the restructure", pairs, TARGET
        )
        rows.append(row)
    for key, same in checks.items():
        what = "order records" if key in NAMES else "metrics, trades, orders, equity, winners"
        rows.append(
            Row(
                FIG,
                f"  {NAMES.get(key, key)}: {what} equal to {COMMIT}'s",
                None,
                "",
                target="equal",
                status=check_equal(same),
            )
        )
    detail["checks"] = checks
    detail["note"] = (
        "ratio current / old per back-to-back pair (order alternating); median +- 2 robust standard errors "
        "(1.4826 MAD / sqrt(pairs)); pass when wholly <= 1.05, miss when wholly > 1.05; the current tree with "
        "survivorship.audit=false (the audit came after the restructure)"
    )
    return rows, detail
