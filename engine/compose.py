"""The command line's configuration: Hydra composes ``conf/``, pydantic validates every run first.

Every run's overrides (each combination of a ``-m`` sweep) are composed and validated before
Hydra starts, so a typo or an out-of-range value fails at once with one line and exit code 2,
not with a traceback halfway through a sweep; the folders a run will write are checked too.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import RunConfig, config_validate
from engine.config.exit_rules import grid_combos
from engine.core.errors import ConfigError, first_line
from engine.core.jsontypes import Record
from engine.data.precheck import inputs_precheck
from engine.outputs.rundir import CONFIG_YAML

if TYPE_CHECKING:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Override
    from omegaconf import DictConfig


def _conf_dir() -> Path:
    """Return the Hydra config folder: the repository's top-level conf/, installed as ``engine.conf``."""
    from importlib import resources

    found = resources.files("engine.conf")
    path = Path(str(found))
    if not (path / CONFIG_YAML).is_file():
        msg = f"the engine's config folder is missing ({found}): reinstall quant-engine"
        raise RuntimeError(msg)
    return path


CONF_DIR = _conf_dir()


def plain(cfg: DictConfig) -> Record:
    """Return a composed Hydra config as a plain dict, resolved, without its ``hydra`` node."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    return raw  # type: ignore[return-value]


def _hydra_message(exc: Exception) -> str:
    """One line out of Hydra's (often multi-line) composition errors."""
    text = first_line(exc)
    if "Could not find 'profile/" in text or ("profile" in text and "not found" in text.lower()):
        names = sorted(p.stem for p in (CONF_DIR / "profile").glob("*.yaml"))
        return f"{text.rstrip('.')}: available profiles are {', '.join(names)}"
    group = re.search(r"Could not find '(\w+)/[^']*'", text)
    if group and (CONF_DIR / group.group(1)).is_dir():  # portfolio=foo: the group's options
        names = sorted(p.stem for p in (CONF_DIR / group.group(1)).glob("*.yaml"))
        return f"{text.rstrip('.')}: {group.group(1)} is one of {', '.join(names)}"
    return text


def _parses(parser: OverridesParser, override: str) -> bool:
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


