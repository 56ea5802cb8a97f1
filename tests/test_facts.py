"""One definition per fact: each fact of the engine is written once and used from there.

Time units and date conversions live in ``engine.core.units``; exit kinds in
``engine.simulation.stops.EXIT_KIND_NAMES``; the file names of a run directory in
``engine.outputs.rundir``; closed sets of the configuration in ``engine.core.choices``; the
best-index rule in ``engine.core.best``; "first line of an exception" in
``engine.core.errors.first_line``; renamed settings go through ``engine.config.renamed``.
The source checks read the code (string constants, not docstrings), so a new copy fails here.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from engine.config import RunConfig
from engine.config.renamed import setting_renamed, warned
from engine.core.best import best_index, best_indices, rank_key
from engine.core.choices import OBJECTIVES, VBT_ENGINES, Objective, VbtEngine
from engine.core.errors import first_line
from engine.core.units import DAY_MS, date_ms, ms_date, ms_iso
from engine.outputs import rundir
from engine.outputs.report import EXIT_LABELS
from engine.run.trades import STOP_KINDS, TRADE_KINDS
from engine.simulation.stops import EXIT_KIND_NAMES, ORDER_REASONS

ENGINE = Path(__file__).resolve().parent.parent / "engine"
SOURCES = {p.relative_to(ENGINE).as_posix(): p.read_text() for p in ENGINE.rglob("*.py")}


def _code_strings(text: str) -> list[str]:
    """Every string constant of a module's code, its docstrings left out."""
    tree = ast.parse(text)
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    # attribute docstrings (a string statement after an assignment) are documentation too
    docs |= {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


def _grep(pattern: str, allowed: set[str]) -> list[str]:
    rx = re.compile(pattern)
    return [
        f"{name}:{i}: {line.strip()}"
        for name, text in SOURCES.items()
        if name not in allowed
        for i, line in enumerate(text.splitlines(), 1)
        if rx.search(line)
    ]


# ---- time units --------------------------------------------------------------------------------


def test_dates_and_epoch_milliseconds_convert_in_units_only() -> None:
    assert date_ms("2024-03-01") == date_ms(np.datetime64("2024-03-01").astype(object)) == 1_709_251_200_000
    assert date_ms("2024-03-02") - date_ms("2024-03-01") == DAY_MS
    assert str(ms_date(1_709_251_200_000 + DAY_MS - 1)) == "2024-03-01"
    assert ms_iso(1_709_251_200_000) == "2024-03-01T00:00:00+00:00"
    copies = _grep(r"timestamp\(\)\s*\*\s*1000|fromtimestamp\(|/ 1000\b|= 86_?400_?000\b", {"core/units.py"})
    assert not copies, copies


def test_durations_have_one_parser() -> None:
    copies = _grep(r"re\.compile\(r\"\^\(\[1-9\]", {"core/units.py"})
    assert not copies, copies
    assert not _grep(r"^def duration_to_ns|^def _?date_ms|^def ms_date|^def ms_iso", {"core/units.py"})


# ---- exit kinds --------------------------------------------------------------------------------


def test_exit_kinds_are_one_list() -> None:
    names = tuple(EXIT_KIND_NAMES[k] for k in sorted(EXIT_KIND_NAMES))
    assert names == STOP_KINDS
    assert ORDER_REASONS[1 : 1 + len(names)] == names
    assert (*ORDER_REASONS, "end") == TRADE_KINDS
    assert set(EXIT_LABELS) == set(TRADE_KINDS)  # the report labels every kind, and no other
    # the report labels them; the setting exit_rules.max_holding shares its kind's name
    allowed = {
        "simulation/stops.py",
        "outputs/report_format.py",
        "outputs/report_wfo.py",
        "config/model.py",
        "config/grid.py",
        "config/exit_rules.py",
    }
    copies = [
        f"{name}: {s!r}"
        for name, text in SOURCES.items()
        if name not in allowed
        for s in _code_strings(text)
        if s in names
    ]
    assert not copies, copies


# ---- artefact names ----------------------------------------------------------------------------


def test_run_directory_file_names_are_named_in_rundir_only() -> None:
    names = {rundir.ERROR, rundir.COMPLETE, rundir.MARKER} | set(rundir.ARTEFACTS)
    assert {"metrics.json", "params.json", "trades.parquet", "wfo.parquet", "report.html"} <= names
    copies = [
        f"{name}: {s!r}"
        for name, text in SOURCES.items()
        if name != "outputs/rundir.py"
        for s in _code_strings(text)
        if s in names
    ]
    assert not copies, copies


# ---- closed sets -------------------------------------------------------------------------------


def test_closed_sets_are_literal_types_defined_once() -> None:
    assert OBJECTIVES == get_args(Objective) == ("sharpe", "sortino", "calmar", "total_return")
    assert VBT_ENGINES == get_args(VbtEngine) == ("rust", "numba")
    fields = RunConfig.model_fields
    wfo = fields["wfo"].annotation
    backtest = fields["backtest"].annotation
    assert wfo is not None and backtest is not None
    assert wfo.model_fields["objective"].annotation == Objective
    assert backtest.model_fields["vbt_engine"].annotation == VbtEngine
    copies = _grep(
        r'Literal\[\s*"(sharpe|rust|error)"|= \("sharpe", "sortino"|= \("rust", "numba"\)', {"core/choices.py"}
    )
    assert not copies, copies


# ---- the best-index rule -----------------------------------------------------------------------


def test_best_index_rule() -> None:
    nan, inf = np.nan, np.inf
    assert best_index([nan, -5.0, nan]) == 1  # undefined ranks last
    assert best_index([1.0, 2.0, 2.0]) == 1  # ties go to the lowest index
    assert best_index([nan, nan]) == 0  # all undefined: the first
    assert best_index([3.0, inf, 5.0]) == 1  # +inf (a gain without a drawdown) is the highest value
    assert best_index([inf, inf]) == 0
    assert best_index([-inf, nan, -1.0]) == 2  # -inf ranks last, with the undefined
    assert best_index([-inf, nan]) == 0
    m = np.array([[nan, 1.0, inf], [2.0, 2.0, nan], [nan, nan, nan]])
    assert best_indices(m, axis=1).tolist() == [2, 0, 0]
    assert rank_key([nan, inf]).tolist() == [-inf, inf]


def test_best_index_has_one_definition() -> None:
    copies = _grep(r"argmax\(.*(isnan|isfinite|-np\.inf)|nanargmax", {"core/best.py"})
    assert not copies, copies


def test_walk_forward_and_cpcv_choose_by_the_same_rule() -> None:
    from engine.run.selection import objective_columns, wfo_choices
    from engine.run.validation import cpcv, cpcv_oos_sharpe

    # column 1 gains without a drawdown: its Calmar ratio is +inf, the best by the rule
    r = np.array([[0.01, 0.02, -0.01], [-0.01, 0.01, 0.02], [-0.02, 0.01, 0.01], [0.01, 0.02, 0.0]])
    assert objective_columns(r[:2], "calmar")[1] == np.inf
    assert wfo_choices(r, 2, objective="calmar").choices[2] == 1
    cv = cpcv(4, 2, 1)
    result = cpcv_oos_sharpe(r, cv, objective=lambda x: objective_columns(x, "calmar"))
    for s, (train, _test) in enumerate(cv.splits):
        assert result.chosen[s] == best_index(objective_columns(r[train], "calmar"))


# ---- first line of an exception ----------------------------------------------------------------


def test_first_line_of_an_exception() -> None:
    assert first_line(ValueError("  bad value\nmore\n")) == "bad value"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError("")) == "OSError"
    copies = _grep(r"\bstr\(\w+\)[^\n]*\.splitlines\(\)|splitlines\(\) or \[", {"core/errors.py"})
    assert not copies, copies


