"""Shared fixtures. A test run installs nothing: .ci/run installs Chromium (when missing) before it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from filelock import FileLock
from helpers import browser_or_skip, small_config

SEEDED = ".seeded"  # written last into the shared seed: its daily bars are complete


@pytest.fixture(scope="session")
def browser() -> str:
    """A Chrome/Chromium binary, or the test skips (see :func:`browser_or_skip`)."""
    return browser_or_skip()


def _seed(root: Path) -> None:
    """Ingest the daily bars of the small universe (helpers.SMALL) into ``root``, once."""
    from helpers import ingest_task

    if not (root / SEEDED).exists():
        assert ingest_task(small_config(root, root.parent / "seed-run", "task=ingest")) == 0
        (root / SEEDED).touch()


@pytest.fixture(scope="session")
def lakehouse_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A small lakehouse holding the daily bars of helpers.SMALL's universe (tests must not modify it).

    Generated once per test run: under ``pytest -n`` the first xdist worker to need it ingests it
    into the run's shared temp folder under a file lock, and every worker copies it into a folder of
    its own (what a run fetches beyond it, e.g. the winners' 4h bars, lands in that worker's copy only).
    """
    own = tmp_path_factory.mktemp("lakehouse")
    if worker_id == "master":  # not under xdist: one session, nothing to share
        _seed(own)
        return own
    shared = tmp_path_factory.getbasetemp().parent / "lakehouse-seed"  # the run's basetemp, above gw0, gw1...
    with FileLock(f"{shared}.lock"):
        _seed(shared)
    shutil.copytree(shared, own, dirs_exist_ok=True, ignore=shutil.ignore_patterns(SEEDED))
    return own
