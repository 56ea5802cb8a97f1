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
import math
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import ENGINE_VERSION, RunConfig, config_validate
from engine.errors import ConfigError, DataError, EngineError
from engine.exit_rules import ExitRules

log = logging.getLogger("engine")


def _conf_dir() -> Path:
    """Return the Hydra config folder: the repository's top-level conf/, installed as ``engine.conf``."""
    from importlib import resources

    found = resources.files("engine.conf")
    path = Path(str(found))
    if not (path / "config.yaml").is_file():
        msg = f"the engine's config folder is missing ({found}): reinstall quant-engine"
        raise RuntimeError(msg)
    return path


CONF_DIR = _conf_dir()


@dataclass
class RunResult:
    """What ``run_backtest`` returns: where the artefacts are and the headline metrics."""

    output_dir: Path
    metrics: dict[str, Any]
    timings: dict[str, float]


def fail(message: str, code: int = 2) -> None:
    """Print a one-line user error (secrets redacted) and exit without a traceback."""
    from engine.rundir import redact

    line = " ".join(redact(message).split("\n"))
    print(f"error: {line}", file=sys.stderr)
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
    for o, text in zip(parsed, overrides, strict=True):
        key = o.get_key_element()
        if not o.key_or_group.strip():
            msg = f"malformed override {text!r}: the key before '=' is missing: write key=value, e.g. exit_rules.sl_stop=0.1"
            raise ConfigError(msg)
        if o.key_or_group.startswith("hydra"):
            continue
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
            if not values:
                msg = f"sweep {key} has an empty value list: give at least one value, e.g. {key}=0.05,0.1"
                raise ConfigError(msg)
            axes.append([f"{key}={v}" for v in values])
        else:
            assert o.input_line is not None  # the parser keeps every override's text
            axes.append([o.input_line])
    return [list(c) for c in itertools.product(*axes)]


def config_compose(overrides: list[str], validate: bool = True) -> tuple[RunConfig, dict[str, Any]]:
    """Compose ``conf/`` with ``overrides`` through Hydra's compose API and validate it.

    With ``validate=False`` the first item is None (the caller validates variants of the dict).
    """
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
            inner = node.get(_leaf) if isinstance(node, dict) else None
            if isinstance(inner, dict):  # a mapping override ({foo: 1}) with a key the mapping lacks
                given = next((o.partition("=")[2] for o in overrides if o.lstrip("+~").startswith(f"{key}=")), "?")
                msg = f"invalid config value {key}={given}: unknown key in it; valid keys in {key} are {', '.join(sorted(inner))}"
            raise ConfigError(msg) from None
        raise ConfigError(_hydra_message(exc)) from None
    except (ValueError, TypeError, OverflowError) as exc:
        bad = " ".join(overrides)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        msg = f"the overrides {bad!r} cannot be applied ({first}): write key=value with an existing key"
        raise ConfigError(msg) from None
    if not validate:
        return None, raw  # type: ignore[return-value]
    return config_validate(raw), raw


def _is_group(key: str) -> bool:
    """Whether an override key selects a config group (``profile``, ``portfolio``, ``hydra/launcher``)."""
    name = key.lstrip("+~")
    return "@" in name or (CONF_DIR / name.replace(".", "/")).is_dir()


def _raw_with(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any] | None:
    """Return a copy of ``raw`` with ``key`` (dotted) set to ``value``; None when the key is not there."""
    import copy

    out = copy.deepcopy(raw)
    node: Any = out
    *parents, leaf = key.split(".")
    for part in parents:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if not isinstance(node, dict) or leaf not in node:
        return None
    node[leaf] = value
    return out


def _config_check(cfg: RunConfig) -> None:
    """Check beyond the model's checks: the grid's combinations, a walk-forward optimisation's windows."""
    if cfg.task in ("grid", "wfo"):
        grid_combos(cfg)
    if cfg.task == "wfo":
        from engine.wfo import windows_precheck

        windows_precheck(cfg)


def hydra_overrides_validate(overrides: list[str], hydra_overrides: list[str]) -> None:
    """Compose once with Hydra's own config so a typo in a ``hydra.*`` override is one line too."""
    if not hydra_overrides:
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name="config", overrides=[*overrides, *hydra_overrides], return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError, TypeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        unknown = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' not in", text)
        if unknown:
            key = unknown.group(1)
            msg = f"unknown Hydra setting '{key}' in {', '.join(repr(h) for h in hydra_overrides)}: see `python -m engine --cfg hydra` for the valid keys"
        else:
            msg = f"invalid Hydra override {', '.join(repr(h) for h in hydra_overrides)}: {_hydra_message(exc)}"
        raise ConfigError(msg) from None


