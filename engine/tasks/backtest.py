"""``task=backtest``: one walk-forward run of the configured strategy, its artefacts written."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from engine.config import RunConfig
from engine.outputs.rundir import PARAMS_JSON, artefact_errors
from engine.tasks.guards import RunResult, claimed, data_errors

log = logging.getLogger(__name__)


def run_backtest(cfg: RunConfig, config_yaml: str = "") -> RunResult:
    """Run a walk-forward backtest and write its artefacts into ``cfg.paths.output_dir`` (claimed first)."""
    with claimed(cfg) as out:
        return _backtest(cfg, out, config_yaml)


def _backtest(cfg: RunConfig, out: Path, config_yaml: str) -> RunResult:
    from engine.outputs.artefacts import artefacts_write
    from engine.outputs.report import report_write
    from engine.outputs.rundir import ARTEFACTS, run_complete, run_dir_reset
    from engine.run import backtest_run

    with artefact_errors(out):
        run_dir_reset(out, keep=(PARAMS_JSON,))
    t0 = time.perf_counter()
    log.info("backtest: %s data, %s, lakehouse %s", cfg.data.source, cfg.ranking.weights, cfg.paths.lakehouse_dir)
    with data_errors(cfg.paths.lakehouse_dir, cfg.data.source):
        result = backtest_run(cfg).result
        assert result is not None
    t1 = time.perf_counter()
    for stage, seconds in result.timings.items():
        log.info("stage %s: %.2f s", stage, seconds)
    with artefact_errors(out):
        artefacts_write(out, cfg, result, config_yaml)
        report_write(out, cfg, result)
        run_complete(out, [n for n in ARTEFACTS if (out / n).is_file()])
    timings = {**result.timings, "artefacts": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    log.info("artefacts written to %s in %.2f s; total %.2f s", out, timings["artefacts"], timings["total"])
    return RunResult(out, result.metrics, timings)
