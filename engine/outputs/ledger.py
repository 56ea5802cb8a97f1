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
import hashlib
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, SupportsFloat, SupportsInt, TypeVar

import numpy as np

from engine.config import ENGINE_VERSION, RunConfig
from engine.config.exit_rules import ExitRules
from engine.core.errors import EngineError, first_line
from engine.outputs.rundir import MANIFEST_JSON, METRICS_JSON
from engine.run.metrics import YEAR_DAYS

T = TypeVar("T")

DEFAULT_LEDGER = Path("outputs") / "ledger.duckdb"
"""Default ledger path, relative to the working directory (the caller may pass any other)."""
KINDS = ("run", "sweep_job", "grid_combo", "wfo_choice")
"""What a row records: a single run, one job of a Hydra sweep, one combination of a vectorised grid,
one window's choice of a walk-forward optimisation."""
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
COLUMNS = (
    "trial_id",
    "kind",
    "config_hash",
    "data_fingerprint",
    "engine_version",
    "recorded_at",
    "label",
    "total_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "n_trades",
    "n_obs",
    "ret_mean",
    "ret_std",
    "ret_skew",
    "ret_kurtosis",
)


class LedgerError(EngineError):
    """The ledger could not be locked in time, or a row is invalid."""


def config_hash(config: Mapping[str, object]) -> str:
    """SHA-256 of the canonical JSON of a config (sorted keys, no whitespace): equal configs, equal hash."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


NOT_TRIAL_KEYS = ("task", "quiet", "paths", "grid", "wfo")
"""Top-level config keys that do not change what a trial computes: the task that ran it (a grid combo
and a single run of the same settings are one trial), progress display, where the run wrote (every
run has its own ``paths.output_dir``), the grid definition (a combo's own settings are elsewhere in
the config) and the walk-forward optimisation's settings (a wfo choice is the trial of the combination
it chose). Where the data came from is the data fingerprint's business."""


def trial_config_hash(config: Mapping[str, object], exclude: Sequence[str] = NOT_TRIAL_KEYS) -> str:
    """:func:`config_hash` of a validated config without the keys that do not define the trial.

    Two runs with equal trial hashes on the same data fingerprint are the same trial, however and
    wherever they ran: :func:`n_trials` counts them once.
    """
    return config_hash({k: v for k, v in config.items() if k not in exclude})


def _num(x: object) -> float | None:
    if x is None:
        return None
    if not isinstance(x, SupportsFloat):
        msg = f"a metric must be a number or null, got {x!r}"
        raise TypeError(msg)
    v = float(x)
    return v if math.isfinite(v) else None


def _count(x: object) -> int | None:
    if x is None:
        return None
    if not isinstance(x, SupportsInt):
        msg = f"a count must be an integer or null, got {x!r}"
        raise TypeError(msg)
    return int(x)


def returns_summary(returns: np.ndarray | Sequence[float]) -> dict[str, float | int | None]:
    """n_obs, mean, std (ddof=1), skew, kurtosis (non-excess, 3 for a normal) of daily returns.

    The moments are those of ``engine.run.metrics.equity_metrics`` (population moments), so the ledger's
    skew and kurtosis feed the deflated Sharpe ratio exactly as metrics.json does. Undefined
    moments (fewer than two returns, zero variance) are None.
    """
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    n = int(r.size)
    mean = float(r.mean()) if n else math.nan
    std = float(r.std(ddof=1)) if n > 1 else math.nan
    centered = r - mean if n else r
    m2 = float(np.mean(centered**2)) if n else 0.0
    skew = float(np.mean(centered**3)) / m2**1.5 if m2 > 0 else math.nan
    kurt = float(np.mean(centered**4)) / m2**2 if m2 > 0 else math.nan
    return {
        "n_obs": n,
        "ret_mean": _num(mean),
        "ret_std": _num(std),
        "ret_skew": _num(skew),
        "ret_kurtosis": _num(kurt),
    }


def summary_from_metrics(metrics: Mapping[str, object]) -> dict[str, float | int | None]:
    """Return the :func:`returns_summary` of a run recovered from its metrics.json.

    From ``equity_metrics``: ``n_obs = n_returns``, daily ``std = annual_volatility / sqrt(365)``, daily
    ``mean = sharpe / sqrt(365) * std``, skew and kurtosis as they are (the same moments).
    """
    vol, sharpe = _num(metrics.get("annual_volatility")), _num(metrics.get("sharpe"))
    std = vol / math.sqrt(YEAR_DAYS) if vol is not None else None
    mean = sharpe / math.sqrt(YEAR_DAYS) * std if sharpe is not None and std is not None else None
    n_returns = metrics.get("n_returns")
    return {
        "n_obs": _count(n_returns),
        "ret_mean": mean,
        "ret_std": std,
        "ret_skew": _num(metrics.get("skewness")),
        "ret_kurtosis": _num(metrics.get("kurtosis")),
    }