def overrides_validate(overrides: list[str], multirun: bool) -> int:
    """Compose and validate every run the command line describes; returns how many checks passed.

    A single run is composed and validated as is. A sweep is composed once per combination of its
    config-group axes (``profile=a,b``, ``portfolio=equal,inverse_vol``); every distinct value of a
    value axis (``ranking.top_n=range(1,100)``) is then validated once on that composition, which
    costs a pydantic validation, not a Hydra compose. A combination that is invalid only through two
    axes together fails as its own job, with one line in its error.txt.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides_expand(overrides)  # parse errors, empty keys and empty sweeps as one line
    parsed = OverridesParser.create().parse_overrides(overrides)
    hydra_ov = [t for o, t in zip(parsed, overrides, strict=True) if o.key_or_group.startswith("hydra")]
    plain = [(o, t) for o, t in zip(parsed, overrides, strict=True) if not o.key_or_group.startswith("hydra")]
    if not multirun:
        combo = [t for _, t in plain]
        cfg, _ = config_compose(combo)
        _config_check(cfg)
        hydra_overrides_validate(combo, hydra_ov)
        return 1
    fixed: list[str] = []
    group_axes: list[list[str]] = []
    value_axes: list[tuple[str, list[Any], list[str]]] = []
    for o, text in plain:
        if not o.is_sweep_override():
            fixed.append(text)
            continue
        key = o.get_key_element()
        strings = list(o.sweep_string_iterator())
        values = list(o.sweep_iterator())
        if _is_group(o.key_or_group) or any(isinstance(v, str) and "${" in v for v in values):
            group_axes.append([f"{key}={v}" for v in strings])
        else:
            value_axes.append((key, values, strings))
    n_values = sum(len(v) for _, v, _ in value_axes)
    n_groups = math.prod(len(a) for a in group_axes)
    if n_values * n_groups > 1000:
        keys = ", ".join(k for k, _, _ in value_axes)
        print(f"validating {n_values * n_groups} swept values of {keys} before the sweep starts", file=sys.stderr)
    errors: list[str] = []
    checks = 0
    first_ok: list[str] | None = None
    for groups in itertools.product(*group_axes):
        base = [*fixed, *groups]
        if not value_axes:
            checks += 1
            try:
                cfg, _ = config_compose(base)
                _config_check(cfg)
                first_ok = first_ok or base
            except ConfigError as exc:
                errors.append(str(exc))
            continue
        try:
            raw = _raw_compose(base)
        except ConfigError as exc:
            checks += n_values
            errors.extend([str(exc)] * n_values)
            continue
        for key, values, strings in value_axes:
            for value, text in zip(values, strings, strict=True):
                checks += 1
                try:
                    changed = _raw_with(raw, key.lstrip("+"), value)
                    if changed is None:  # a key the base config lacks: Hydra says what is wrong
                        cfg, _ = config_compose([*base, f"{key}={text}"])
                    else:
                        cfg = config_validate(changed)
                    _config_check(cfg)
                    first_ok = first_ok or [*base, f"{key}={text}"]
                except ConfigError as exc:
                    errors.append(str(exc))
    if errors and len(errors) == checks:
        msg = f"all {checks} sweep values checked are invalid, e.g. {errors[0]}"
        raise ConfigError(msg)
    if errors:
        msg = f"{len(errors)} of {checks} sweep values checked are invalid, e.g. {errors[0]}: fix or drop those values"
        raise ConfigError(msg)
    hydra_overrides_validate(first_ok or fixed, hydra_ov)
    return checks


def _raw_compose(overrides: list[str]) -> dict[str, Any]:
    """Return the composed config of ``overrides`` as a plain dict (errors of composition as one line)."""
    return config_compose(overrides, validate=False)[1]


def _output_folder_check(overrides: list[str], multirun: bool) -> None:
    """Check the folders a run will use before Hydra starts.

    The run and output folders must be creatable (no file in their path) and writable, and an
    existing one must be empty or an earlier run's directory. The lakehouse must only not be a
    file: a read-only dataset is read without a write, and a run that would need one names it.
    """
    import os

    from engine.rundir import run_dir_check

    given = {o.split("=", 1)[0].lstrip("+"): o.split("=", 1)[1] for o in overrides if "=" in o}
    hydra_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    checks = [(hydra_key, given.get(hydra_key, "outputs/sweeps/" if multirun else "outputs/runs/"))]
    if given.get("paths.output_dir", "null") not in ("null", "None", ""):
        checks.append(("paths.output_dir", given["paths.output_dir"]))
    if given.get("paths.lakehouse_dir"):
        checks.append(("paths.lakehouse_dir", given["paths.lakehouse_dir"]))
    for key, text in checks:
        if key in ("paths.output_dir", "hydra.run.dir") and key in given and "${" not in text:
            run_dir_check(Path(text).expanduser(), key)  # a sweep's folder holds job folders, not a run
        prefix = text.split("${")[0]
        if "${" in text and not prefix.endswith("/"):
            prefix = os.path.dirname(prefix)
        path = Path(prefix or ".").expanduser()
        for candidate in [path, *path.parents]:
            if not candidate.exists():
                continue
            where = candidate.resolve()
            if not candidate.is_dir():
                msg = f"the folder {text} ({key}) cannot be created: {where} is a file, not a folder: set {key} to another folder"
                raise ConfigError(msg)
            if key != "paths.lakehouse_dir" and not os.access(candidate, os.W_OK | os.X_OK):
                msg = f"the folder {text} ({key}) cannot be written: permission denied on the folder {where}: run from a writable folder or set {key} to one"
                raise ConfigError(msg)
            break


def _data_fix(source: str) -> str:
    """Return what to do about an unreadable file of the lakehouse, by data source."""
    if source == "synthetic":
        return "delete the file it names and rerun (the run regenerates it)"
    if source == "ccxt":
        return "delete the file it names and rerun `python -m engine task=ingest data=ccxt ...` to refetch it"
    return "delete the file it names and rerun `python -m engine task=ingest data=files ...` to re-import it from your files"


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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if "Permission denied" in first:
            msg = (
                f"permission denied reading the lakehouse {lakehouse} ({first}): the user running the engine "
                "needs read and write access to it (fix its owner or mode) or set paths.lakehouse_dir to a folder you own"
            )
        else:
            msg = f"unreadable data in the lakehouse {lakehouse} ({first}): {_data_fix(source)}"
        from engine.data.storage import redact as storage_redact  # no AWS key or secret in a message

        raise DataError(storage_redact(msg)) from None


@contextlib.contextmanager
def artefact_errors(out: Path) -> Iterator[None]:
    """Report a run directory that cannot be written as one line, not a traceback."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or out
        msg = f"cannot write the run's artefacts into {out}: {exc.strerror or exc} ({where}): choose a writable output folder"
        raise EngineError(msg) from None


