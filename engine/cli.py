"""Command line: compose and validate the config, run its task, map the outcome to output and an exit code.

``python -m engine [-m] [overrides...]``. Every run the command line describes is composed and
validated before Hydra starts (:mod:`engine.compose`); the task itself (:mod:`engine.tasks`) is a
plain function of the validated config that returns a typed result or raises a typed error, and
only this module turns those into console lines and exit codes. A multirun's outcome is the sweep
summary callback's :class:`~engine.core.errors.SweepJobsFailed` (:mod:`engine.tasks.multirun`).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from engine.compose import (
    CONF_DIR,
    Job,
    hydra_argv,
    in_multirun,
    job_prepare,
    job_start,
    output_folder_check,
    overrides_validate,
    run_dir_follows,
    tilde_quote,
)
from engine.core.errors import INTERRUPTED, EngineError, SweepJobsFailed

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from engine.tasks import IngestResult


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line user error (secrets redacted) and exit without a traceback."""
    from engine.outputs.rundir import redact

    print(f"error: {' '.join(redact(message).splitlines())}", file=sys.stderr)
    raise SystemExit(code)


def ingest_print(result: IngestResult) -> int:
    """Print what an ingest did (skipped and refused files, its summary or error); return its exit code."""
    for name, why in result.skipped:
        print(f"skipped {name}: {why}")
    for problem in result.not_imported:
        print(f"error: not imported: {problem}", file=sys.stderr)
    if result.error is not None:
        print(f"error: {result.error}", file=sys.stderr)
    if result.summary is not None:
        print(result.summary)
    return result.exit_code


def _task(dcfg: DictConfig, job: Job) -> float | None:
    """Run the job's task in its claimed run directory; the Sharpe ratio of a backtest for sweepers."""
    from engine.outputs.console import summary_print
    from engine.outputs.rundir import ARTEFACTS, artefact_errors, run_complete

    cfg, out, config_yaml = job.cfg, job.out, job_start(job, dcfg)
    from engine.tasks import capacity_run, grid_run, ingest_run, run_backtest, wfo_run  # once validated

    if cfg.task == "ingest":
        if code := ingest_print(ingest_run(cfg)):
            raise SystemExit(code)
        with artefact_errors(out):
            run_complete(out, [n for n in ARTEFACTS if (out / n).is_file()])
        return None
    if cfg.task == "grid":
        grid_run(cfg, config_yaml)
        return None
    task = {"wfo": wfo_run, "capacity": capacity_run}.get(cfg.task, run_backtest)
    result = task(cfg, config_yaml)
    if cfg.task in ("backtest", "capacity"):
        from engine.outputs.ledger import ledger_record_run

        ledger_record_run(cfg, result.output_dir, "sweep_job" if in_multirun() else "run")  # failures warn
    summary_print(result.metrics, result.output_dir, cfg)
    sharpe = result.metrics.get("sharpe") if cfg.task == "backtest" else None
    return float(sharpe) if sharpe is not None else None


def task_run(dcfg: DictConfig) -> float | None:
    """Run the Hydra job: validate, claim the output directory, dispatch on ``task``."""
    from engine.outputs.rundir import artefact_errors, error_message, error_write, run_dir_claim

    job = job_prepare(dcfg)
    with contextlib.ExitStack() as claim:
        with artefact_errors(job.out):
            claim.enter_context(run_dir_claim(job.out, job.key, job.ignore))
        try:
            return _task(dcfg, job)
        except Exception as exc:  # written down for the run directory, then raised on
            if job.out.resolve() != job.hydra_dir.resolve():  # the job's Hydra directory gets it from the entry point
                error_write(error_message(exc), job.out, log_it=False)
            raise


def _hydra_entry() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def entry(dcfg: DictConfig) -> float | None:
        from engine.outputs.rundir import RunDirBusy, error_message, error_write, redact

        try:
            return task_run(dcfg)
        except EngineError as exc:
            # a folder another live run holds is not this run's to write into, not even error.txt
            if not isinstance(exc, RunDirBusy) or Path(HydraConfig.get().runtime.output_dir).resolve() != exc.folder:
                error_write(str(exc))
            if in_multirun():  # one bad job must not stop the sweep: the summary lists it with this reason
                print(f"error: job failed: {redact(str(exc))}", file=sys.stderr)
                return None
            fail(str(exc), getattr(exc, "exit_code", 2))
        except Exception as exc:  # a bug: its error.txt, then the traceback
            error_write(error_message(exc))
            raise

    entry()


def main(argv: list[str] | None = None) -> None:
    """Validate every run of the command line, then hand over to Hydra; map a multirun's outcome."""
    # Hydra's grammar rejects a bare ~ in a value (key=~/dir): the one argument it cannot parse as typed
    args = [tilde_quote(a) for a in (sys.argv[1:] if argv is None else argv)]
    multirun = any(a in ("-m", "--multirun") for a in args)
    # -m/--multirun and -r/--run take no value: every other flag (--cfg job, --info, -c, ...) is
    # Hydra's own and the arguments after it are not all overrides, so Hydra handles those alone
    passthrough = any(a.startswith("-") and a not in ("-m", "--multirun", "-r", "--run") for a in args)
    overrides = [a for a in args if not a.startswith("-")]
    if not passthrough:
        try:
            overrides_validate(overrides, multirun)
            output_folder_check(overrides, multirun)
            args += run_dir_follows(overrides, multirun)  # Hydra's own files beside the artefacts
        except EngineError as exc:
            fail(str(exc))
    try:
        with hydra_argv(args):
            _hydra_entry()
    except SweepJobsFailed as outcome:  # every job has run; the summary callback counted the failures
        fail(str(outcome), outcome.exit_code)
    except KeyboardInterrupt:  # Ctrl-C / SIGINT: one line, the shell's code for it (128 + 2), no traceback
        fail(INTERRUPTED, 130)