@dataclass(frozen=True)
class Trial:
    """One ledger row. Build it with :meth:`from_metrics` from a run's metrics and daily returns."""

    kind: str
    config_hash: str
    data_fingerprint: str
    total_return: float | None = None
    sharpe: float | None = None
    sortino: float | None = None
    max_drawdown: float | None = None
    n_trades: int | None = None
    n_obs: int | None = None
    ret_mean: float | None = None
    ret_std: float | None = None
    ret_skew: float | None = None
    ret_kurtosis: float | None = None
    label: str | None = None
    engine_version: str = ENGINE_VERSION
    recorded_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))
    trial_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        """Check the trial's kind and its identifying fields."""
        if self.kind not in KINDS:
            raise LedgerError(f"unknown trial kind '{self.kind}': use one of {', '.join(KINDS)}")
        if not self.config_hash or not self.data_fingerprint:
            raise LedgerError("a trial needs a config_hash and a data_fingerprint")

    @classmethod
    def from_metrics(
        cls,
        kind: str,
        config_hash: str,
        data_fingerprint: str,
        metrics: Mapping[str, object],
        daily_returns: np.ndarray | Sequence[float] | None = None,
        label: str | None = None,
        engine_version: str = ENGINE_VERSION,
    ) -> Trial:
        """Return a row from a metrics.json dict (total_return, sharpe, sortino, max_drawdown, n_trades).

        The returns summary is :func:`returns_summary` of ``daily_returns`` when given; otherwise it is
        recovered from the metrics themselves (:func:`summary_from_metrics`), so a grid combination
        or a finished run needs nothing but its metrics.
        """
        n_trades = metrics.get("n_trades")
        summary = returns_summary(daily_returns) if daily_returns is not None else summary_from_metrics(metrics)
        return cls(
            kind=kind,
            config_hash=config_hash,
            data_fingerprint=data_fingerprint,
            total_return=_num(metrics.get("total_return")),
            sharpe=_num(metrics.get("sharpe")),
            sortino=_num(metrics.get("sortino")),
            max_drawdown=_num(metrics.get("max_drawdown")),
            n_trades=_count(n_trades),
            label=label,
            engine_version=engine_version,
            **summary,  # type: ignore[arg-type]
        )

    def row(self) -> tuple[object, ...]:
        """Return the trial as a row of the ledger table, in ``COLUMNS`` order."""
        d = asdict(self)
        return tuple(d[c] for c in COLUMNS)


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

    rows = [trials.row()] if isinstance(trials, Trial) else [t.row() for t in trials]
    if not rows:
        return 0
    path = Path(path)
    insert = f"INSERT INTO trials ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    with _locked(path, exclusive=True, timeout_s=timeout_s):
        try:
            con = duckdb.connect(str(path))
            try:
                con.execute(_SCHEMA)
                con.execute("BEGIN TRANSACTION")
                con.executemany(insert, rows)
                con.execute("COMMIT")
            finally:
                con.close()
        except duckdb.Error as exc:
            raise LedgerError(_db_error(path, "written", exc)) from None
    return len(rows)


def _db_error(path: Path, verb: str, exc: Exception) -> str:
    first = first_line(exc)
    return f"the trial ledger {path} could not be {verb} ({first}): move the file aside or pass another path"


def _read(path: Path, sql: str, params: list[object], timeout_s: float) -> list[tuple[Any, ...]]:  # DuckDB rows
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


def trial_from_run_dir(run_dir: Path | str, kind: str, label: str | None = None) -> Trial:
    """Return a ledger row from a finished run's directory: ``manifest.json`` and ``metrics.json`` only.

    The config hash is :func:`trial_config_hash` of the manifest's validated ``config``, the fingerprint
    its ``data.fingerprint``, the engine version its ``engine_version``. The returns summary is
    recovered from metrics.json by :func:`summary_from_metrics` (no need to read equity.parquet,
    whose layout belongs to the engine). The label defaults to the directory name.

    Raises
    ------
    LedgerError
        A file is missing or lacks the config / fingerprint.
    """
    run_dir = Path(run_dir)
    try:
        manifest = json.loads((run_dir / MANIFEST_JSON).read_text())
        metrics = json.loads((run_dir / METRICS_JSON).read_text())
    except (OSError, ValueError) as exc:
        msg = f"{run_dir} is not a finished run ({exc.__class__.__name__}: {exc}): it needs manifest.json and metrics.json"
        raise LedgerError(msg) from None
    fingerprint = (manifest.get("data") or {}).get("fingerprint")
    if "config" not in manifest or not fingerprint:
        raise LedgerError(f"{run_dir / MANIFEST_JSON} has no config or data fingerprint: rerun with this engine")
    return Trial.from_metrics(
        kind,
        trial_config_hash(manifest["config"]),
        str(fingerprint),
        metrics,
        label=run_dir.name if label is None else label,
        engine_version=str(manifest.get("engine_version") or ENGINE_VERSION),
    )


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
    return int(rows[0][0]) if rows else 0


def ledger_read(fingerprint: str, path: Path | str = DEFAULT_LEDGER, timeout_s: float = 60.0) -> list[dict[str, Any]]:
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


def combo_config_hash(cfg: RunConfig, rules: ExitRules | None) -> str:
    """Return the trial hash of one exit-rule combination of a grid (``task=grid`` / ``task=wfo``).

    It hashes the run's validated config (a ``RunConfig``) with ``exit_rules`` set to the
    combination's (an ``ExitRules`` or None), which is what a single run of that combination
    records.
    """
    raw = cfg.model_dump(mode="json")
    raw["exit_rules"] = None if rules is None else rules.model_dump(mode="json")
    return trial_config_hash(raw)


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
