"""Command line: Hydra composes the config, pydantic validates it, ``run_backtest`` does the work.

Every run's overrides (each combination of a ``-m`` sweep) are composed and validated before
Hydra starts, so a typo or an out-of-range value fails at once with one line and exit code 2,
not with a traceback halfway through a sweep.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import RunConfig, config_validate
from engine.errors import ConfigError, DataError, EngineError
from engine.exit_rules import ExitRules

log = logging.getLogger("engine")

_PKG_CONF = Path(__file__).resolve().parent.parent / "conf"
CONF_DIR = _PKG_CONF if _PKG_CONF.is_dir() else Path.cwd() / "conf"
MAX_VALIDATED_COMBOS = 10_000


@dataclass
class RunResult:
    """What ``run_backtest`` returns: where the artefacts are and the headline metrics."""

    output_dir: Path
    metrics: dict[str, Any]
    timings: dict[str, float]


def fail(message: str, code: int = 2) -> None:
    """Print a one-line user error and exit without a traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    return raw  # type: ignore[return-value]


def _hydra_message(exc: Exception) -> str:
    """One line out of Hydra's (often multi-line) composition errors."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    if "Could not find 'profile/" in text or ("profile" in text and "not found" in text.lower()):
        names = sorted(p.stem for p in (CONF_DIR / "profile").glob("*.yaml"))
        return f"{text.rstrip('.')}: available profiles are {', '.join(names)}"
    return text


def _parses(parser: Any, override: str) -> bool:
    from hydra.errors import HydraException

    try:
        parser.parse_overrides([override])
    except HydraException:
        return False
    return True


def overrides_expand(overrides: list[str]) -> list[list[str]]:
    """Every combination a sweep would run (sweep syntax expanded; hydra.* overrides dropped)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as exc:
        bad = next((o for o in overrides if not _parses(parser, o)), "?")
        msg = f"malformed override {bad!r} ({_hydra_message(exc)}): write key=value; quote special characters"
        raise ConfigError(msg) from None
    axes: list[list[str]] = []
    for o in parsed:
        key = o.get_key_element()
        if o.key_or_group.startswith("hydra"):
            continue
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
            if not values:
                msg = f"sweep {key} has an empty value list: give at least one value, e.g. {key}=0.05,0.1"
                raise ConfigError(msg)
            axes.append([f"{key}={v}" for v in values])
        else:
            axes.append([o.input_line])
    return [list(c) for c in itertools.product(*axes)]