def config_compose(overrides: list[str], validate: bool = True) -> tuple[RunConfig, Record]:
    """Compose ``conf/`` with ``overrides`` through Hydra's compose API and validate it.

    With ``validate=False`` the first item is None (the caller validates variants of the dict).
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        raw = plain(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        unknown = re.search(r"Could not override '([^']+)'", str(exc))
        if unknown and "not in struct" in str(exc.__cause__):
            key = unknown.group(1)
            parent, _, _leaf = key.rpartition(".")
            rest = [o for o in overrides if not o.lstrip("+~").startswith(f"{key}=")]
            node: object = config_compose(rest)[1]
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
        first = first_line(exc)
        msg = f"the overrides {bad!r} cannot be applied ({first}): write key=value with an existing key"
        raise ConfigError(msg) from None
    if not validate:
        return None, raw  # type: ignore[return-value]
    return config_validate(raw), raw


def _is_group(key: str) -> bool:
    """Whether an override key selects a config group (``profile``, ``portfolio``, ``hydra/launcher``)."""
    name = key.lstrip("+~")
    return "@" in name or (CONF_DIR / name.replace(".", "/")).is_dir()


def _raw_with(raw: Record, key: str, value: object) -> Record | None:
    """Return a copy of ``raw`` with ``key`` (dotted) set to ``value``; None when the key is not there."""
    import copy

    out = copy.deepcopy(raw)
    node: object = out
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
    inputs_precheck(cfg)  # a missing markets file, top_n above the universe: before anything is read
    if cfg.task in ("grid", "wfo"):
        grid_combos(cfg)
        if cfg.execution.capacity is not None:
            msg = f"execution.capacity is a curve of task=backtest or task=capacity, not of task={cfg.task}: set execution.capacity=null"
            raise ConfigError(msg)
    if cfg.task == "wfo":
        from engine.run.selection import windows_precheck

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
        text = first_line(exc)
        unknown = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' not in", text)
        if unknown:
            key = unknown.group(1)
            msg = f"unknown Hydra setting '{key}' in {', '.join(repr(h) for h in hydra_overrides)}: see `python -m engine --cfg hydra` for the valid keys"
        else:
            msg = f"invalid Hydra override {', '.join(repr(h) for h in hydra_overrides)}: {_hydra_message(exc)}"
        raise ConfigError(msg) from None


def _sweep_axes(
    plain: list[tuple[Override, str]],
) -> tuple[list[str], list[list[str]], list[tuple[str, list[object], list[str]]]]:
    """Split a sweep's overrides into the fixed ones, the config-group axes and the value axes.

    A group axis (``profile=a,b``, or values that interpolate) is composed once per value; a value
    axis (``ranking.top_n=range(1,100)``) is validated per value on one composition.
    """
    fixed: list[str] = []
    group_axes: list[list[str]] = []
    value_axes: list[tuple[str, list[object], list[str]]] = []
    for o, text in plain:
        if not o.is_sweep_override():
            fixed.append(text)
            continue
        key = o.get_key_element()
        strings = list(o.sweep_string_iterator())
        values: list[object] = list(o.sweep_iterator())
        if _is_group(o.key_or_group) or any(isinstance(v, str) and "${" in v for v in values):
            group_axes.append([f"{key}={v}" for v in strings])
        else:
            value_axes.append((key, values, strings))
    return fixed, group_axes, value_axes


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
    fixed, group_axes, value_axes = _sweep_axes(plain)
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


def _raw_compose(overrides: list[str]) -> Record:
    """Return the composed config of ``overrides`` as a plain dict (errors of composition as one line)."""
    return config_compose(overrides, validate=False)[1]


def output_folder_check(overrides: list[str], multirun: bool) -> None:
    """Check the folders a run will use before Hydra starts.

    The run and output folders must be creatable (no file in their path) and writable, and an
    existing one must be empty or an earlier run's directory. The lakehouse must only not be a
    file: a read-only dataset is read without a write, and a run that would need one names it; a
    lakehouse folder that does not exist yet is created here (the run would create it), or refused
    in one line when it cannot be (a read-only or pseudo file system, another user's folder).
    """
    import os

    from engine.outputs.rundir import run_dir_check

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
        plain_folder = not multirun and "${" not in text and "://" not in text  # a sweep's text is no folder
        if key == "paths.lakehouse_dir" and plain_folder and not path.exists():
            _lakehouse_create(path, text)


def _lakehouse_create(path: Path, text: str) -> None:
    """Create a lakehouse folder that does not exist yet (the run would), or say in one line why it cannot be.

    Before the run's own folder is made: a lakehouse that cannot be created (under a file, a read-only
    or pseudo file system, a folder of another user) is a setting to change, not unreadable data.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        msg = (
            f"the folder {text} (paths.lakehouse_dir) cannot be created ({reason}: {exc.filename or path}): "
            "set paths.lakehouse_dir to a folder you can write"
        )
        raise ConfigError(msg) from None


def tilde_quote(arg: str) -> str:
    """Quote ``key=~/dir`` as ``key='~/dir'``.

    Hydra's grammar rejects a bare ``~`` in a value (the config then expands it, like environment
    variables, in every path setting).
    """
    key, sep, value = arg.partition("=")
    if sep and value.startswith("~") and not key.startswith("-") and "'" not in value:
        return f"{key}='{value}'"
    return arg


@contextlib.contextmanager
def hydra_argv(args: list[str]) -> Iterator[None]:
    """Hand ``args`` to Hydra, whose ``@hydra.main`` parses only ``sys.argv``; restored afterwards."""
    saved = sys.argv[:]
    sys.argv[1:] = args
    try:
        yield
    finally:
        sys.argv[:] = saved


