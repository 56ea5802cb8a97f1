"""Sweep summary: rank the jobs of a parameter sweep and deflate their Sharpe ratios.

A sweep directory holds one sub-directory per job (Hydra multirun ``<sweep_dir>/<job_num>/``, or the
vectorised grid's ``<grid_run_dir>/combos/<combo_id>/``). :func:`sweep_summarize` reads every job's
``metrics.json`` and ``params.json`` through DuckDB (``sql/sweep_metrics.sql``), ranks the jobs by a
metric, adds the deflated Sharpe ratio of each trial, and writes ``leaderboard.csv``,
``leaderboard.md``, ``failed.csv`` (when jobs failed) and, when both ``exit_rules.sl_stop`` and
``exit_rules.tp_stop`` were swept, ``heatmap_sl_tp.html`` and ``heatmap_sl_tp.png``. The PNG alone
needs a Chrome/Chromium: without one the summary is still written and one warning says how to get it.

Use it as ``python -m engine.sweep SWEEP_DIR [--metric sharpe]`` (:mod:`engine.sweep`), or let Hydra
run it at the end of every multirun with ``hydra/callbacks=sweep_summary``
(:class:`engine.tasks.multirun.SweepSummaryCallback`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from engine.config import ENGINE_VERSION
from engine.core.errors import EngineError, first_line
from engine.outputs.rundir import ERROR, MANIFEST_JSON, METRICS_JSON, PARAMS_JSON
from engine.run.metrics import YEAR_DAYS
from engine.run.validation import EULER_GAMMA as EULER_GAMMA  # re-exported: the DSR is defined once, there
from engine.run.validation import deflated_sharpe, expected_max_sharpe
from engine.run.validation import deflated_sharpe_ratio as deflated_sharpe_ratio

HEADLINE = ("total_return", "sharpe", "max_drawdown", "n_trades", "n_ambiguous_exits")
"""Metric columns every leaderboard shows, after the swept params and the ranked metric."""
SL_KEY, TP_KEY = "exit_rules.sl_stop", "exit_rules.tp_stop"
HEATMAP_DIV_ID = "heatmap-sl-tp"
"""Fixed div id so the html is byte-identical for identical inputs."""
GRID_SUBDIR = "combos"
"""Where the vectorised grid writes its combos (``<grid_run_dir>/combos/<combo_id>/``)."""
_JOB_MARKERS = (METRICS_JSON, PARAMS_JSON, ERROR, ".hydra")


@dataclass
class SweepSummary:
    """What :func:`sweep_summarize` found and wrote.

    Attributes
    ----------
    sweep_dir : Path
        The summarised sweep directory.
    metric : str
        The metric the leaderboard is ranked by.
    descending : bool
        True when the highest value ranks first.
    leaderboard : pl.DataFrame
        rank, job, the swept params, the metric, the headline metrics and ``deflated_sharpe``.
    swept : list[str]
        Config keys whose value varies across the jobs (the param columns of ``leaderboard``).
    failed : pl.DataFrame
        job and reason of every job without metrics.json (empty when none failed).
    sr0 : float
        Expected maximum per-period Sharpe ratio of the trials under the null (the DSR benchmark).
    files : dict[str, Path]
        Written files by name (``leaderboard.csv``, ``leaderboard.md``, ``failed.csv``, ...).
    """

    sweep_dir: Path
    metric: str
    descending: bool
    leaderboard: pl.DataFrame
    swept: list[str]
    failed: pl.DataFrame
    sr0: float
    files: dict[str, Path] = field(default_factory=dict)
    dsr_trials: int = 0
    """N of the deflated Sharpe ratio: the ledger's distinct trials on this data fingerprint (at
    least the jobs here), or the jobs here when no ledger is available."""
    periods_per_year: float = YEAR_DAYS
    """Equity marks per year of the jobs (365 on daily bars): SR0 is annualised with it."""
    dsr_trials_source: str = ""
    """Where ``dsr_trials`` came from, as a sentence for the leaderboard."""
    warnings: list[str] = field(default_factory=list)
    """What the summary could not make (the heatmap PNG without a browser), one line each."""

    @property
    def n_trials(self) -> int:
        """Jobs with metrics.json."""
        return self.leaderboard.height

    def top(self, n: int = 5) -> pl.DataFrame:
        """Return the ``n`` best-ranked rows."""
        return self.leaderboard.head(n)


# ---- deflated Sharpe ratio (defined once, in engine.run.validation) -------------------------------


def sweep_dsr(
    sharpe_annual: np.ndarray,
    n_returns: np.ndarray,
    skew: np.ndarray,
    kurt: np.ndarray,
    n_trials: int | None = None,
    periods_per_year: np.ndarray | float = YEAR_DAYS,
) -> tuple[np.ndarray, float]:
    """Deflated Sharpe ratio of every trial of a sweep, from annualised Sharpe ratios.

    The trials are the jobs with a finite Sharpe ratio: N is their count (unless ``n_trials`` gives
    it, e.g. the ledger's count for the same data fingerprint) and V[SR] the sample variance
    (ddof=1) of their per-period Sharpe ratios ``sharpe / sqrt(periods_per_year)`` (365 on daily
    bars, 8,760 on hourly). The DSR compares per-period figures because T, skewness and kurtosis
    are those of the per-bar returns.

    Returns
    -------
    tuple[np.ndarray, float]
        The DSR of each row (NaN for rows that are not valid trials) and SR0 (per period).
    """
    sr = np.asarray(sharpe_annual, dtype=np.float64) / np.sqrt(periods_per_year)
    valid = sr[np.isfinite(sr)]
    var_sr = float(np.var(valid, ddof=1)) if valid.size > 1 else 0.0
    n = max(int(valid.size) if n_trials is None else int(n_trials), 1)
    dsr = deflated_sharpe(sr, n, var_sr, n_returns, skew, kurt)
    return dsr, expected_max_sharpe(n, var_sr)


# ---- reading the sweep -----------------------------------------------------------------------


def ledger_trial_count(sweep_dir: Path, jobs: list[Path], n_jobs: int) -> tuple[int | None, str]:
    """Count the trial ledger's distinct trials on the sweep's data fingerprint.

    The fingerprint and the ledger path (``paths.ledger``) come from the jobs' ``manifest.json``
    (a grid's combos: the grid run's, one level up). None with the reason when there is no ledger,
    no manifest, the jobs ran on different data, or the ledger cannot be read (one warning line).
    """
    manifests = [d / MANIFEST_JSON for d in jobs if (d / MANIFEST_JSON).is_file()]
    if not manifests and (sweep_dir.parent / MANIFEST_JSON).is_file():
        manifests = [sweep_dir.parent / MANIFEST_JSON]
    if not manifests:
        return None, f"{n_jobs} trials: the jobs here (no manifest.json names a ledger)"
    fps: set[str | None] = set()
    ledgers: set[str | None] = set()
    for path in manifests:
        try:
            man = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        fps.add((man.get("data") or {}).get("fingerprint"))
        ledgers.add(((man.get("config") or {}).get("paths") or {}).get("ledger"))
    # one fingerprint and one ledger, neither None (else None: a set of several or none)
    fp = next(iter(fps)) if len(fps) == 1 else None
    ledger = next(iter(ledgers)) if len(ledgers) == 1 else None
    if fp is None or ledger is None:
        why = "no ledger configured" if None in ledgers else "the jobs ran on different data or ledgers"
        return None, f"{n_jobs} trials: the jobs here ({why})"
    from engine.outputs.ledger import n_trials

    try:
        n = n_trials(fp, ledger)
    except (EngineError, OSError) as exc:  # LedgerError names the file; anything else is a bug and raises
        first = first_line(exc)
        print(f"warning: trial ledger {ledger} not read ({first}); counting the jobs here", file=sys.stderr)
        return None, f"{n_jobs} trials: the jobs here (ledger unreadable)"
    n = max(n, n_jobs)
    return n, f"{n} trials: the distinct configurations the ledger {ledger} holds for this data fingerprint"


def _is_job_dir(path: Path) -> bool:
    return path.is_dir() and (any((path / m).exists() for m in _JOB_MARKERS) or any(path.glob("*.log")))


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job directory of a Hydra sweep (``<n>/``) or a vectorised grid run (``combos/<id>/``)."""
    roots = [sweep_dir, sweep_dir / GRID_SUBDIR] if (sweep_dir / GRID_SUBDIR).is_dir() else [sweep_dir]
    found = [d for root in roots for d in root.iterdir() if not d.name.startswith(".") and _is_job_dir(d)]

    def key(d: Path) -> tuple[str, int, str]:
        # numeric job names in numeric order (0, 1, ..., 10), as Hydra numbers them
        return (str(d.parent), int(d.name) if d.name.isdigit() else sys.maxsize, d.name)

    return sorted(found, key=key)


def failure_reason(job_dir: Path) -> str:
    """Why a job has no metrics.json: error.txt, else the last log line with "Error", else a default."""
    error = job_dir / ERROR
    if error.is_file():
        lines = [ln.strip() for ln in error.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[0]
    for log in sorted(job_dir.glob("*.log")):
        hits = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if "Error" in ln]
        if hits:
            return hits[-1]
    return "no metrics.json"


def _query(sweep_dir: Path, jobs: list[Path], metric: str, descending: bool) -> pl.DataFrame:
    import duckdb

    from engine.data.sql import sql_arrow

    params = {
        "metrics_files": [str(d / METRICS_JSON) for d in jobs],
        "params_files": [str(d / PARAMS_JSON) for d in jobs if (d / PARAMS_JSON).is_file()],
        "root": str(sweep_dir),
        "metric": metric,
        "descending": descending,
    }
    try:
        table = sql_arrow("sweep_metrics", params)
    except duckdb.Error as exc:
        first = first_line(exc)
        msg = f"the metrics.json/params.json files of {sweep_dir} could not be read ({first}): rerun the broken jobs"
        raise EngineError(msg) from None
    return pl.from_arrow(table)  # type: ignore[return-value]


def _version_check(rows: pl.DataFrame, job_order: list[str]) -> None:
    versions = dict(rows.select("job", "engine_version").iter_rows())
    for job in job_order:  # report the first job in sweep order, as a person would scan the directory
        version = versions[job]
        if version is None:
            msg = (
                f"metrics.json of job {job} has no engine_version (an older engine wrote it), "
                f"this is {ENGINE_VERSION}: rerun the sweep with this engine"
            )
            raise EngineError(msg)
        if version != ENGINE_VERSION:
            msg = (
                f"metrics.json of job {job} comes from engine version {version}, this is {ENGINE_VERSION}: "
                f"rerun the sweep or summarise it with engine version {version}"
            )
            raise EngineError(msg)


def _swept_params(params_json: list[str]) -> tuple[list[str], list[dict[str, object]]]:
    parsed = [json.loads(p) if p else {} for p in params_json]
    keys = sorted({k for p in parsed for k in p})
    swept = [k for k in keys if len({json.dumps(p.get(k)) for p in parsed}) > 1]
    return swept, parsed


def _jobs_done(sweep_dir: Path) -> tuple[list[Path], pl.DataFrame]:
    """Return the sweep's finished job directories and a frame of the failed ones (job, reason).

    EngineError when the directory is missing, holds no job, or no job finished.
    """
    if not sweep_dir.is_dir():
        msg = f"sweep directory {sweep_dir} does not exist: pass the directory of a multirun, e.g. outputs/sweeps/DATE/TIME"
        raise EngineError(msg)
    jobs = job_dirs(sweep_dir)
    done = [d for d in jobs if (d / METRICS_JSON).is_file()]
    failed = pl.DataFrame(
        [(str(d.relative_to(sweep_dir)), failure_reason(d)) for d in jobs if d not in done],
        schema={"job": pl.String, "reason": pl.String},
        orient="row",
    )
    if not jobs:
        msg = f"{sweep_dir} has no job directories: pass the directory of a multirun (it holds 0/, 1/, ...)"
        raise EngineError(msg)
    if not done:
        job, reason = failed.row(0)
        msg = (
            f"no job in {sweep_dir} has metrics.json (all {len(jobs)} failed; job {job}: {reason}): fix that and rerun"
        )
        raise EngineError(msg)
    return done, failed


def sweep_summarize(sweep_dir: Path, metric: str = "sharpe", descending: bool = True) -> SweepSummary:
    """Rank the jobs of a sweep by ``metric`` and write the leaderboard and heatmap into ``sweep_dir``.

    Parameters
    ----------
    sweep_dir : Path
        A Hydra sweep directory (``<sweep_dir>/<job_num>/``) or a grid run (``combos/<combo_id>/``).
    metric : str
        A numeric key of metrics.json (sharpe, total_return, calmar, ...).
    descending : bool
        Rank the highest value first (False for e.g. ``annual_volatility``).

    Returns
    -------
    SweepSummary
        The leaderboard, failed jobs, SR0 and the paths written.

    Raises
    ------
    EngineError
        The directory is missing, no job has metrics.json, a job's metrics come from another engine
        version, or ``metric`` is not a numeric metric.
    """
    sweep_dir = Path(sweep_dir).resolve()
    done, failed = _jobs_done(sweep_dir)

    rows = _query(sweep_dir, done, metric, descending)
    _version_check(rows, [str(d.relative_to(sweep_dir)) for d in done])
    valid = sorted({k for keys in rows.get_column("numeric_keys").to_list() for k in keys or []})
    if metric not in valid:
        msg = f"unknown metric '{metric}': valid metrics are {', '.join(valid)}"
        raise EngineError(msg)

    sharpe = rows.get_column("sharpe").cast(pl.Float64).fill_null(np.nan).to_numpy()
    n_valid = max(int(np.isfinite(sharpe).sum()), 1)
    n_ledger, source = ledger_trial_count(sweep_dir, done, n_valid)
    dsr, sr0 = sweep_dsr(
        sharpe,
        rows.get_column("n_returns").cast(pl.Float64).fill_null(np.nan).to_numpy(),
        rows.get_column("skewness").cast(pl.Float64).fill_null(np.nan).to_numpy(),
        rows.get_column("kurtosis").cast(pl.Float64).fill_null(np.nan).to_numpy(),
        n_trials=n_ledger,
        periods_per_year=rows.get_column("periods_per_year").to_numpy(),
    )
    swept, parsed = _swept_params(rows.get_column("params").to_list())
    param_cols = [pl.Series(k, [p.get(k) for p in parsed], dtype=pl.String) for k in swept]
    metric_cols = [] if metric in HEADLINE else [pl.col("metric_value").alias(metric)]
    board = rows.with_columns(*param_cols, deflated_sharpe=pl.Series(dsr).fill_nan(None)).select(
        "rank", "job", *swept, *metric_cols, *HEADLINE, "deflated_sharpe"
    )

    summary = SweepSummary(
        sweep_dir,
        metric,
        descending,
        board,
        swept,
        failed,
        sr0,
        dsr_trials=n_ledger or n_valid,
        periods_per_year=float(np.nanmax(rows.get_column("periods_per_year").to_numpy())),
        dsr_trials_source=source,
    )
    _write_tables(summary)
    if SL_KEY in swept and TP_KEY in swept:
        _write_heatmap(summary)
    return summary


# ---- outputs ---------------------------------------------------------------------------------


def _cell(x: object) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.4f}"
    return str(x).replace("|", "\\|")