def output_dir(cfg: RunConfig) -> Path:
    """Return the run's artefact directory (set by Hydra, or by the caller of the plain functions)."""
    if cfg.paths.output_dir is None:
        msg = "paths.output_dir is not set: pass paths.output_dir=DIR or run through `python -m engine`"
        raise ConfigError(msg)
    return Path(cfg.paths.output_dir)


def run_backtest(cfg: RunConfig, config_yaml: str = "") -> RunResult:
    """Run a walk-forward backtest and write its artefacts into ``cfg.paths.output_dir`` (claimed first)."""
    from engine.rundir import run_dir_claim

    out = output_dir(cfg)
    with contextlib.ExitStack() as claim:
        with artefact_errors(out):
            claim.enter_context(run_dir_claim(out))
        return _backtest(cfg, out, config_yaml)


def _backtest(cfg: RunConfig, out: Path, config_yaml: str) -> RunResult:
    from engine.artefacts import artefacts_write
    from engine.run import backtest_run
    from engine.rundir import ARTEFACTS, run_complete, run_dir_reset

    with artefact_errors(out):
        run_dir_reset(out, keep=("params.json",))
    t0 = time.perf_counter()
    log.info("backtest: %s data, %s, lakehouse %s", cfg.data.source, cfg.ranking.weights, cfg.paths.lakehouse_dir)
    with data_errors(cfg.paths.lakehouse_dir, cfg.data.source):
        result = backtest_run(cfg).result
        assert result is not None
    t1 = time.perf_counter()
    for stage, seconds in result.timings.items():
        log.info("stage %s: %.2f s", stage, seconds)
    from engine.report import report_write

    with artefact_errors(out):
        artefacts_write(out, cfg, result, config_yaml)
        report_write(out, cfg, result)
        run_complete(out, [n for n in ARTEFACTS if (out / n).is_file()])
    timings = {**result.timings, "artefacts": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    log.info("artefacts written to %s in %.2f s; total %.2f s", out, timings["artefacts"], timings["total"])
    return RunResult(out, result.metrics, timings)


def grid_combos(cfg: RunConfig) -> list[ExitRules | None]:
    """Return the valid exit rules of ``cfg.grid`` (invalid combinations are reported and skipped)."""
    combos, invalid = cfg.grid.combos(cfg.exit_rules)
    if not combos:
        msg = f"the exit-rule grid yields 0 valid combinations ({len(invalid)} invalid, e.g. {invalid[0]}): fix the grid values"
        raise ConfigError(msg)
    for reason in invalid:
        log.warning("grid combination skipped: %s", reason)
    rules = [ExitRules.model_validate(c) for c in combos]
    return [r if r.active else None for r in rules]


def grid_run(cfg: RunConfig, config_yaml: str = "") -> RunResult:
    """Simulate every exit-rule combination of ``cfg.grid`` in one walk-forward.

    One vectorbt call per window; one metrics row per combination is written under
    ``combos/NNN/``.

    The first combination's full artefacts go to the run directory itself; every combination gets
    ``metrics.json`` and ``params.json`` (the sweep summary reads them like multirun jobs).
    """
    from engine.rundir import run_dir_claim

    out = output_dir(cfg)
    rules = grid_combos(cfg)
    with contextlib.ExitStack() as claim:
        with artefact_errors(out):
            claim.enter_context(run_dir_claim(out))
        return _grid(cfg, out, rules, config_yaml)


def _grid(cfg: RunConfig, out: Path, rules: list[ExitRules | None], config_yaml: str) -> RunResult:
    from engine.artefacts import artefacts_write, metrics_write
    from engine.run import backtest_run
    from engine.rundir import ARTEFACTS, json_write, run_complete, run_dir_reset

    with artefact_errors(out):
        run_dir_reset(out, keep=("params.json",))
    t0 = time.perf_counter()
    log.info("grid: %d exit-rule combinations in one walk-forward", len(rules))
    with data_errors(cfg.paths.lakehouse_dir, cfg.data.source):
        books = backtest_run(cfg, rules)
        result = books.result
        assert result is not None
    for stage, seconds in result.timings.items():
        log.info("stage %s: %.2f s", stage, seconds)
    rows = []
    # the run directory's own artefacts are the first combination's: say so where they are read
    result.metrics = {**result.metrics}  # a copy: combos/000 keeps its own metrics as they are
    result.metrics["grid_combination"] = {
        "combo": 0,
        "exit_rules": None if rules[0] is None else rules[0].model_dump(),
        "note": "metrics, equity, orders and trades here are combination 000's; every combination's metrics "
        "are in combos/NNN/metrics.json, ranked in combos/leaderboard.md",
    }
    with artefact_errors(out):
        artefacts_write(out, cfg, result, config_yaml)
        for i, (r, metrics) in enumerate(zip(rules, books.book_metrics, strict=True)):
            job = out / "combos" / f"{i:03d}"
            job.mkdir(parents=True, exist_ok=True)
            values = (r or ExitRules()).model_dump()
            json_write(job / "params.json", {f"exit_rules.{k}": json.dumps(v) for k, v in values.items()})
            metrics_write(job / "metrics.json", metrics)
            rows.append(
                {"combo": i, **values, "sharpe": metrics.get("sharpe"), "total_return": metrics.get("total_return")}
            )
        run_complete(out, [n for n in ARTEFACTS if (out / n).is_file()])
    timings = {**result.timings, "total": time.perf_counter() - t0}
    from engine.ledger import ledger_record_grid

    ledger_record_grid(cfg, out, rules, books.book_metrics)  # the trial ledger (paths.ledger); failures warn
    from engine.report import data_label

    print(f"data: {data_label(cfg)}")
    print(f"simulated {len(rules)} exit-rule combinations in one walk-forward ({timings['total']:.1f} s)")
    print(f"the run directory's own artefacts are combination 000's; all {len(rules)} are ranked below")
    from engine.sweep import summary_print, sweep_summarize

    try:
        summary_print(sweep_summarize(out / "combos"))
    except EngineError as exc:  # the combinations are written; the summary can be rerun alone
        print(f"sweep summary skipped: {exc} (rerun: python -m engine.sweep {out / 'combos'})", file=sys.stderr)
    return RunResult(out, {"combinations": rows}, timings)


def ingest_run(cfg: RunConfig) -> None:
    """Ingest the daily universe from the configured source into its lakehouse namespace."""
    from engine.data.ingest import ingest_task

    with data_errors(cfg.paths.lakehouse_dir, cfg.data.source):
        code = ingest_task(cfg)
    if code:
        raise SystemExit(code)


def summary_print(result: RunResult, cfg: RunConfig) -> None:
    """Print the console's closing lines: the data source, a short metrics table and the output path."""
    from engine.report import data_label

    m = result.metrics
    print(f"data: {data_label(cfg)}")
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
    days = _span_days(m)
    for name, value, fmt in rows:
        shown = "n/a" if value is None else fmt.format(value)
        if name == "CAGR" and value is not None and days is not None and days < 365:
            shown += f"  (extrapolated from {days:.0f} days)"
        if name == "ambiguous exits" and m.get("total_return_optimistic") is not None:
            # the bound metrics.json holds: the same exits taken take-profit first
            shown += f"  (optimistic bound, TP first: total return {m['total_return_optimistic']:+.2%})"
        print(f"  {name:<{width}}  {shown}")
    print(f"artefacts: {result.output_dir}")


def _span_days(m: dict[str, Any]) -> float | None:
    """Return the calendar days from a run's start to its end (metrics.json's ISO times), or None."""
    from datetime import datetime

    try:
        return (
            datetime.fromisoformat(str(m["end"])) - datetime.fromisoformat(str(m["start"]))
        ).total_seconds() / 86_400
    except (KeyError, ValueError):
        return None


def params_write(out: Path) -> None:
    """``params.json``: the command-line overrides of this job, keyed by config path (for sweeps)."""
    from hydra.core.hydra_config import HydraConfig

    from engine.rundir import json_write

    params: dict[str, str] = {}
    for item in HydraConfig.get().overrides.task:
        key, _, value = item.partition("=")
        params[key.lstrip("+~")] = value
    out.mkdir(parents=True, exist_ok=True)
    json_write(out / "params.json", params)


def error_message(exc: BaseException) -> str:
    """Return what ``error.txt`` says about ``exc``: a user error's line, else its class and text."""
    return str(exc) if isinstance(exc, EngineError) else f"{exc.__class__.__name__}: {exc}"


def error_write(message: str, out: Path | None = None, log_it: bool = True) -> None:
    """``error.txt`` in ``out`` (default: the job's Hydra directory): why it failed (secrets redacted).

    The sweep summary reads it. Best effort: when the directory itself cannot be written, the error
    on stderr is what is left, and this write must not replace it with its own.
    """
    from hydra.core.hydra_config import HydraConfig

    from engine.data.lakehouse import atomic_write_bytes
    from engine.rundir import ERROR, log_redaction_install, redact

    if out is None:
        try:
            out = Path(HydraConfig.get().runtime.output_dir)
        except ValueError:
            return
    log_redaction_install()  # the run may have failed before logging_setup
    # into engine.log only (its handler redacts it): the console already gets the one-line error
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers if log_it else []:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / ERROR, (redact(message) + "\n").encode())
    except OSError:
        pass


