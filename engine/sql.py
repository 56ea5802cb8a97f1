"""SQL lives in ``sql/NAME.sql``, loaded by name and run by DuckDB with bound parameters.

The repository keeps ``sql/`` top-level; it is installed as the package ``engine.queries`` and read
through :mod:`importlib.resources`, so an installed engine finds it from any working directory.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import duckdb
import pyarrow as pa


@functools.cache
def sql_load(name: str) -> str:
    """Text of ``sql/{name}.sql``."""
    return resources.files("engine.queries").joinpath(f"{name}.sql").read_text(encoding="utf-8")


def sql_arrow(name: str, params: dict[str, Any], con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """Run the named query with ``params`` bound by DuckDB and return an Arrow table."""
    con = con or duckdb.connect()
    return con.sql(sql_load(name), params=params).to_arrow_table()