def _write_tables(s: SweepSummary) -> None:
    from engine.data.lakehouse import atomic_write_bytes

    csv_path = s.sweep_dir / "leaderboard.csv"
    atomic_write_bytes(csv_path, s.leaderboard.write_csv().encode())
    s.files["leaderboard.csv"] = csv_path

    n_failed = s.failed.height
    order = "highest first" if s.descending else "lowest first"
    lines = [
        f"# Sweep summary: {s.sweep_dir.name}",
        "",
        f"{s.n_trials} trials, {n_failed} failed job{'s' if n_failed != 1 else ''}, ranked by {s.metric} ({order}).",
        "",
        "`deflated_sharpe` (Bailey & López de Prado, 2014) is the probability that a trial's true Sharpe "
        f"ratio beats the best one {s.dsr_trials} unskilled trials would show by luck "
        f"(SR0 = {s.sr0 * math.sqrt(s.periods_per_year):.3f} annualised), given its track-record length, skewness and "
        "kurtosis; below 0.95 the trial's edge is not significant at 5 %.",
        "",
        f"Deflated with {s.dsr_trials_source}.",
        "",
        "| " + " | ".join(s.leaderboard.columns) + " |",
        "|" + "|".join("---:" if dt.is_numeric() else "---" for dt in s.leaderboard.dtypes) + "|",
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in s.leaderboard.iter_rows()]
    if n_failed:
        lines += ["", "## Failed jobs", "", "| job | reason |", "|---|---|"]
        lines += [f"| {_cell(j)} | {_cell(r)} |" for j, r in s.failed.iter_rows()]
    md_path = s.sweep_dir / "leaderboard.md"
    atomic_write_bytes(md_path, ("\n".join(lines) + "\n").encode())
    s.files["leaderboard.md"] = md_path

    if n_failed:
        failed_path = s.sweep_dir / "failed.csv"
        atomic_write_bytes(failed_path, s.failed.write_csv().encode())
        s.files["failed.csv"] = failed_path