def logging_setup() -> None:
    """Send INFO and up to the run's ``engine.log`` (Hydra's file handler), only warnings to the console.

    Every handler redacts what it writes (:class:`engine.rundir.RedactFilter`): no secret of a URL
    reaches a log, whichever call site logged it.
    """
    from engine.rundir import log_redaction_install

    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in root.handlers:
        handler.setLevel(logging.INFO if isinstance(handler, logging.FileHandler) else logging.WARNING)
    for noisy in ("numba", "urllib3", "choreographer", "kaleido", "asyncio", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    log_redaction_install(root)


def task_run(dcfg: Any) -> float | None:
    """Run the Hydra job: validate, dispatch on ``task``, return the Sharpe ratio for sweepers."""
    from hydra.core.hydra_config import HydraConfig

    from engine.rundir import run_dir_claim

    hydra_dir = Path(HydraConfig.get().runtime.output_dir)
    raw = _plain(dcfg)
    own = raw.get("paths", {}).get("output_dir") is None  # the run directory Hydra made for this job
    if own:
        raw.setdefault("paths", {})["output_dir"] = str(hydra_dir)
    cfg = config_validate(raw)
    out = Path(raw["paths"]["output_dir"])
    # Hydra wrote .hydra/ and the log into its own run directory before this job started
    ignore = tuple(p.name for p in hydra_dir.iterdir()) if own and hydra_dir.is_dir() else ()
    key = ("hydra.sweep.dir" if _in_multirun() else "hydra.run.dir") if own else "paths.output_dir"
    with contextlib.ExitStack() as claim:
        with artefact_errors(out):
            claim.enter_context(run_dir_claim(out, key, ignore))
        try:
            return _task(dcfg, cfg, hydra_dir, out)
        except Exception as exc:
            if out.resolve() != hydra_dir.resolve():  # the job's Hydra directory gets it from the entry point
                error_write(error_message(exc), out, log_it=False)
            raise


def _task(dcfg: Any, cfg: RunConfig, hydra_dir: Path, out: Path) -> float | None:
    from omegaconf import OmegaConf

    from engine.rundir import ARTEFACTS, hydra_files_redact, run_complete, run_dir_reset

    with artefact_errors(out):
        hydra_files_redact(hydra_dir)
        for folder in {hydra_dir, out}:
            run_dir_reset(folder)
        logging_setup()
        params_write(out)
    log.info("%s run into %s (engine %s)", cfg.task, out, ENGINE_VERSION)
    if cfg.task == "ingest":
        ingest_run(cfg)
        with artefact_errors(out):
            run_complete(out, [n for n in ARTEFACTS if (out / n).is_file()])
        return None
    if cfg.task == "grid":
        grid_run(cfg, OmegaConf.to_yaml(dcfg, resolve=True))
        return None
    if cfg.task == "wfo":  # walk-forward optimisation over the grid (engine/wfo.py)
        from engine.wfo import wfo_run

        summary_print(wfo_run(cfg, OmegaConf.to_yaml(dcfg, resolve=True)), cfg)
        return None
    result = run_backtest(cfg, OmegaConf.to_yaml(dcfg, resolve=True))
    from engine.ledger import ledger_record_run

    ledger_record_run(cfg, result.output_dir, "sweep_job" if _in_multirun() else "run")  # failures warn
    summary_print(result, cfg)
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
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def entry(dcfg: Any) -> float | None:
        from engine.rundir import RunDirBusy

        try:
            return task_run(dcfg)
        except EngineError as exc:
            # a folder another live run holds is not this run's to write into, not even error.txt
            if not isinstance(exc, RunDirBusy) or Path(HydraConfig.get().runtime.output_dir).resolve() != exc.folder:
                error_write(str(exc))
            if _in_multirun():
                # one bad job must not stop the sweep: the summary lists it with this reason
                from engine.rundir import redact

                print(f"error: job failed: {redact(str(exc))}", file=sys.stderr)
                return None
            fail(str(exc), getattr(exc, "exit_code", 2))
        except Exception as exc:
            error_write(error_message(exc))
            raise
        return None

    entry()


def _tilde_quote(arg: str) -> str:
    """Quote ``key=~/dir`` as ``key='~/dir'``.

    Hydra's grammar rejects a bare ``~`` in a value (the config then expands it, like environment
    variables, in every path setting).
    """
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
    # -m/--multirun and -r/--run take no value: every other flag (--cfg job, --info, -c, ...) is
    # Hydra's own and the arguments after it are not all overrides, so Hydra handles those alone
    passthrough = any(a.startswith("-") and a not in ("-m", "--multirun", "-r", "--run") for a in args)
    overrides = [a for a in args if not a.startswith("-")]
    if not passthrough:
        try:
            overrides_validate(overrides, multirun)
            _output_folder_check(overrides, multirun)
        except EngineError as exc:
            fail(str(exc))
    _hydra_entry()
    if multirun:
        from engine import sweep

        if sweep.LAST_SWEEP is not None and sweep.LAST_SWEEP[1]:
            where, failed, total = sweep.LAST_SWEEP
            fail(f"{failed} of {total} sweep jobs failed (reasons in each job's error.txt, summary in {where})", 1)