def in_multirun() -> bool:
    """Whether the running Hydra job is one job of a multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_dir_follows(overrides: list[str], multirun: bool) -> list[str]:
    """Return the override that puts Hydra's own run folder into ``paths.output_dir``, if one is due.

    A single run whose ``paths.output_dir`` is set on the command line (and whose ``hydra.run.dir``
    is not) writes Hydra's ``.hydra/`` and ``engine.log`` into its run directory, beside the
    artefacts, and nothing under ``outputs/runs/``: a stray folder there would look like a failed run.
    A sweep's jobs keep their folders under ``hydra.sweep.dir``. A folder another live run holds is
    refused here (:class:`~engine.outputs.rundir.RunDirBusy`), before Hydra writes into it.
    """
    given = {o.split("=", 1)[0].lstrip("+"): o.split("=", 1)[1] for o in overrides if "=" in o}
    text = given.get("paths.output_dir", "null").strip("'\"")
    if multirun or "hydra.run.dir" in given or text in ("null", "None", "") or "${" in text:
        return []
    from engine.config import path_expand
    from engine.outputs.rundir import run_dir_free_check

    out = Path(str(path_expand(text)))  # as the setting reads it: ~ and $VAR expanded
    run_dir_free_check(out)  # Hydra would write into a live run's folder first
    quoted = str(out).replace("'", "\\'")  # a quoted value of Hydra's grammar: ' escaped
    return [f"hydra.run.dir='{quoted}'"]


@dataclass(frozen=True)
class Job:
    """One Hydra job: its validated config and its folders.

    Attributes
    ----------
    cfg : RunConfig
        The validated config, ``paths.output_dir`` filled with Hydra's folder when it was null.
    hydra_dir : Path
        The folder Hydra made for the job (its ``.hydra/`` and ``engine.log``).
    out : Path
        The run directory the artefacts go to.
    key : str
        The setting that names ``out``, for messages.
    ignore : tuple of str
        What Hydra put into ``out`` before the job started (not another program's files).
    """

    cfg: RunConfig
    hydra_dir: Path
    out: Path
    key: str
    ignore: tuple[str, ...]


def job_prepare(dcfg: DictConfig) -> Job:
    """Validate a Hydra job's config and name its folders (the run directory is claimed by the caller)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_dir = Path(HydraConfig.get().runtime.output_dir)
    raw = plain(dcfg)
    own = raw.get("paths", {}).get("output_dir") is None  # the run directory Hydra made for this job
    if own:
        raw.setdefault("paths", {})["output_dir"] = str(hydra_dir)
    cfg = config_validate(raw)
    out = Path(str(cfg.paths.output_dir))  # as validated: ~ and $VAR expanded
    # Hydra wrote .hydra/ and the log into its own run directory before this job started
    shared = out.resolve() == hydra_dir.resolve() and hydra_dir.is_dir()
    ignore = tuple(p.name for p in hydra_dir.iterdir()) if shared else ()
    key = ("hydra.sweep.dir" if in_multirun() else "hydra.run.dir") if own else "paths.output_dir"
    return Job(cfg, hydra_dir, out, key, ignore)


def job_start(job: Job, dcfg: DictConfig) -> str:
    """Make a claimed job's folders ready (:func:`~engine.outputs.rundir.run_dir_prepare`); return its config as YAML."""
    import logging

    from omegaconf import OmegaConf

    from engine.config import ENGINE_VERSION
    from engine.outputs.rundir import run_dir_prepare

    run_dir_prepare(job.hydra_dir, job.out)
    logging.getLogger("engine").info("%s run into %s (engine %s)", job.cfg.task, job.out, ENGINE_VERSION)
    return OmegaConf.to_yaml(dcfg, resolve=True)
