"""Shared fixtures. A test run installs nothing: .ci/run installs Chromium (when missing) before it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import browser_or_skip


@pytest.fixture(scope="session")
def browser() -> str:
    """A Chrome/Chromium binary, or the test skips (see :func:`browser_or_skip`)."""
    return browser_or_skip()


@pytest.fixture(scope="session")
def lakehouse_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated small lakehouse shared by the session (tests must not modify it)."""
    return tmp_path_factory.mktemp("lakehouse")
