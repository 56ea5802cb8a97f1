"""The folders of engine/ are layers, and imports only go down (or sideways within a layer).

core < config < data < strategy < simulation < run < outputs < tasks < the command line (engine/*.py).
Every import counts, module level and inside functions, so a lazy import cannot hide a way back up;
and no module imports itself back through others (no import cycle among module-level imports).
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"
LAYERS = ("core", "config", "data", "strategy", "simulation", "run", "outputs", "tasks")
TOP = len(LAYERS)  # engine/cli.py, compose.py, __main__.py, sweep.py, testing.py


def _module(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) >= 2 and parts[1] in LAYERS else TOP


def _imports(path: Path, module_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("engine"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from engine.x import module`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("engine"))
    return found


MODULES = {_module(p): p for p in ENGINE.rglob("*.py") if "conf" not in p.relative_to(ENGINE).parts[:1]}


def test_every_module_is_in_a_layer_folder_or_the_command_line() -> None:
    top = sorted(m for m in MODULES if _layer(m) == TOP and m.count(".") > 0)
    assert top == ["engine.__main__", "engine.cli", "engine.compose", "engine.sweep", "engine.testing"]


def test_imports_only_go_down() -> None:
    upward = []
    for module, path in MODULES.items():
        for target in _imports(path):
            if target in MODULES and _layer(target) > _layer(module):
                upward.append(f"{module} imports {target}")
    assert not upward, upward


def test_no_import_cycle() -> None:
    graph = {m: {t for t in _imports(p, module_level_only=True) if t in MODULES and t != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append([*stack[stack.index(t) :], t])
            elif t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # a package's __init__ re-exporting its own submodules is not a cycle of the code
    real = [c for c in cycles if not all(x == c[0] or x.startswith(c[0] + ".") for x in c)]
    assert not real, real


def test_the_checks_see_what_they_must() -> None:
    """The layer map orders the stages, and a lazy import inside a function is seen."""
    assert _layer("engine.core.units") < _layer("engine.config") < _layer("engine.data.bars")
    assert (
        _layer("engine.run.result")
        < _layer("engine.outputs.report")
        < _layer("engine.tasks.wfo")
        < _layer("engine.cli")
    )
    assert "engine.tasks" in _imports(MODULES["engine.cli"])  # imported inside _task only
    assert "engine.tasks" not in _imports(MODULES["engine.cli"], module_level_only=True)


# ---- sizes that fit a head (issue 21, item 7) ---------------------------------------------------

MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 80
MODULE_EXEMPT = {
    "simulation/stops.py": "numba kernel module",
    "simulation/market_nb.py": "numba kernel module",
}
CLASS_GRANDFATHERED: dict[str, int] = {}  # "module.py:Class": the length it is held at until split
FUNCTION_GRANDFATHERED: dict[str, int] = {}  # "module.py:function": the length it is held at until split


def _is_kernel(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A numba kernel: decorated with ``njit``/``jit`` (bare, called or as ``numba.njit``)."""
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in ("njit", "jit"):
            return True
    return False


def _oversized(name: str, source: str) -> list[str]:
    """Every limit ``source`` (the module ``name``, relative to engine/) breaks, one line each."""
    found = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES and name not in MODULE_EXEMPT:
        found.append(f"{name}: {lines} lines > {MAX_MODULE_LINES}")
    for node in ast.walk(ast.parse(source)):
        size = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
        if isinstance(node, ast.ClassDef) and size > CLASS_GRANDFATHERED.get(f"{name}:{node.name}", MAX_CLASS_LINES):
            most = CLASS_GRANDFATHERED.get(f"{name}:{node.name}", MAX_CLASS_LINES)
            found.append(f"{name}: class {node.name} {size} lines > {most}")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not _is_kernel(node):
            most = FUNCTION_GRANDFATHERED.get(f"{name}:{node.name}", MAX_FUNCTION_LINES)
            if size > most:
                found.append(f"{name}: function {node.name} {size} lines > {most}")
    return found


def test_modules_classes_and_functions_fit_a_head() -> None:
    found = [
        msg
        for path in sorted(ENGINE.rglob("*.py"))
        for msg in _oversized(str(path.relative_to(ENGINE)), path.read_text())
    ]
    assert not found, found


def test_the_size_check_sees_what_it_must() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    assert _oversized("run/x.py", f"def f() -> None:\n{body}\n") == ["run/x.py: function f 81 lines > 80"]
    assert _oversized("run/x.py", f"@njit(cache=True)\ndef f() -> None:\n{body}\n") == []
    assert _oversized("run/x.py", f"@numba.njit\ndef f() -> None:\n{body}\n") == []
    methods = "\n".join(f"    def m{i}(self) -> None:\n        pass\n" for i in range(84))
    assert _oversized("run/x.py", f"class C:\n{methods}") == ["run/x.py: class C 252 lines > 250"]
    assert _oversized("run/x.py", "x = 1\n" * 501) == ["run/x.py: 501 lines > 500"]
    assert _oversized("simulation/stops.py", "x = 1\n" * 501) == []
    assert all((ENGINE / name).is_file() for name in MODULE_EXEMPT)  # an exemption names a real module


# ---- typed seams (issue 21, item 6) -------------------------------------------------------------

MAX_ANY = 40


def _any_lines(source: str) -> tuple[int, list[int]]:
    """The ``Any`` NAME tokens of ``source`` (prose in strings and comments is not code) and the lines
    holding one without a ``# Any: why`` comment."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    lines = [t.start[0] for t in tokens if t.type == tokenize.NAME and t.string == "Any"]
    explained = {t.start[0] for t in tokens if t.type == tokenize.COMMENT and t.string.startswith("# Any:")}
    return len(lines), sorted(set(lines) - explained)


def test_any_is_rare_and_explained() -> None:
    total, unexplained = 0, []
    for path in sorted(ENGINE.rglob("*.py")):
        n, bare = _any_lines(path.read_text())
        total += n
        unexplained += [f"{path.relative_to(ENGINE)}:{line}" for line in bare]
    assert total <= MAX_ANY, f"{total} uses of Any in engine/ (at most {MAX_ANY})"
    assert not unexplained, f"Any without a '# Any: why' comment on its line: {unexplained}"


def test_the_any_count_sees_what_it_must() -> None:
    source = (
        'from typing import Any\n"""Any prose."""\n\ndef f(x: Any) -> Any:  # Any: a reason\n    return x  # Any here\n'
    )
    assert _any_lines(source) == (3, [1])
