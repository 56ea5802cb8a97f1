"""Walk-forward optimisation (``task=wfo``): choose an exit-rule combination on the past, trade it next.

``python -m engine task=wfo +profile=crypto_rating grid=sl_tp_27``

1. Every combination of the exit-rule grid walks forward as one book of one pass, exactly as
   ``task=grid`` does; each book's return in each window gives the (windows x combinations)
   matrix of per-window returns.
2. :func:`wfo_choices`, a pure function of that matrix, picks for each window k the combination
   whose objective (``wfo.objective``) was best over the training windows: the ``wfo.train_windows``
   windows before k (``wfo.anchored``: every window before k). It reads rows < k only. The first
   ``train_windows`` windows only train.
3. One out-of-sample book walks the windows from the first choice (``oos_start``, its ranking
   date) with fresh cash, its exit rules switched at each window start to that window's choice.
   **Carry rule**: a change of combination changes only the rules; the book's cash and open
   positions (quantity, cost basis, trailing peak, opening time) carry as they are, and the new
   rules apply to the carried positions from the new window's first bar (a carried position whose
   new stop level is already crossed at that bar's open exits there, at the open).

With one combination the out-of-sample book is, by construction, the run with
``backtest.start=<oos_start>`` and that combination (tests/test_wfo.py checks it to 1e-9).

Only exit-rule dimensions are supported: ranking and portfolio settings change the winners and
weights of every window (the ``WindowPlan``s are planned once per run and shared by all books of
a pass), so combinations of them cannot be books of one pass; walk them forward with separate
runs (a ``-m`` sweep) instead.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.config import RunConfig
from engine.errors import ConfigError
from engine.exit_rules import ExitRules
from engine.metrics import YEAR_DAYS
from engine.units import DAY_MS
from engine.validation import deflated_sharpe, first_identical, oos_report, sharpe_columns

log = logging.getLogger("engine")

OBJECTIVES = ("sharpe", "sortino", "calmar", "total_return")

WFO_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "window": pl.Int64,
    "rank_date": pl.Date,
    "rank_time": pl.Datetime("ms", "UTC"),
    "start": pl.Datetime("ms", "UTC"),
    "end": pl.Datetime("ms", "UTC"),
    "phase": pl.String,
    "combo": pl.Int64,
    "exit_rules": pl.String,
    "is_objective": pl.Float64,
    "oos_return": pl.Float64,
    "oos_rank": pl.Int64,
    "book_return": pl.Float64,
    "n_combinations": pl.Int64,
    "n_undefined": pl.Int64,
}


# ---- the selection: a pure function of the (windows x combinations) matrix --------------------


def objective_columns(returns: np.ndarray, objective: str) -> np.ndarray:
    """Compute the objective of each column of a (rows x combinations) block of per-window returns.

    NaN (undefined, ranked last) where a column has a non-finite return, never moved (all returns
    exactly 0: it held nothing, e.g. no trades), or the objective has no value: sharpe (mean / std,
    ddof=1) with fewer than two rows or zero variance; sortino (mean / downside deviation) without
    a losing row. calmar is the geometric mean return over the maximum drawdown of the compounded
    rows (+inf with no drawdown and a positive return, 0 with neither); total_return the
    compounded return.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    if objective not in OBJECTIVES:
        msg = f"unknown objective {objective!r}: use one of {', '.join(OBJECTIVES)}"
        raise ValueError(msg)
    m = r.shape[1]
    if r.shape[0] == 0:
        return np.full(m, np.nan)
    undefined = ~np.isfinite(r).all(axis=0) | (r == 0.0).all(axis=0)
    rr = np.where(np.isfinite(r), r, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if objective == "sharpe":
            out = sharpe_columns(rr)
        elif objective == "sortino":
            downside = np.sqrt(np.mean(np.minimum(rr, 0.0) ** 2, axis=0))
            out = np.where(downside > 0, rr.mean(axis=0) / np.where(downside > 0, downside, 1.0), np.nan)
        else:
            growth = np.cumprod(1.0 + rr, axis=0)
            total = growth[-1] - 1.0
            if objective == "total_return":
                out = total
            else:
                path = np.vstack([np.ones((1, m)), growth])
                dd = np.min(path / np.maximum.accumulate(path, axis=0) - 1.0, axis=0)
                gmean = np.where(growth[-1] > 0, growth[-1] ** (1.0 / r.shape[0]) - 1.0, -1.0)
                out = np.where(dd < 0, gmean / np.abs(np.where(dd < 0, dd, -1.0)), np.where(gmean > 0, np.inf, 0.0))
    out = np.asarray(out, dtype=np.float64).copy()
    out[undefined] = np.nan
    return out


def _best(values: np.ndarray) -> int:
    """Best objective: undefined (NaN) last, ties to the lowest index (all undefined: the first)."""
    return int(np.argmax(np.where(np.isnan(values), -np.inf, values)))


@dataclass(frozen=True)
class WfoChoices:
    """What :func:`wfo_choices` decided, per window (T rows)."""

    choices: np.ndarray
    """Chosen combination per window; -1 for a training-only window."""
    is_objective: np.ndarray
    """The chosen combination's objective over its training windows (NaN: training window, or
    every combination undefined)."""
    n_undefined: np.ndarray
    """Combinations whose objective was undefined at the window's choice (ranked last)."""
    train: list[tuple[int, int]]
    """The training rows [a, b) of each window's choice ((0, 0) for a training window)."""

    @property
    def first(self) -> int:
        """The first traded window (T when none)."""
        idx = np.flatnonzero(self.choices >= 0)
        return int(idx[0]) if idx.size else int(self.choices.size)


def wfo_choices(
    returns: np.ndarray, train_windows: int, anchored: bool = False, objective: str = "sharpe"
) -> WfoChoices:
    """Choose, for each window k >= ``train_windows``, the combination with the best ``objective``.

    The objective is taken over rows ``[k - train_windows, k)`` (``anchored``: ``[0, k)``) of
    ``returns`` (T x M per-window returns). Reads only rows < k for the choice at k; windows
    < ``train_windows`` only train.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 1:
        msg = f"returns must be a (windows x combinations) matrix with at least one column, got shape {r.shape}"
        raise ValueError(msg)
    if train_windows < 1:
        msg = f"train_windows must be >= 1, got {train_windows}"
        raise ValueError(msg)
    t = r.shape[0]
    choices = np.full(t, -1, dtype=np.int64)
    is_obj = np.full(t, np.nan)
    n_undef = np.zeros(t, dtype=np.int64)
    train = [(0, 0)] * t
    for k in range(train_windows, t):
        a = 0 if anchored else k - train_windows
        values = objective_columns(r[a:k], objective)
        best = _best(values)
        choices[k], is_obj[k], n_undef[k], train[k] = best, values[best], int(np.isnan(values).sum()), (a, k)
    return WfoChoices(choices, is_obj, n_undef, train)


def oos_ranks(returns: np.ndarray, choices: np.ndarray) -> np.ndarray:
    """Rank the chosen combination's return among all combinations in its window (1 = best).

    The rank is 1 + the number of combinations that did strictly better (NaN returns count as
    worst); 0 for a training window.
    """
    r = np.where(np.isfinite(returns), returns, -np.inf)
    out = np.zeros(len(choices), dtype=np.int64)
    for k, c in enumerate(choices):
        if c >= 0:
            out[k] = 1 + int(np.sum(r[k] > r[k, c]))
    return out


# ---- the task ----------------------------------------------------------------------------------


def windows_needed_message(train_windows: int, n_windows: int) -> str:
    return (
        f"wfo.train_windows={train_windows} leaves no window to trade: the data give {n_windows} walk-forward "
        f"window(s); use wfo.train_windows <= {max(n_windows - 1, 0)} (or more data, or a shorter backtest.hold)"
    )


def windows_precheck(cfg: RunConfig) -> None:
    """Refuse ``wfo.train_windows`` >= the windows the configured data range gives.

    The check runs before any run directory exists (synthetic and ccxt data know their range from
    the config; files data are checked once their coverage is read).
    """
    from engine.windows import date_ms, windows_build

    data = cfg.data
    if data.source not in ("synthetic", "ccxt") or data.start is None or data.end is None:
        return
    try:
        n = len(windows_build(date_ms(data.start), date_ms(data.end) + DAY_MS, cfg.backtest, cfg.ranking))
    except Exception:  # no window at all: the run says so itself
        return
    if cfg.wfo.train_windows >= n:
        raise ConfigError(windows_needed_message(cfg.wfo.train_windows, n))


def _annual(x: float, step_days: float) -> float | None:
    v = x * math.sqrt(YEAR_DAYS / step_days)
    return float(v) if math.isfinite(v) else None


def _rules_json(r: ExitRules | None) -> str:
    return json.dumps(None if r is None else r.model_dump(mode="json"), sort_keys=True)


def ledger_trials_count(
    cfg: RunConfig, trials: list[Any], fingerprint: str, fallback: int, what: str
) -> tuple[int, str]:
    """Append ``trials`` to ``paths.ledger`` and count the ledger's trials on ``fingerprint``.

    Never raises: a ledger failure is one warning line and the count falls back to ``fallback``.
    Returns the count and a sentence saying where it came from.
    """
    from engine.ledger import ledger_append, n_trials

    if cfg.paths.ledger is None:
        return fallback, f"{fallback} trials: the {what} alone (no ledger: paths.ledger is null)"
    try:
        ledger_append(trials, cfg.paths.ledger)
        n = n_trials(fingerprint, cfg.paths.ledger)
    except Exception as exc:  # a finished run must not fail on its bookkeeping
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        print(
            f"warning: trial ledger {cfg.paths.ledger} not updated ({first}); counting the {what} alone",
            file=sys.stderr,
        )
        return fallback, f"{fallback} trials: the {what} alone (ledger unavailable)"
    n = max(n, fallback)
    return n, f"{n} trials: the distinct configurations the ledger {cfg.paths.ledger} holds for this data fingerprint"


def wfo_run(cfg: RunConfig, config_yaml: str = "") -> Any:
    """Run ``task=wfo``: walk the grid forward, choose per window, and trade the choices out of sample.

    Writes the usual artefacts of the out-of-sample book plus ``wfo.parquet`` (into the output
    directory, claimed first: see :func:`engine.rundir.run_dir_claim`).
    """
    import contextlib

    from engine.cli import artefact_errors, output_dir
    from engine.rundir import run_dir_claim

    out = output_dir(cfg)
    with contextlib.ExitStack() as claim:
        with artefact_errors(out):
            claim.enter_context(run_dir_claim(out))
        return _wfo(cfg, out, config_yaml)


def _wfo(cfg: RunConfig, out: Path, config_yaml: str) -> Any:
    from engine.artefacts import artefacts_write, data_fingerprint
    from engine.cli import RunResult, artefact_errors, data_errors, grid_combos
    from engine.data.lakehouse import parquet_write_atomic
    from engine.ledger import Trial, combo_config_hash
    from engine.report import report_write
    from engine.run import walk_chosen
    from engine.rundir import ARTEFACTS, run_complete, run_dir_reset

    with artefact_errors(out):  # a reused run dir loses the last run's artefacts
        run_dir_reset(out, keep=("params.json",))
    rules = grid_combos(cfg)
    w = cfg.wfo
    t0 = time.perf_counter()
    decided: dict[str, WfoChoices] = {}

    def choose(returns: np.ndarray) -> np.ndarray:
        decided["c"] = wfo_choices(returns, w.train_windows, w.anchored, w.objective)
        return decided["c"].choices

    def check(n_windows: int) -> None:
        if w.train_windows >= n_windows:
            raise ConfigError(windows_needed_message(w.train_windows, n_windows))

    with data_errors(cfg.paths.lakehouse_dir):
        grid = walk_chosen(cfg, rules, choose, check)
        result = grid.result
    t_sim = time.perf_counter() - t0
    sel = decided["c"]
    returns, windows = grid.returns, grid.windows
    k0, m = sel.first, returns.shape[1]
    step = cfg.backtest.step_ms / DAY_MS
    oos_returns = np.full(len(windows), np.nan)
    oos_returns[k0:] = grid.oos_returns
    ranks = oos_ranks(returns, sel.choices)
    rows = []
    for k, win in enumerate(windows):
        c = int(sel.choices[k])
        rows.append(
            {
                "window": win.index,
                "rank_date": win.rank_date,
                "rank_time": win.rank_ms,
                "start": win.start_ms,
                "end": win.end_ms,
                "phase": "oos" if c >= 0 else "train",
                "combo": c if c >= 0 else None,
                "exit_rules": _rules_json(rules[c]) if c >= 0 else None,
                "is_objective": float(sel.is_objective[k]) if c >= 0 and math.isfinite(sel.is_objective[k]) else None,
                "oos_return": float(returns[k, c]) if c >= 0 else None,
                "oos_rank": int(ranks[k]) if c >= 0 else None,
                "book_return": float(oos_returns[k]) if c >= 0 else None,
                "n_combinations": m,
                "n_undefined": int(sel.n_undefined[k]),
            }
        )
    frame = pl.DataFrame(
        rows, schema={**WFO_SCHEMA, "rank_time": pl.Int64, "start": pl.Int64, "end": pl.Int64}
    ).with_columns(pl.col(c).cast(pl.Datetime("ms", "UTC")) for c in ("rank_time", "start", "end"))

    # in-sample: the Sharpe ratio each chosen combination showed over its training windows
    is_sr = [
        float(sharpe_columns(returns[a:b, int(sel.choices[k])])[0])
        for k, (a, b) in enumerate(sel.train)
        if sel.choices[k] >= 0
    ]
    is_sr = [x for x in is_sr if math.isfinite(x)]
    oos_sr = float(sharpe_columns(grid.oos_returns)[0]) if len(grid.oos_returns) > 1 else math.nan
    report = oos_report(returns)
    # combinations identical in every window are one trial: for PBO, the CPCV, the deflated Sharpe
    # and the ledger (a copy is recorded under the config hash of the combination it repeats)
    rep = [int(i) for i in first_identical(returns)]
    keep = sorted(set(rep))
    n_distinct, n_folded = len(keep), m - len(keep)
    note = None
    if m == 1:
        note = "one combination: nothing is chosen between combinations, so pbo and the CPCV distribution are null"
    elif n_distinct == 1:
        note = (
            f"{m} combinations with identical returns in every window are one trial: nothing is chosen "
            "between combinations, so pbo and the CPCV distribution are null"
        )
    elif n_folded:
        note = (
            f"{n_folded} combination(s) identical in every window to an earlier one were folded into it: "
            f"pbo, the CPCV and the deflated Sharpe count {n_distinct} distinct trials"
        )
    fp = data_fingerprint(Path(cfg.paths.lakehouse_dir), result.data_files)
    hashes = [combo_config_hash(cfg, r) for r in rules]
    trials = [
        Trial.from_metrics(
            "grid_combo",
            hashes[rep[i]],
            fp,
            gm,
            label=f"wfo {out} combo {i:03d}" + (f" (identical to combo {rep[i]:03d})" if rep[i] != i else ""),
        )
        for i, gm in enumerate(grid.grid_metrics)
    ]
    trials += [
        Trial.from_metrics(
            "wfo_choice",
            hashes[rep[int(sel.choices[k])]],
            fp,
            {"total_return": float(returns[k, int(sel.choices[k])])},
            label=f"wfo {out} window {windows[k].index} combo {int(sel.choices[k]):03d}",
        )
        for k in range(k0, len(windows))
    ]
    what = "grid's distinct combinations" if n_folded else "grid's combinations"
    n_trials, n_source = ledger_trials_count(cfg, trials, fp, n_distinct, what)
    per_year = float(grid.grid_metrics[0].get("periods_per_year") or YEAR_DAYS)
    grid_sr = np.array([grid.grid_metrics[j].get("sharpe") for j in keep], dtype=np.float64) / math.sqrt(per_year)
    grid_sr = grid_sr[np.isfinite(grid_sr)]
    var_sr = float(np.var(grid_sr, ddof=1)) if grid_sr.size > 1 else 0.0
    mt = result.metrics
    dsr = math.nan
    if mt.get("sharpe") is not None:
        dsr = float(
            deflated_sharpe(
                mt["sharpe"] / math.sqrt(per_year),
                n_trials,
                var_sr,
                mt.get("n_returns") or 0,
                np.nan if mt.get("skewness") is None else mt["skewness"],
                np.nan if mt.get("kurtosis") is None else mt["kurtosis"],
            )
        )
    n_switch = int(np.sum(np.diff(sel.choices[k0:]) != 0)) if len(windows) - k0 > 1 else 0
    mt.update(
        {
            "oos_start": windows[k0].rank_date.isoformat(),
            "is_sharpe": _annual(float(np.mean(is_sr)), step) if is_sr else None,
            "oos_sharpe": _annual(oos_sr, step),
            "pbo": report["pbo"],
            "n_trials": n_trials,
            "deflated_sharpe": dsr if math.isfinite(dsr) else None,
            "wfo": {
                "objective": w.objective,
                "train_windows": w.train_windows,
                "anchored": w.anchored,
                "n_combinations": m,
                "n_windows": len(windows),
                "n_windows_train_only": k0,
                "n_windows_oos": len(windows) - k0,
                "n_switches": n_switch,
                "n_undefined_objectives": int(sel.n_undefined.sum()),
                "sharpe_units": "is_sharpe and oos_sharpe: per-window returns, annualised by sqrt(365 / step in days)",
                "n_trials_source": n_source,
                "pbo_reason": report["pbo_reason"],
                "pbo_n_submatrices": report["pbo_n_submatrices"],
                "cpcv": report["cpcv"],
                "cpcv_path_sharpe": report["cpcv_path_sharpe"],
                "cpcv_reason": report["cpcv_reason"],
                "note": note,
            },
        }
    )
    if n_folded:  # only then: a grid without copies keeps its metrics.json as it was
        mt["wfo"]["n_duplicate_combinations"] = n_folded
    result.wfo = {"frame": frame, "returns": returns, "rules": [_rules_json(r) for r in rules]}
    with artefact_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        artefacts_write(out, cfg, result, config_yaml)
        parquet_write_atomic(frame, out / "wfo.parquet")
        report_write(out, cfg, result)
        run_complete(out, [n for n in ARTEFACTS if (out / n).is_file()])
    timings = {**result.timings, "simulation_total": t_sim, "total": time.perf_counter() - t0}
    print(
        f"walk-forward optimisation: {m} combinations, {k0} training windows, "
        f"{len(windows) - k0} out-of-sample windows from {mt['oos_start']} ({timings['total']:.1f} s)"
    )
    print(f"  deflated Sharpe with {n_source}")
    return RunResult(out, mt, timings)


__all__ = [
    "OBJECTIVES",
    "WfoChoices",
    "objective_columns",
    "oos_ranks",
    "wfo_choices",
    "wfo_run",
    "windows_precheck",
]
