"""The tasks: each a plain function of a validated config that returns a typed result or raises a typed error.

``task=backtest`` (:func:`run_backtest`), ``task=grid`` (:func:`grid_run`), ``task=wfo``
(:func:`wfo_run`) and ``task=ingest`` (:func:`ingest_run`); the sweep summary is
:func:`engine.tasks.sweep.sweep_summarize`. The command line (:mod:`engine.cli`) maps results and errors
to output and exit codes.
"""

from engine.outputs.rundir import artefact_errors
from engine.tasks.backtest import run_backtest
from engine.tasks.capacity import capacity_run
from engine.tasks.grid import grid_run
from engine.tasks.guards import RunResult, data_errors, output_dir
from engine.tasks.ingest import IngestResult, ingest_run
from engine.tasks.wfo import wfo_run

__all__ = [
    "IngestResult",
    "RunResult",
    "artefact_errors",
    "capacity_run",
    "data_errors",
    "grid_run",
    "ingest_run",
    "output_dir",
    "run_backtest",
    "wfo_run",
]
