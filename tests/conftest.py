"""Shared fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    """Test set-up: Debian's chromium for the report and heatmap tests, installed when missing
    (as root with apt-get; ENGINE_NO_BROWSER=1 opts out and the browser tests then skip)."""
    if shutil.which("chromium") or os.environ.get("ENGINE_NO_BROWSER") == "1":
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, check=False, timeout=900
    )


@pytest.fixture(scope="session")
def lakehouse_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated small lakehouse shared by the session (tests must not modify it)."""
    return tmp_path_factory.mktemp("lakehouse")
