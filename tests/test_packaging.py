"""The built wheel carries conf/ and sql/ and runs a backtest from an unrelated folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = [
    "+profile=crypto_rating",
    "data.n_symbols=30",
    "data.start=2021-01-01",
    "data.end=2021-12-31",
    "ranking.top_n=5",
    "quiet=true",
]


def test_every_engine_package_is_listed_in_pyproject() -> None:
    """pyproject lists the packages by hand (conf/ and sql/ are mapped into engine.*): none is forgotten."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for top in ("engine", "benchmarks")
        for p in (REPO / top).rglob("__init__.py")
    }
    assert found <= listed
    assert {"engine.conf", "engine.queries"} <= listed


def test_conf_and_sql_are_found_through_the_package() -> None:
    from importlib import resources

    from engine.compose import CONF_DIR
    from engine.data.sql import sql_load

    assert (CONF_DIR / "config.yaml").is_file()
    assert Path(str(resources.files("engine.conf"))) == CONF_DIR
    assert sql_load("winner_slice").strip().startswith("--")


def _run(where: Path, pythonpath: Path) -> tuple[dict[str, object], str]:
    where.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    code = "import engine, engine.compose; print(engine.__file__); print(engine.compose.CONF_DIR)"
    origin = subprocess.run(
        [sys.executable, "-c", code], cwd=where, env=env, capture_output=True, text=True, check=True
    )
    proc = subprocess.run(
        [sys.executable, "-m", "engine", *RUN], cwd=where, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = sorted((where / "outputs" / "runs").glob("*/*/metrics.json"))
    assert len(runs) == 1, "the run's outputs land under the working directory"
    assert any((where / "lakehouse").glob("*/bars")), "the lakehouse lands under the working directory"
    return json.loads(runs[0].read_text()), origin.stdout


@pytest.mark.slow
def test_wheel_runs_a_backtest_from_an_unrelated_folder(tmp_path: Path) -> None:
    # built from a copy of the sources, so the test leaves no build/ or egg-info in the checkout
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results")
    for name in ("engine", "benchmarks", "conf", "sql"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for local in (src / "conf" / "local").glob("*.yaml"):  # machine-local configs stay out of the wheel
        if local.name != "default.yaml":
            local.unlink()
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = dist.glob("quant_engine-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        check=True,
        timeout=600,
    )
    assert (target / "engine" / "conf" / "profile" / "crypto_rating.yaml").is_file()
    assert (target / "engine" / "queries" / "winner_slice.sql").is_file()
    assert not (target / "conf").exists() and not (target / "sql").exists()

    installed, origin = _run(tmp_path / "elsewhere", target)
    assert origin.splitlines()[0].startswith(str(target)), origin
    assert origin.splitlines()[1].startswith(str(target)), origin
    in_repo, origin = _run(tmp_path / "checkout", REPO)
    assert origin.splitlines()[0].startswith(str(REPO)), origin
    assert installed == in_repo