def _axis_order(values: list[str | None]) -> list[str | None]:
    """Axis labels in numeric order where they parse as numbers (``null``/text after them)."""

    def key(v: str | None) -> tuple[int, float, str]:
        if v is None:
            return (2, 0.0, "")
        try:
            return (0, float(v), "")
        except ValueError:
            return (1, 0.0, v)

    return sorted(set(values), key=key)


def browser_path() -> str:
    """Return the Chrome/Chromium kaleido renders with: ``$BROWSER_PATH``, else chromium/chrome on PATH.

    kaleido 1.x ships no browser; it drives an installed one through choreographer. Passing the
    path explicitly makes the failure message name the binary instead of choreographer's search.

    Raises
    ------
    EngineError
        ``$BROWSER_PATH`` names no file, or none of the browsers is on PATH.
    """
    if given := os.environ.get("BROWSER_PATH"):
        if Path(given).is_file():
            return given
        msg = f"no Chrome/Chromium found for the heatmap png (BROWSER_PATH={given} is not a file): point BROWSER_PATH at one or unset it"
        raise EngineError(msg)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if found := shutil.which(name):
            return found
    msg = "no Chrome/Chromium found for the heatmap png: install one (apt-get install chromium) or set BROWSER_PATH"
    raise EngineError(msg)


