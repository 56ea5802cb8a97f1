"""SQL lives in ``sql/NAME.sql``, loaded by name and run by DuckDB with bound parameters."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


@functools.cache
def sql_load(name: str) -> str:
    """Text of ``sql/{name}.sql``."""
    return (SQL_DIR / f"{name}.sql").read_text()


def sql_arrow(name: str, params: dict[str, Any], con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """Run the named query with ``params`` bound by DuckDB and return an Arrow table."""
    con = con or duckdb.connect()
    return con.sql(sql_load(name), params=params).to_arrow_table()