def config_compose(overrides: list[str]) -> tuple[RunConfig, dict[str, Any]]:
    """Compose ``conf/`` with ``overrides`` through Hydra's compose API and validate it."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        raw = _plain(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        unknown = re.search(r"Could not override '([^']+)'", str(exc))
        if unknown and "not in struct" in str(exc.__cause__):
            key = unknown.group(1)
            parent, _, _leaf = key.rpartition(".")
            rest = [o for o in overrides if not o.lstrip("+~").startswith(f"{key}=")]
            node: Any = config_compose(rest)[1]
            for part in parent.split(".") if parent else []:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            valid = ", ".join(sorted(node)) if isinstance(node, dict) else ""
            msg = f"unknown config key '{key}': valid keys in {parent or 'the root'} are {valid}"
            raise ConfigError(msg) from None
        raise ConfigError(_hydra_message(exc)) from None
    return config_validate(raw), raw


def overrides_validate(overrides: list[str], multirun: bool) -> int:
    """Compose and validate every run the command line describes; returns how many are valid."""
    combos = overrides_expand(overrides) if multirun else [[o for o in overrides if not o.startswith("hydra")]]
    if not multirun:
        overrides_expand(combos[0])  # parse errors as one line before Hydra sees them
    errors: list[str] = []
    for combo in combos[:MAX_VALIDATED_COMBOS]:
        try:
            cfg, _ = config_compose(combo)
            if cfg.task == "grid":
                grid_combos(cfg)
        except ConfigError as exc:
            if not multirun:
                raise
            errors.append(str(exc))
    if errors and len(errors) == len(combos):
        msg = f"all {len(combos)} sweep combinations are invalid, e.g. {errors[0]}"
        raise ConfigError(msg)
    if errors:
        msg = (
            f"{len(errors)} of {len(combos)} sweep combinations are invalid, e.g. {errors[0]}: fix or drop those values"
        )
        raise ConfigError(msg)
    return len(combos)


@contextlib.contextmanager
def data_errors(lakehouse: str) -> Iterator[None]:
    """Turn a reader's failure on a corrupt or foreign file into one line that says what to do."""
    import duckdb
    import polars.exceptions as plx

    try:
        yield
    except (duckdb.Error, plx.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        msg = (
            f"unreadable data in the lakehouse {lakehouse} ({first}): delete the file it names "
            "(the run refetches or regenerates it) and rerun"
        )
        from engine.data.storage import redact  # issue 16: no AWS key or secret in a message

        raise DataError(redact(msg)) from None


def output_dir(cfg: RunConfig) -> Path:
    """The run's artefact directory (set by Hydra, or by the caller of the plain functions)."""
    if cfg.paths.output_dir is None:
        msg = "paths.output_dir is not set: pass paths.output_dir=DIR or run through `python -m engine`"
        raise ConfigError(msg)
    return Path(cfg.paths.output_dir)


def run_backtest(cfg: RunConfig, config_yaml: str = "") -> RunResult:
    """Run a walk-forward backtest and write its artefacts into ``cfg.paths.output_dir``."""
    from engine.artefacts import artefacts_write
    from engine.backtest import BacktestEngine

    out = output_dir(cfg)
    t0 = time.perf_counter()
    with data_errors(cfg.paths.lakehouse_dir):
        engine = BacktestEngine(cfg)
        result = engine.run()
    t1 = time.perf_counter()
    artefacts_write(out, cfg, result, config_yaml)
    from engine.report import report_write

    report_write(out, cfg, result)
    timings = {**result.timings, "artefacts": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    return RunResult(out, result.metrics, timings)


def grid_combos(cfg: RunConfig) -> list[ExitRules | None]:
    """The valid exit rules of ``cfg.grid`` (invalid combinations are reported and skipped)."""
    combos, invalid = cfg.grid.combos(cfg.exit_rules)
    if not combos:
        msg = f"the exit-rule grid yields 0 valid combinations ({len(invalid)} invalid, e.g. {invalid[0]}): fix the grid values"
        raise ConfigError(msg)
    for reason in invalid:
        log.warning("grid combination skipped: %s", reason)
    rules = [ExitRules.model_validate(c) for c in combos]
    return [r if r.active else None for r in rules]


def grid_run(cfg: RunConfig, config_yaml: str = "") -> RunResult:
    """Simulate every exit-rule combination of ``cfg.grid`` in one walk-forward (one vectorbt call
    per window) and write one metrics row per combination under ``combos/NNN/``.

    The first combination's full artefacts go to the run directory itself; every combination gets
    ``metrics.json`` and ``params.json`` (the sweep summary reads them like multirun jobs).
    """
    from engine.artefacts import artefacts_write, metrics_write
    from engine.backtest import BacktestEngine
    from engine.data.lakehouse import atomic_write_json

    out = output_dir(cfg)
    rules = grid_combos(cfg)
    t0 = time.perf_counter()
    with data_errors(cfg.paths.lakehouse_dir):
        engine = BacktestEngine(cfg, rules=rules)
        result = engine.run()
    artefacts_write(out, cfg, result, config_yaml)
    rows = []
    for i, (r, metrics) in enumerate(zip(rules, engine.book_metrics, strict=True)):
        job = out / "combos" / f"{i:03d}"
        job.mkdir(parents=True, exist_ok=True)
        values = (r or ExitRules()).model_dump()
        atomic_write_json(job / "params.json", {f"exit_rules.{k}": json.dumps(v) for k, v in values.items()})
        metrics_write(job / "metrics.json", metrics)
        rows.append(
            {"combo": i, **values, "sharpe": metrics.get("sharpe"), "total_return": metrics.get("total_return")}
        )
    timings = {**result.timings, "total": time.perf_counter() - t0}
    print(f"simulated {len(rules)} exit-rule combinations in one walk-forward ({timings['total']:.1f} s)")
    from engine.sweep import summary_print, sweep_summarize

    try:
        summary_print(sweep_summarize(out / "combos"))
    except EngineError as exc:  # the combinations are written; the summary can be rerun alone
        print(f"sweep summary skipped: {exc} (rerun: python -m engine.sweep {out / 'combos'})", file=sys.stderr)
    return RunResult(out, {"combinations": rows}, timings)


def ingest_run(cfg: RunConfig) -> None:
    """Ingest the daily universe from the configured source into its lakehouse namespace."""
    from engine.data.ingest import ingest_task

    code = ingest_task(cfg)
    if code:
        raise SystemExit(code)


def summary_print(result: RunResult) -> None:
    """The console's closing lines: a short metrics table and the output path."""
    m = result.metrics
    rows = [
        ("total return", m.get("total_return"), "{:+.2%}"),
        ("CAGR", m.get("cagr"), "{:+.2%}"),
        ("Sharpe", m.get("sharpe"), "{:.2f}"),
        ("max drawdown", m.get("max_drawdown"), "{:.2%}"),
        ("orders", m.get("n_orders"), "{}"),
        ("trades", m.get("n_trades"), "{}"),
        ("ambiguous exits", m.get("n_ambiguous_exits"), "{}"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, fmt in rows:
        shown = "n/a" if value is None else fmt.format(value)
        print(f"  {name:<{width}}  {shown}")
    print(f"artefacts: {result.output_dir}")


def params_write(out: Path) -> None:
    """``params.json``: the command-line overrides of this job, keyed by config path (for sweeps)."""
    from hydra.core.hydra_config import HydraConfig

    from engine.data.lakehouse import atomic_write_json

    params: dict[str, str] = {}
    for item in HydraConfig.get().overrides.task:
        key, _, value = item.partition("=")
        params[key.lstrip("+~")] = value
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "params.json", params)


def error_write(message: str) -> None:
    """``error.txt`` in the job's directory: why it failed, for the sweep summary."""
    from hydra.core.hydra_config import HydraConfig

    from engine.data.lakehouse import atomic_write_bytes

    try:
        out = Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "error.txt", (message + "\n").encode())


def task_run(dcfg: Any) -> float | None:
    """The Hydra job: validate, dispatch on ``task``, return the Sharpe ratio for sweepers."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    raw = _plain(dcfg)
    if raw.get("paths", {}).get("output_dir") is None:
        raw.setdefault("paths", {})["output_dir"] = HydraConfig.get().runtime.output_dir
    cfg = config_validate(raw)
    logging.getLogger().setLevel(logging.WARNING)
    params_write(Path(raw["paths"]["output_dir"]))
    if cfg.task == "ingest":
        ingest_run(cfg)
        return None
    if cfg.task == "grid":
        grid_run(cfg, OmegaConf.to_yaml(dcfg, resolve=True))
        return None
    result = run_backtest(cfg, OmegaConf.to_yaml(dcfg, resolve=True))
    summary_print(result)
    sharpe = result.metrics.get("sharpe")
    return float(sharpe) if sharpe is not None else None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _hydra_entry() -> None:
    import hydra

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def entry(dcfg: Any) -> float | None:
        try:
            return task_run(dcfg)
        except EngineError as exc:
            error_write(str(exc))
            if _in_multirun():
                # one bad job must not stop the sweep: the summary lists it with this reason
                print(f"error: job failed: {exc}", file=sys.stderr)
                return None
            fail(str(exc))
        except Exception as exc:
            error_write(f"{exc.__class__.__name__}: {exc}")
            raise
        return None

    entry()


def _tilde_quote(arg: str) -> str:
    """``key=~/dir`` as ``key='~/dir'``: Hydra's grammar rejects a bare ``~`` in a value (the
    config then expands it, like environment variables, in every path setting)."""
    key, sep, value = arg.partition("=")
    if sep and value.startswith("~") and not key.startswith("-") and "'" not in value:
        return f"{key}='{value}'"
    return arg


def main(argv: list[str] | None = None) -> None:
    """Validate every run of the command line, then hand over to Hydra."""
    args = [_tilde_quote(a) for a in (sys.argv[1:] if argv is None else argv)]
    if argv is None:
        sys.argv[1:] = args  # Hydra reads sys.argv
    multirun = any(a in ("-m", "--multirun") for a in args)
    passthrough = any(a.startswith("-") and a not in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if not a.startswith("-")]
    if not passthrough:
        try:
            overrides_validate(overrides, multirun)
        except EngineError as exc:
            fail(str(exc))
    _hydra_entry()
    if multirun:
        from engine import sweep

        if sweep.LAST_SWEEP is not None and sweep.LAST_SWEEP[1]:
            where, failed, total = sweep.LAST_SWEEP
            fail(f"{failed} of {total} sweep jobs failed (reasons in each job's error.txt, summary in {where})", 1)