# ---- renamed settings --------------------------------------------------------------------------


def test_renamed_settings_go_through_one_helper() -> None:
    days = setting_renamed({"hold": "7d", "hold_days": 3}, "hold_days", "hold", lambda d: f"{d}d", keep=True)
    assert days == {"hold": "3d", "hold_days": 3}  # the alias wins over the group's default, and stays
    assert setting_renamed({"hold_days": 0}, "hold_days", "hold", lambda d: None) == {"hold_days": 0}
    assert setting_renamed("not a dict", "a", "b") == "not a dict"
    with pytest.raises(ValueError, match="set b only"):
        setting_renamed({"a": 1, "b": 2}, "a", "b", conflict="set b only")
    warned.discard("a is deprecated: use b")
    logger = logging.getLogger("engine")
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    level = logger.level  # an earlier run in this worker may have quieted the engine's logger
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        for _ in range(2):
            assert setting_renamed({"a": 1}, "a", "b", warning="a is deprecated: use b") == {"a": None, "b": 1}
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen.count("a is deprecated: use b") == 1  # once per process
    assert RunConfig.model_validate({"backtest": {"hold_days": 14}}).backtest.hold == "14d"
    assert not _grep(r"_warned|def _warn_once", {"config/renamed.py"})


# ---- broad exception handlers ------------------------------------------------------------------


def test_no_broad_except_swallows_an_error() -> None:
    """Every ``except Exception`` re-raises, logs the traceback, or says in a comment why it is broad."""
    quiet = []
    for name, text in SOURCES.items():
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not (isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Name)):
                continue
            if node.type.id not in ("Exception", "BaseException"):
                continue
            body = [n for stmt in node.body for n in ast.walk(stmt)]
            raises = any(isinstance(n, ast.Raise) for n in body)
            logs = any(isinstance(n, ast.Attribute) and n.attr == "exception" for n in body)
            said = "#" in lines[node.lineno - 1]
            if not (raises or logs or said):
                quiet.append(f"{name}:{node.lineno}")
    assert not quiet, quiet
