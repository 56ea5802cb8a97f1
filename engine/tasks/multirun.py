"""The end of a multirun: the summary on the console, and Hydra's callback that decides the outcome.

``hydra/callbacks=sweep_summary`` (on by default, ``conf/hydra/default.yaml``) runs
:class:`SweepSummaryCallback` when every job of a ``-m`` sweep has run: it summarises the sweep
directory (:func:`engine.tasks.sweep.sweep_summarize`), prints the top rows, and raises
:class:`engine.core.errors.SweepJobsFailed` when a job failed, which :mod:`engine.cli` maps to
exit code 1. No module state carries the outcome.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any  # Any: Hydra's Callback signature (on_multirun_end's **kwargs)

import polars as pl
from hydra.experimental.callback import Callback

from engine.core.errors import EngineError, SweepJobsFailed, first_line
from engine.outputs.rundir import METRICS_JSON
from engine.tasks.sweep import SweepSummary, job_dirs, sweep_summarize

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger("engine")


def summary_print(s: SweepSummary, n: int = 5) -> None:
    """Top ``n`` rows of the leaderboard, where it was written, and the summary's warnings (stderr)."""
    top = s.top(n)
    with pl.Config(
        tbl_rows=n, tbl_cols=-1, tbl_width_chars=240, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True
    ):
        print(f"sweep summary: {s.n_trials} trials, {s.failed.height} failed, ranked by {s.metric}")
        print(top)
    print(f"deflated Sharpe with {s.dsr_trials_source}")
    print(f"leaderboard: {s.files['leaderboard.md']}")
    for line in s.warnings:
        print(f"warning: {line}", file=sys.stderr)


def sweep_outcome(sweep_dir: Path) -> SweepJobsFailed | None:
    """Return the failure of a finished sweep (jobs without ``metrics.json``), or None when every job wrote one."""
    dirs = job_dirs(sweep_dir) if sweep_dir.is_dir() else []
    failed = sum(not (d / METRICS_JSON).is_file() for d in dirs)
    return SweepJobsFailed(str(sweep_dir), failed, len(dirs)) if failed else None


class SweepSummaryCallback(Callback):
    """Hydra callback: summarise the sweep directory when a multirun ends, then give its outcome.

    Enable with ``hydra/callbacks=sweep_summary`` (``conf/hydra/callbacks/sweep_summary.yaml``).
    A summary that cannot be made never fails the sweep (the jobs' artefacts are written and the
    summary can be rerun with ``python -m engine.sweep SWEEP_DIR``): a user error is one line, a
    bug is logged with its traceback. Failed jobs raise :class:`SweepJobsFailed` afterwards.
    """

    def __init__(self, metric: str = "sharpe", descending: bool = True) -> None:
        self.metric = metric
        self.descending = descending

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:  # Any: Hydra's Callback signature
        """Summarise ``config.hydra.sweep.dir``, print the top 5 rows, raise when jobs failed."""
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            summary_print(sweep_summarize(sweep_dir, self.metric, self.descending))
        except EngineError as exc:
            print(f"sweep summary skipped: {first_line(exc)}", file=sys.stderr)
        except Exception:  # a bug in the summary: loud, with its traceback, but the sweep's jobs stand
            log.exception(
                "sweep summary skipped: it failed on %s (rerun: python -m engine.sweep %s)", sweep_dir, sweep_dir
            )
        outcome = sweep_outcome(sweep_dir)
        if outcome is not None:
            raise outcome
