"""SQL lives in ``sql/NAME.sql``, loaded by name and run by DuckDB with bound parameters.

The repository keeps ``sql/`` top-level; it is installed as the package ``engine.queries`` and read
through :mod:`importlib.resources`, so an installed engine finds it from any working directory.

Parameters naming ``s3://`` objects are read through DuckDB's ``httpfs`` with a temporary secret
built from the standard AWS settings (:meth:`engine.data.storage.S3Storage.duckdb_prepare`); the
extension comes from the pip package built for this DuckDB where one is installed
(:func:`engine.data.storage.extension_load`). Where ``httpfs`` cannot be loaded (no such package, none
installed by DuckDB, and DuckDB's extension repository out of reach), those parquet files are read
by pyarrow through the same storage and DuckDB runs the same query on the Arrow table (hive columns
taken from the paths, as ``hive_partitioning`` does).
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import re
from importlib import resources
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, cast

import duckdb
import pyarrow as pa

from engine.core.errors import first_line

if TYPE_CHECKING:
    from engine.data.storage import S3Storage

log = logging.getLogger(__name__)
_FALLBACK_SAID: set[str] = set()


@functools.cache
def sql_load(name: str) -> str:
    """Text of ``sql/{name}.sql``."""
    return resources.files("engine.queries").joinpath(f"{name}.sql").read_text(encoding="utf-8")


def _urls(value: object) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, str) and v.startswith("s3://")]


def sql_arrow(name: str, params: dict[str, object], con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """Run the named query with ``params`` bound by DuckDB and return an Arrow table."""
    con = con or duckdb.connect()
    text = sql_load(name)
    s3 = {k: _urls(v) for k, v in params.items() if _urls(v)}
    if s3:
        from engine.data.storage import S3Storage

        storage = S3Storage("s3://" + next(iter(s3.values()))[0].removeprefix("s3://").split("/")[0])
        try:
            storage.duckdb_prepare(con)
        except duckdb.Error as exc:
            if storage.bucket not in _FALLBACK_SAID:
                _FALLBACK_SAID.add(storage.bucket)
                log.info("DuckDB httpfs unavailable (%s): parquet on S3 read through pyarrow", first_line(exc))
            params = dict(params)
            for key in s3:
                table = _arrow_read(storage, cast("str | list[str]", params.pop(key)))  # URL text: see s3
                view = f"_qe_{key}"
                con.register(view, table)
                text, n = re.subn(rf"read_parquet\(\${key}\b[^)]*\)", view, text)
                if not n:
                    msg = f"sql/{name}.sql reads ${key} other than by read_parquet(${key}, ...)"
                    raise ValueError(msg) from None
    # a prepared statement: DuckDB 1.4's relational API (con.sql with params) ran the winner slice
    # 10-20x slower than executing the same statement (benchmarks figure 4)
    return con.execute(text, params).fetch_arrow_table()


def _arrow_read(storage: S3Storage, value: str | list[str]) -> pa.Table:
    """Read the parquet files ``value`` names into one table, hive columns added.

    Globs are allowed in one path component.
    """
    import pyarrow.parquet as pq

    paths: list[PurePosixPath] = []
    for url in [value] if isinstance(value, str) else value:
        parts = PurePosixPath(url.removeprefix("s3://")).parts
        found = [PurePosixPath(parts[0])]
        for part in parts[1:]:
            if "*" in part or "?" in part:
                found = [f / n for f in found for n in storage.listdir(f) if fnmatch.fnmatchcase(n, part)]
            else:
                found = [f / part for f in found]
        paths.extend(found)  # listed, or named by a caller that checked them
    tables = []
    for p in paths:
        table = pq.read_table(storage.parquet_file(p))
        for comp in p.parts[:-1]:
            if "=" in comp:
                k, v = comp.split("=", 1)
                table = table.append_column(k, pa.array([v] * table.num_rows, pa.string()))
        tables.append(table)
    if not tables:
        from engine.core.errors import DataError

        msg = f"no parquet file matches {value if isinstance(value, str) else value[:3]}"
        raise DataError(storage.redact(msg))
    return pa.concat_tables(tables, promote_options="default")
