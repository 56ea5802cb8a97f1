"""``task=capacity``: the walk-forward at several starting capitals as books of one pass (a capacity curve)."""

from __future__ import annotations

from engine.config import RunConfig
from engine.tasks.backtest import run_backtest
from engine.tasks.guards import RunResult


def capacity_run(cfg: RunConfig, config_yaml: str = "") -> RunResult:
    """Run the backtest with one more book per capital of ``execution.capitals()`` (default 1e4 .. 1e8).

    The run directory holds the run's own artefacts (``backtest.init_cash``) plus capacity.parquet
    and capacity.json; report.html gains the capacity section; the command line prints the curve
    (:func:`engine.outputs.capacity.capacity_lines`). ``task=backtest`` with ``execution.capacity``
    set does the same with the listed capitals.
    """
    return run_backtest(cfg, config_yaml)
