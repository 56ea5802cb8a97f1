"""``task=capacity``: the walk-forward at several starting capitals as books of one pass (a capacity curve)."""

from __future__ import annotations

import json

from engine.config import RunConfig
from engine.tasks.backtest import run_backtest
from engine.tasks.guards import RunResult


def capacity_run(cfg: RunConfig, config_yaml: str = "") -> RunResult:
    """Run the backtest with one book per capital of ``execution.capitals()`` and print the curve.

    The run directory holds the run's own artefacts (``backtest.init_cash``) plus capacity.parquet
    and capacity.json; report.html gains the capacity section.
    """
    from engine.outputs.capacity import capacity_lines

    result = run_backtest(cfg, config_yaml)
    table = json.loads((result.output_dir / "capacity.json").read_text())
    for line in capacity_lines(table):
        print(line)
    return result
