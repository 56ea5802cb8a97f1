"""The trial ledger: one DuckDB table with a row for every trial run on some data.

The deflated Sharpe ratio must count every trial that could have been picked, not only the jobs of
the current sweep. Each run, sweep job, grid combination and walk-forward choice appends one row
(:func:`ledger_append`); :func:`n_trials` tells how many distinct trials were made on the same data
fingerprint, :func:`ledger_read` returns them all.

Concurrency: a lock file, not staging files
-------------------------------------------
DuckDB lets one process at a time open a database file for writing (and no process may open it,
even read-only, while another holds it for writing), so concurrent joblib workers or Ray actors that
each ``duckdb.connect(path)`` fail with an IO error instead of waiting. Two designs avoid losing rows:

- **per-process staging files merged on read**: no waiting, but the ledger is then a directory of
  files, every read must merge them (and whoever merges races with the writers), and a crash
  between writing and merging leaves state to clean up;
- **an exclusive ``fcntl`` lock on a sidecar file** (``<ledger>.lock``) held for the few
  milliseconds of one open-insert-close: the ledger stays one DuckDB file, a row is visible as soon
  as the append returns, and the OS releases the lock when a process dies, so nothing is left stale.

The ledger takes the lock: appends are rare (one per trial, or one batch per grid) and short, so
the wait is negligible, and one file is what a person opens with ``duckdb outputs/ledger.duckdb``.
Readers take the same lock shared and open the file read-only. The wait is bounded
(``timeout_s``, default 60 s, polled every 10 ms): past it the call raises :class:`LedgerError`
naming the lock file. ``fcntl`` locks are advisory and per host: every writer must go through this
module, and processes on different machines (a multi-node Ray cluster) must not share one ledger
file over a network file system — give each node its own ledger or write from the driver.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from engine.config import RunConfig
from engine.config.exit_rules import ExitRules
from engine.core.errors import EngineError, first_line
from engine.outputs.rundir import MANIFEST_JSON
from engine.outputs.trial import (
    COLUMNS,
    KINDS,
    NOT_TRIAL_KEYS,
    LedgerError,
    Trial,
    combo_config_hash,
    config_hash,
    returns_summary,
    summary_from_metrics,
    trial_config_hash,
    trial_from_run_dir,
)

T = TypeVar("T")

DEFAULT_LEDGER = Path("outputs") / "ledger.duckdb"
"""Default ledger path, relative to the working directory (the caller may pass any other)."""
LOCK_POLL_S = 0.01

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    trial_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    config_hash VARCHAR NOT NULL,
    data_fingerprint VARCHAR NOT NULL,
    engine_version VARCHAR NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    label VARCHAR,
    total_return DOUBLE,
    sharpe DOUBLE,
    sortino DOUBLE,
    max_drawdown DOUBLE,
    n_trades BIGINT,
    n_obs BIGINT,
    ret_mean DOUBLE,
    ret_std DOUBLE,
    ret_skew DOUBLE,
    ret_kurtosis DOUBLE
)
"""

__all__ = [
    "COLUMNS",
    "DEFAULT_LEDGER",
    "KINDS",
    "NOT_TRIAL_KEYS",
    "LedgerError",
    "Trial",
    "combo_config_hash",
    "config_hash",
    "ledger_append",
    "ledger_append_or_warn",
    "ledger_read",
    "ledger_record_grid",
    "ledger_record_run",
    "ledger_trials_count",
    "n_trials",
    "returns_summary",
    "summary_from_metrics",
    "trial_config_hash",
    "trial_from_run_dir",
]


@contextlib.contextmanager
def _locked(path: Path, exclusive: bool, timeout_s: float) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    msg = (
                        f"the trial ledger {path} stayed locked by another process for {timeout_s:g} s "
                        f"(lock file {lock_path}): wait for it to finish, or pass a longer timeout"
                    )
                    raise LedgerError(msg) from None
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def ledger_append(trials: Trial | Sequence[Trial], path: Path | str = DEFAULT_LEDGER, timeout_s: float = 60.0) -> int:
    """Append one or more trials to the ledger at ``path`` (created with its table if missing).

    Safe from many processes at once: the insert runs under an exclusive lock on ``<path>.lock``
    (see the module docstring). A batch is one transaction: all its rows or none.

    Returns
    -------
    int
        The number of rows appended.

    Raises
    ------
    LedgerError
        The lock was not obtained within ``timeout_s`` seconds, or the file is not a DuckDB ledger.
    """
    import duckdb

    from engine.data.sql import sql_literal

    rows = [trials.row()] if isinstance(trials, Trial) else [t.row() for t in trials]
    if not rows:
        return 0
    path = Path(path)
    # the rows as literals in one statement: DuckDB's binding of Python values imports pandas (engine/data/sql.py)
    values = ", ".join("(" + ", ".join(sql_literal(v) for v in row) + ")" for row in rows)
    insert = f"INSERT INTO trials ({', '.join(COLUMNS)}) VALUES {values}"
    with _locked(path, exclusive=True, timeout_s=timeout_s):
        try:
            con = duckdb.connect(str(path))
            try:
                con.execute(_SCHEMA)
                con.execute("BEGIN TRANSACTION")
                con.execute(insert)
                con.execute("COMMIT")
            finally:
                con.close()
        except duckdb.Error as exc:
            raise LedgerError(_db_error(path, "written", exc)) from None
    return len(rows)


def _db_error(path: Path, verb: str, exc: Exception) -> str:
    first = first_line(exc)
    return f"the trial ledger {path} could not be {verb} ({first}): move the file aside or pass another path"


