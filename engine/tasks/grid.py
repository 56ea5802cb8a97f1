"""``task=grid``: every exit-rule combination of ``cfg.grid`` as one book of one walk-forward."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from engine.config import RunConfig
from engine.config.exit_rules import ExitRules, grid_combos
from engine.core.errors import EngineError
from engine.outputs.rundir import METRICS_JSON, PARAMS_JSON, artefact_errors
from engine.tasks.guards import RunResult, claimed, data_errors

log = logging.getLogger(__name__)


def grid_run(cfg: RunConfig, config_yaml: str = "") -> RunResult:
    """Simulate every exit-rule combination of ``cfg.grid`` in one walk-forward.

    One simulation call per window; one metrics row per combination is written under
    ``combos/NNN/``. The first combination's full artefacts go to the run directory itself; every
    combination gets ``metrics.json`` and ``params.json`` (the sweep summary reads them like
    multirun jobs).
    """
    rules = grid_combos(cfg)
    with claimed(cfg) as out:
        return _grid(cfg, out, rules, config_yaml)


def _grid(cfg: RunConfig, out: Path, rules: list[ExitRules | None], config_yaml: str) -> RunResult:
    from engine.outputs.artefacts import artefacts_write, metrics_write
    from engine.outputs.ledger import ledger_record_grid
    from engine.outputs.report import data_label
    from engine.outputs.rundir import ARTEFACTS, json_write, run_complete, run_dir_reset
    from engine.run import backtest_run

    with artefact_errors(out):
        run_dir_reset(out, keep=(PARAMS_JSON,))
    t0 = time.perf_counter()
    log.info("grid: %d exit-rule combinations in one walk-forward", len(rules))
    with data_errors(cfg.paths.lakehouse_dir, cfg.data.source):
        books = backtest_run(cfg, rules)
        result = books.result
        assert result is not None
    for stage, seconds in result.timings.items():
        log.info("stage %s: %.2f s", stage, seconds)
    rows = []
    # the run directory's own artefacts are the first combination's: say so where they are read
    result.metrics = {**result.metrics}  # a copy: combos/000 keeps its own metrics as they are
    result.metrics["grid_combination"] = {
        "combo": 0,
        "exit_rules": None if rules[0] is None else rules[0].model_dump(),
        "note": "metrics, equity, orders and trades here are combination 000's; every combination's metrics "
        "are in combos/NNN/metrics.json, ranked in combos/leaderboard.md",
    }
    with artefact_errors(out):
        artefacts_write(out, cfg, result, config_yaml)
        for i, (r, metrics) in enumerate(zip(rules, books.book_metrics, strict=True)):
            job = out / "combos" / f"{i:03d}"
            job.mkdir(parents=True, exist_ok=True)
            values = (r or ExitRules()).model_dump()
            json_write(job / PARAMS_JSON, {f"exit_rules.{k}": json.dumps(v) for k, v in values.items()})
            metrics_write(job / METRICS_JSON, metrics)
            rows.append(
                {"combo": i, **values, "sharpe": metrics.get("sharpe"), "total_return": metrics.get("total_return")}
            )
        run_complete(out, [n for n in ARTEFACTS if (out / n).is_file()])
    timings = {**result.timings, "total": time.perf_counter() - t0}
    ledger_record_grid(cfg, out, rules, books.book_metrics)  # the trial ledger (paths.ledger); failures warn
    print(f"data: {data_label(cfg)}")
    print(f"simulated {len(rules)} exit-rule combinations in one walk-forward ({timings['total']:.1f} s)")
    print(f"the run directory's own artefacts are combination 000's; all {len(rules)} are ranked below")
    from engine.tasks.multirun import summary_print
    from engine.tasks.sweep import sweep_summarize

    try:
        summary_print(sweep_summarize(out / "combos"))
    except EngineError as exc:  # the combinations are written; the summary can be rerun alone
        print(f"sweep summary skipped: {exc} (rerun: python -m engine.sweep {out / 'combos'})", file=sys.stderr)
    return RunResult(out, {"combinations": rows}, timings)