def _write_heatmap(s: SweepSummary) -> None:
    import kaleido
    import plotly.graph_objects as go

    from engine.data.lakehouse import atomic_write_bytes

    col = s.metric  # the leaderboard always has a column named after the ranked metric
    # other swept params leave several jobs per (sl, tp) cell: show the best-ranked one
    cells = s.leaderboard.sort("rank").unique(subset=[SL_KEY, TP_KEY], keep="first", maintain_order=True)
    sl_axis = _axis_order(cells.get_column(SL_KEY).to_list())
    tp_axis = _axis_order(cells.get_column(TP_KEY).to_list())
    z: list[list[float | None]] = [[None] * len(sl_axis) for _ in tp_axis]
    for sl, tp, value in cells.select(SL_KEY, TP_KEY, col).iter_rows():
        z[tp_axis.index(tp)][sl_axis.index(sl)] = value
    others = [k for k in s.swept if k not in (SL_KEY, TP_KEY)]
    title = f"{s.metric} by stop loss and take profit" + (" (best over the other swept params)" if others else "")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(v) for v in sl_axis],
            y=[str(v) for v in tp_axis],
            colorscale="RdYlGn" if s.descending else "RdYlGn_r",
            colorbar={"title": {"text": s.metric}},
            texttemplate="%{z:.3g}",
            hovertemplate="sl_stop %{x}<br>tp_stop %{y}<br>" + s.metric + " %{z}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis={"title": {"text": SL_KEY}, "type": "category"},
        yaxis={"title": {"text": TP_KEY}, "type": "category"},
        width=720,
        height=560,
        template="plotly_white",
    )
    html_path = s.sweep_dir / "heatmap_sl_tp.html"
    page = fig.to_html(include_plotlyjs=True, full_html=True, div_id=HEATMAP_DIV_ID, config={"displaylogo": False})
    atomic_write_bytes(html_path, page.encode())
    s.files["heatmap_sl_tp.html"] = html_path

    png_path = s.sweep_dir / "heatmap_sl_tp.png"
    try:
        browser = browser_path()
    except EngineError as exc:
        _png_skipped(s, png_path, str(exc))
        return
    try:
        # mathjax=False: kaleido would fetch MathJax from a CDN, and the sweep must render offline
        png = kaleido.calc_fig_sync(
            fig, opts={"format": "png", "width": 720, "height": 560}, kopts={"path": browser, "mathjax": False}
        )
    except Exception as exc:  # kaleido and Chrome fail in many ways: each is said (a warning), the PNG skipped
        first = first_line(exc)
        why = (
            f"kaleido could not render it with {browser} ({first}): "
            "check that this Chrome/Chromium starts, or point BROWSER_PATH at a working one"
        )
        _png_skipped(s, png_path, why)
        return
    atomic_write_bytes(png_path, bytes(png))
    s.files["heatmap_sl_tp.png"] = png_path


def _png_skipped(s: SweepSummary, png_path: Path, why: str) -> None:
    """Record why the heatmap PNG was not made, and remove an older one that no longer matches."""
    png_path.unlink(missing_ok=True)
    s.warnings.append(
        f"heatmap_sl_tp.png not made: {why}, then rerun `python -m engine.sweep {s.sweep_dir}` "
        "(the leaderboard and heatmap_sl_tp.html are written)"
    )