def _read(path: Path, sql: str, params: list[object], timeout_s: float) -> list[tuple[object, ...]]:  # DuckDB rows
    import duckdb

    if not path.exists():
        return []
    with _locked(path, exclusive=False, timeout_s=timeout_s):
        try:
            con = duckdb.connect(str(path), read_only=True)
            try:
                tables = con.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_name = 'trials'"
                ).fetchone()
                if not tables or tables[0] == 0:
                    return []
                return con.execute(sql, params).fetchall()
            finally:
                con.close()
        except duckdb.Error as exc:
            raise LedgerError(_db_error(path, "read", exc)) from None


def n_trials(
    fingerprint: str, path: Path | str = DEFAULT_LEDGER, distinct: bool = True, timeout_s: float = 60.0
) -> int:
    """How many trials the ledger holds for a data fingerprint.

    ``distinct=True`` (the default, what the deflated Sharpe ratio should use) counts distinct
    config hashes: rerunning the same config on the same data is not a new trial, and a wfo choice
    of a combination already in the ledger as a grid combo is the same trial. ``distinct=False``
    counts rows. Every engine version counts: a trial tried with an older engine was still tried.
    A missing ledger holds 0 trials.
    """
    what = "count(DISTINCT config_hash)" if distinct else "count(*)"
    rows = _read(Path(path), f"SELECT {what} FROM trials WHERE data_fingerprint = ?", [fingerprint], timeout_s)
    if not rows:
        return 0
    count = rows[0][0]
    assert isinstance(count, int), count  # DuckDB's COUNT is a BIGINT
    return count


def ledger_read(
    fingerprint: str, path: Path | str = DEFAULT_LEDGER, timeout_s: float = 60.0
) -> list[dict[str, object]]:
    """Every row for a data fingerprint, oldest first, as dicts keyed by :data:`COLUMNS`."""
    sql = f"SELECT {', '.join(COLUMNS)} FROM trials WHERE data_fingerprint = ? ORDER BY recorded_at, trial_id"
    return [dict(zip(COLUMNS, r, strict=True)) for r in _read(Path(path), sql, [fingerprint], timeout_s)]


def _best_effort(path: Path | str, work: Callable[[], T]) -> tuple[bool, T | None]:
    """Run a finished run's ledger ``work``: a failure is one warning line, never an exception.

    The run's artefacts are written when its bookkeeping runs: a lock timeout, an unreadable file
    or a bad row must not fail it. Returns whether the work succeeded, and its value.
    """
    try:
        return True, work()
    except (EngineError, OSError) as exc:  # a lock timeout, an unreadable ledger, a bad row: one line
        print(f"warning: trial ledger {path} not updated: {first_line(exc)}", file=sys.stderr)
        return False, None
    except Exception:  # a bug in the bookkeeping: logged with its traceback, the run's artefacts stand
        logging.getLogger("engine").exception("trial ledger %s not updated: an engine bug, please report it", path)
        return False, None


def ledger_append_or_warn(trials: Trial | Sequence[Trial], path: Path | str | None) -> bool:
    """Append a finished run's rows with :func:`ledger_append`, warning instead of raising.

    ``path`` None (no ledger configured) does nothing. Returns whether the rows were appended.
    """
    if path is None:
        return False
    return _best_effort(path, lambda: ledger_append(trials, path))[0]


def ledger_trials_count(
    path: Path | str | None, trials: list[Trial], fingerprint: str, fallback: int, what: str
) -> tuple[int, str]:
    """Append ``trials`` to the ledger ``path`` and count its trials on ``fingerprint``.

    Never raises: without a ledger, or when it fails (one warning line), the count is ``fallback``
    (the ``what`` alone). Returns the count and a sentence saying where it came from.
    """
    if path is None:
        return fallback, f"{fallback} trials: the {what} alone (no ledger: paths.ledger is null)"

    def work() -> int:
        ledger_append(trials, path)
        return n_trials(fingerprint, path)

    ok, n = _best_effort(path, work)
    if not ok or n is None:
        return fallback, f"{fallback} trials: the {what} alone (ledger unavailable)"
    n = max(n, fallback)
    return n, f"{n} trials: the distinct configurations the ledger {path} holds for this data fingerprint"


def ledger_record_run(cfg: RunConfig, run_dir: Path, kind: str) -> bool:
    """Record a finished run's row (``run`` or ``sweep_job``) in ``cfg.paths.ledger``.

    The row comes from the run's manifest and metrics; nothing is recorded when no ledger is
    configured; a failure is one warning line.
    """
    if cfg.paths.ledger is None:
        return False
    ok, trial = _best_effort(cfg.paths.ledger, lambda: trial_from_run_dir(run_dir, kind, label=str(run_dir)))
    return ok and trial is not None and ledger_append_or_warn(trial, cfg.paths.ledger)


def ledger_record_grid(
    cfg: RunConfig, run_dir: Path, rules: Sequence[ExitRules | None], metrics: Sequence[Mapping[str, object]]
) -> bool:
    """Record one ``grid_combo`` row per combination of a finished ``task=grid`` run.

    The run's manifest gives the data fingerprint; nothing is recorded when no ledger is
    configured; a failure is one warning line.
    """
    if cfg.paths.ledger is None:
        return False

    def rows() -> list[Trial]:
        fp = json.loads((Path(run_dir) / MANIFEST_JSON).read_text())["data"]["fingerprint"]
        return [
            Trial.from_metrics("grid_combo", combo_config_hash(cfg, r), fp, m, label=f"{run_dir}/combos/{i:03d}")
            for i, (r, m) in enumerate(zip(rules, metrics, strict=True))
        ]

    ok, made = _best_effort(cfg.paths.ledger, rows)
    return ok and made is not None and ledger_append_or_warn(made, cfg.paths.ledger)
