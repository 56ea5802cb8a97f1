"""``task=wfo``: walk the grid forward, choose a combination per window on the past, trade the choices.

The selection itself (objectives, :func:`engine.run.selection.wfo_choices`) and the statistics
(:mod:`engine.run.validation`) are pure functions; this task runs them on one walk of the plan
(:func:`engine.run.walk_chosen`) and writes the out-of-sample book's artefacts plus ``wfo.parquet``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import polars as pl

from engine.config import RunConfig
from engine.config.exit_rules import ExitRules, grid_combos
from engine.core.errors import ConfigError
from engine.core.units import DAY_MS
from engine.outputs.rundir import PARAMS_JSON, WFO_PARQUET, artefact_errors
from engine.run import ChosenWalk
from engine.run.metrics import YEAR_DAYS, Metrics
from engine.run.selection import WFO_SCHEMA, WfoChoices, oos_ranks, wfo_choices, windows_needed_message
from engine.run.validation import deflated_sharpe, first_identical, oos_report, sharpe_columns
from engine.tasks.guards import RunResult, claimed, data_errors


def wfo_run(cfg: RunConfig, config_yaml: str = "") -> RunResult:
    """Run ``task=wfo`` and write the out-of-sample book's artefacts plus ``wfo.parquet``.

    The output directory is claimed first (see :func:`engine.outputs.rundir.run_dir_claim`).
    """
    with claimed(cfg) as out:
        return _wfo(cfg, out, config_yaml)


def _annual(x: float, step_days: float) -> float | None:
    v = x * math.sqrt(YEAR_DAYS / step_days)
    return float(v) if math.isfinite(v) else None


def _rules_json(r: ExitRules | None) -> str:
    return json.dumps(None if r is None else r.model_dump(mode="json"), sort_keys=True)


def _walk(cfg: RunConfig, rules: list[ExitRules | None]) -> tuple[ChosenWalk, WfoChoices]:
    from engine.run import walk_chosen

    w = cfg.wfo
    decided: list[WfoChoices] = []

    def choose(returns: np.ndarray) -> np.ndarray:
        decided.append(wfo_choices(returns, w.train_windows, w.anchored, w.objective))
        return decided[0].choices

    def check(n_windows: int) -> None:
        if w.train_windows >= n_windows:
            raise ConfigError(windows_needed_message(w.train_windows, n_windows))

    with data_errors(cfg.paths.lakehouse_dir, cfg.data.source):
        grid = walk_chosen(cfg, rules, choose, check)
    return grid, decided[0]


def _frame(grid: ChosenWalk, sel: WfoChoices, rules: list[ExitRules | None]) -> pl.DataFrame:
    """``wfo.parquet``: per window its phase, the combination chosen, its objective, return and rank."""
    returns, windows = grid.returns, grid.windows
    oos_returns = np.full(len(windows), np.nan)
    oos_returns[sel.first :] = grid.oos_returns
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
                "n_combinations": returns.shape[1],
                "n_undefined": int(sel.n_undefined[k]),
            }
        )
    return pl.DataFrame(
        rows, schema={**WFO_SCHEMA, "rank_time": pl.Int64, "start": pl.Int64, "end": pl.Int64}
    ).with_columns(pl.col(c).cast(pl.Datetime("ms", "UTC")) for c in ("rank_time", "start", "end"))


def _fold_note(m: int, n_distinct: int) -> str | None:
    """Say why pbo is null or how many identical combinations were folded into one trial."""
    if m == 1:
        return "one combination: nothing is chosen between combinations, so pbo and the CPCV distribution are null"
    if n_distinct == 1:
        return (
            f"{m} combinations with identical returns in every window are one trial: nothing is chosen "
            "between combinations, so pbo and the CPCV distribution are null"
        )
    if m > n_distinct:
        return (
            f"{m - n_distinct} combination(s) identical in every window to an earlier one were folded into it: "
            f"pbo, the CPCV and the deflated Sharpe count {n_distinct} distinct trials"
        )
    return None


def _trials_count(
    cfg: RunConfig, out: Path, grid: ChosenWalk, sel: WfoChoices, rules: list[ExitRules | None], rep: list[int]
) -> tuple[int, str]:
    """Record the grid's combinations and the choices in the ledger and count the trials on this data.

    Combinations identical in every window are one trial: a copy is recorded under the config hash
    of the combination it repeats.
    """
    from engine.outputs.artefacts import data_fingerprint
    from engine.outputs.ledger import Trial, combo_config_hash, ledger_trials_count

    fp = data_fingerprint(Path(cfg.paths.lakehouse_dir), grid.result.data_files)
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
    chosen = [(k, int(sel.choices[k])) for k in range(sel.first, len(grid.windows))]
    trials += [
        Trial.from_metrics(
            "wfo_choice",
            hashes[rep[c]],
            fp,
            {"total_return": float(grid.returns[k, c])},
            label=f"wfo {out} window {grid.windows[k].index} combo {c:03d}",
        )
        for k, c in chosen
    ]
    n_distinct = len(set(rep))
    what = "grid's distinct combinations" if n_distinct < len(rules) else "grid's combinations"
    return ledger_trials_count(cfg.paths.ledger, trials, fp, n_distinct, what)


def _deflated(mt: Metrics, n_trials: int, grid: ChosenWalk, keep: list[int]) -> float | None:
    """Return the out-of-sample book's deflated Sharpe ratio, with the variance of the distinct combinations' Sharpe."""
    per_year = float(grid.grid_metrics[0].get("periods_per_year") or YEAR_DAYS)
    grid_sr = np.array([grid.grid_metrics[j].get("sharpe") for j in keep], dtype=np.float64) / math.sqrt(per_year)
    grid_sr = grid_sr[np.isfinite(grid_sr)]
    var_sr = float(np.var(grid_sr, ddof=1)) if grid_sr.size > 1 else 0.0
    sharpe, skew, kurt = mt.get("sharpe"), mt.get("skewness"), mt.get("kurtosis")
    if sharpe is None:
        return None
    dsr = float(
        deflated_sharpe(
            sharpe / math.sqrt(per_year),
            n_trials,
            var_sr,
            mt.get("n_returns") or 0,
            np.nan if skew is None else skew,
            np.nan if kurt is None else kurt,
        )
    )
    return dsr if math.isfinite(dsr) else None


def _metrics(cfg: RunConfig, out: Path, grid: ChosenWalk, sel: WfoChoices, rules: list[ExitRules | None]) -> str:
    """Add the walk-forward optimisation's statistics to the out-of-sample book's metrics.

    Returns the sentence saying where the trial count came from.
    """
    returns, windows, k0, m = grid.returns, grid.windows, sel.first, grid.returns.shape[1]
    # in-sample: the Sharpe ratio each chosen combination showed over its training windows
    is_sr = [
        float(sharpe_columns(returns[a:b, int(sel.choices[k])])[0])
        for k, (a, b) in enumerate(sel.train)
        if sel.choices[k] >= 0
    ]
    is_sr = [x for x in is_sr if math.isfinite(x)]
    oos_sr = float(sharpe_columns(grid.oos_returns)[0]) if len(grid.oos_returns) > 1 else math.nan
    report = oos_report(returns)
    rep = [int(i) for i in first_identical(returns)]
    keep = sorted(set(rep))
    n_trials, n_source = _trials_count(cfg, out, grid, sel, rules, rep)
    mt = grid.result.metrics
    step = cfg.backtest.step_ms / DAY_MS
    w = cfg.wfo
    mt.update(
        {
            "oos_start": windows[k0].rank_date.isoformat(),
            "is_sharpe": _annual(float(np.mean(is_sr)), step) if is_sr else None,
            "oos_sharpe": _annual(oos_sr, step),
            "pbo": pbo if isinstance(pbo := report["pbo"], float) else None,
            "n_trials": n_trials,
            "deflated_sharpe": _deflated(mt, n_trials, grid, keep),
            "wfo": {
                "objective": w.objective,
                "train_windows": w.train_windows,
                "anchored": w.anchored,
                "n_combinations": m,
                "n_windows": len(windows),
                "n_windows_train_only": k0,
                "n_windows_oos": len(windows) - k0,
                "n_switches": int(np.sum(np.diff(sel.choices[k0:]) != 0)) if len(windows) - k0 > 1 else 0,
                "n_undefined_objectives": int(sel.n_undefined.sum()),
                "sharpe_units": "is_sharpe and oos_sharpe: per-window returns, annualised by sqrt(365 / step in days)",
                "n_trials_source": n_source,
                "pbo_reason": report["pbo_reason"],
                "pbo_n_submatrices": report["pbo_n_submatrices"],
                "cpcv": report["cpcv"],
                "cpcv_path_sharpe": report["cpcv_path_sharpe"],
                "cpcv_reason": report["cpcv_reason"],
                "note": _fold_note(m, len(keep)),
            },
        }
    )
    if m > len(keep):  # only then: a grid without copies keeps its metrics.json as it was
        mt["wfo"]["n_duplicate_combinations"] = m - len(keep)
    return n_source


def _wfo(cfg: RunConfig, out: Path, config_yaml: str) -> RunResult:
    from engine.data.lakehouse import parquet_write_atomic
    from engine.outputs.artefacts import artefacts_write
    from engine.outputs.report import report_write
    from engine.outputs.rundir import ARTEFACTS, run_complete, run_dir_reset

    with artefact_errors(out):  # a reused run dir loses the last run's artefacts
        run_dir_reset(out, keep=(PARAMS_JSON,))
    rules = grid_combos(cfg)
    t0 = time.perf_counter()
    grid, sel = _walk(cfg, rules)
    t_sim = time.perf_counter() - t0
    result = grid.result
    frame = _frame(grid, sel, rules)
    n_source = _metrics(cfg, out, grid, sel, rules)
    result.wfo = {"frame": frame, "returns": grid.returns, "rules": [_rules_json(r) for r in rules]}
    with artefact_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        artefacts_write(out, cfg, result, config_yaml)
        parquet_write_atomic(frame, out / WFO_PARQUET)
        report_write(out, cfg, result)
        run_complete(out, [n for n in ARTEFACTS if (out / n).is_file()])
    timings = {**result.timings, "simulation_total": t_sim, "total": time.perf_counter() - t0}
    m, k0, n = grid.returns.shape[1], sel.first, len(grid.windows)
    print(
        f"walk-forward optimisation: {m} combinations, {k0} training windows, "
        f"{n - k0} out-of-sample windows from {result.metrics['oos_start']} ({timings['total']:.1f} s)"
    )
    print(f"  deflated Sharpe with {n_source}")
    return RunResult(out, result.metrics, timings)
