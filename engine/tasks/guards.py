"""What every task shares: its output directory, claimed for the run, and its errors as one line.

A reader's failure on a corrupt or foreign lakehouse file and a run directory that cannot be
written become typed :class:`~engine.core.errors.EngineError` s that say what to do; the command line
turns those into one line and an exit code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.config import RunConfig
from engine.core.errors import ConfigError, DataError, first_line
from engine.outputs.rundir import artefact_errors
from engine.run.metrics import Metrics


@dataclass
class RunResult:
    """What a task that runs a backtest returns: where the artefacts are, the headline metrics, timings."""

    output_dir: Path
    metrics: Metrics
    timings: dict[str, float]


@contextlib.contextmanager
def claimed(cfg: RunConfig) -> Iterator[Path]:
    """Claim the run's output directory for the ``with`` block (see :func:`engine.outputs.rundir.run_dir_claim`)."""
    from engine.outputs.rundir import run_dir_claim

    out = output_dir(cfg)
    with contextlib.ExitStack() as claim:
        with artefact_errors(out):
            claim.enter_context(run_dir_claim(out))
        yield out


def _data_fix(source: str) -> str:
    """Return what to do about an unreadable file of the lakehouse of ``data.source=source`` (its backend says)."""
    from engine.data.sources.registry import source_class

    return source_class(source).unreadable_fix


@contextlib.contextmanager
def data_errors(lakehouse: str, source: str = "synthetic") -> Iterator[None]:
    """Turn a reader's failure on a corrupt or foreign file into one line that says what to do."""
    import duckdb
    import polars.exceptions as plx

    try:
        yield
    except PermissionError as exc:
        where = exc.filename or lakehouse
        msg = (
            f"permission denied on {where} (lakehouse {lakehouse}): the user running the engine needs read and "
            "write access to the lakehouse (fix its owner or mode) or set paths.lakehouse_dir to a folder you own"
        )
        raise DataError(msg) from None
    except (duckdb.Error, plx.PolarsError, OSError) as exc:
        first = first_line(exc)
        if "Permission denied" in first:
            msg = (
                f"permission denied reading the lakehouse {lakehouse} ({first}): the user running the engine "
                "needs read and write access to it (fix its owner or mode) or set paths.lakehouse_dir to a folder you own"
            )
        else:
            msg = f"unreadable data in the lakehouse {lakehouse} ({first}): {_data_fix(source)}"
        from engine.data.storage import redact as storage_redact  # no AWS key or secret in a message

        raise DataError(storage_redact(msg)) from None


def output_dir(cfg: RunConfig) -> Path:
    """Return the run's artefact directory (set by Hydra, or by the caller of the plain functions)."""
    if cfg.paths.output_dir is None:
        msg = "paths.output_dir is not set: pass paths.output_dir=DIR or run through `python -m engine`"
        raise ConfigError(msg)
    return Path(cfg.paths.output_dir)
