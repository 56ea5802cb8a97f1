"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lakehouse_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated small lakehouse shared by the session (tests must not modify it)."""
    return tmp_path_factory.mktemp("lakehouse")
