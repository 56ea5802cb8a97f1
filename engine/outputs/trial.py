"""One trial of the ledger: its row (:class:`Trial`), its config hash and its returns summary.

What :mod:`engine.outputs.ledger` appends and reads; built from a run's metrics or its run directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import SupportsFloat, SupportsInt

import numpy as np

from engine.config import ENGINE_VERSION, ExecutionConfig, RunConfig
from engine.config.exit_rules import ExitRules
from engine.core.errors import EngineError
from engine.outputs.rundir import MANIFEST_JSON, METRICS_JSON
from engine.run.metrics import YEAR_DAYS

KINDS = ("run", "sweep_job", "grid_combo", "wfo_choice")
"""What a row records: a single run, one job of a Hydra sweep, one combination of a vectorised grid,
one window's choice of a walk-forward optimisation."""

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
    kept = {k: v for k, v in config.items() if k not in exclude}
    section = kept.get("execution")
    if isinstance(section, Mapping):  # the capacity capitals are not the trial's; all-default: a run before it
        execution = {k: v for k, v in section.items() if k != "capacity"}
        kept["execution"] = execution
        if execution == _FRICTIONLESS:
            del kept["execution"]
    return config_hash(kept)


_FRICTIONLESS = {k: v for k, v in ExecutionConfig().model_dump(mode="json").items() if k != "capacity"}
"""``execution`` at its defaults (without the capacity list): left out of the trial hash, so the
trials of runs made before the section existed keep their hash."""


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


def combo_config_hash(cfg: RunConfig, rules: ExitRules | None) -> str:
    """Return the trial hash of one exit-rule combination of a grid (``task=grid`` / ``task=wfo``).

    It hashes the run's validated config (a ``RunConfig``) with ``exit_rules`` set to the
    combination's (an ``ExitRules`` or None), which is what a single run of that combination
    records.
    """
    raw = cfg.model_dump(mode="json")
    raw["exit_rules"] = None if rules is None else rules.model_dump(mode="json")
    return trial_config_hash(raw)
