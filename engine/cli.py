"""Command line: compose and validate the config, run its task, map the outcome to output and an exit code.

``python -m engine [-m] [overrides...]``. Every run the command line describes is composed and
validated before Hydra starts (:mod:`engine.compose`); the task itself (:mod:`engine.tasks`) is a
plain function of the validated config that returns a typed result or raises a typed error, and
only this module turns those into console lines and exit codes. A multirun's outcome is the sweep
summary callback's :class:`~engine.core.errors.SweepJobsFailed` (:mod:`engine.tasks.multirun`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from engine.compose import (
    CONF_DIR,
    hydra_argv,
    in_multirun,
    output_folder_check,
    overrides_validate,
    plain,
    tilde_quote,
)
from engine.config import ENGINE_VERSION, RunConfig, config_validate
from engine.core.errors import EngineError, SweepJobsFailed

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from engine.tasks import IngestResult

log = logging.getLogger("engine")


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


def _task(dcfg: DictConfig, cfg: RunConfig, hydra_dir: Path, out: Path) -> float | None:
    """Run the job's task in its prepared run directory; the Sharpe ratio of a backtest for sweepers."""
    from omegaconf import OmegaConf

    from engine.outputs.console import summary_print
    from engine.outputs.rundir import ARTEFACTS, artefact_errors, run_complete, run_dir_prepare

    run_dir_prepare(hydra_dir, out)
    log.info("%s run into %s (engine %s)", cfg.task, out, ENGINE_VERSION)
    config_yaml = OmegaConf.to_yaml(dcfg, resolve=True)
    from engine.tasks import grid_run, ingest_run, run_backtest, wfo_run  # the simulation stack, once validated

    if cfg.task == "ingest":
        if code := ingest_print(ingest_run(cfg)):
            raise SystemExit(code)
        with artefact_errors(out):
            run_complete(out, [n for n in ARTEFACTS if (out / n).is_file()])
        return None
    if cfg.task == "grid":
        grid_run(cfg, config_yaml)
        return None
    result = (wfo_run if cfg.task == "wfo" else run_backtest)(cfg, config_yaml)
    if cfg.task == "backtest":
        from engine.outputs.ledger import ledger_record_run

        ledger_record_run(cfg, result.output_dir, "sweep_job" if in_multirun() else "run")  # failures warn
    summary_print(result.metrics, result.output_dir, cfg)
    sharpe = result.metrics.get("sharpe") if cfg.task == "backtest" else None
    return float(sharpe) if sharpe is not None else None


def task_run(dcfg: DictConfig) -> float | None:
    """Run the Hydra job: validate, claim the output directory, dispatch on ``task``."""
    from hydra.core.hydra_config import HydraConfig

    from engine.outputs.rundir import artefact_errors, error_message, error_write, run_dir_claim

    hydra_dir = Path(HydraConfig.get().runtime.output_dir)
    raw = plain(dcfg)
    own = raw.get("paths", {}).get("output_dir") is None  # the run directory Hydra made for this job
    if own:
        raw.setdefault("paths", {})["output_dir"] = str(hydra_dir)
    cfg = config_validate(raw)
    out = Path(raw["paths"]["output_dir"])
    # Hydra wrote .hydra/ and the log into its own run directory before this job started
    ignore = tuple(p.name for p in hydra_dir.iterdir()) if own and hydra_dir.is_dir() else ()
    key = ("hydra.sweep.dir" if in_multirun() else "hydra.run.dir") if own else "paths.output_dir"
    with contextlib.ExitStack() as claim:
        with artefact_errors(out):
            claim.enter_context(run_dir_claim(out, key, ignore))
        try:
            return _task(dcfg, cfg, hydra_dir, out)
        except Exception as exc:  # written down for the run directory, then raised on
            if out.resolve() != hydra_dir.resolve():  # the job's Hydra directory gets it from the entry point
                error_write(error_message(exc), out, log_it=False)
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
        except EngineError as exc:
            fail(str(exc))
    try:
        with hydra_argv(args):
            _hydra_entry()
    except SweepJobsFailed as outcome:  # every job has run; the summary callback counted the failures
        fail(str(outcome), outcome.exit_code)
