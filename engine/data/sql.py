"""SQL lives in ``sql/NAME.sql``, loaded by name and run by DuckDB with bound parameters.

The repository keeps ``sql/`` top-level; it is installed as the package ``engine.queries`` and read
through :mod:`importlib.resources`, so an installed engine finds it from any working directory.

The files a query reads live in a storage (:mod:`engine.data.storage`): the caller passes it, and
it prepares the connection (:meth:`~engine.data.storage.base.Storage.duckdb_prepare`: nothing for
local files; on S3 DuckDB's ``httpfs`` with a temporary secret built from the standard AWS
settings, the extension from the pip package built for this DuckDB where one is installed). Where
the storage cannot prepare DuckDB (on S3: no such package, none installed by DuckDB, and DuckDB's
extension repository out of reach), the parquet files each ``read_parquet($param, ...)`` names are
read by pyarrow through the same storage and DuckDB runs the same query on the Arrow table (hive
columns taken from the paths, as ``hive_partitioning`` does).
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import re
from importlib import resources
from pathlib import PurePath
from typing import TYPE_CHECKING, cast

import duckdb
import pyarrow as pa

from engine.core.errors import first_line

if TYPE_CHECKING:
    from engine.data.storage import Storage

log = logging.getLogger(__name__)
_FALLBACK_SAID: set[str] = set()


@functools.cache
def sql_load(name: str) -> str:
    """Text of ``sql/{name}.sql``."""
    return resources.files("engine.queries").joinpath(f"{name}.sql").read_text(encoding="utf-8")


def sql_arrow(
    name: str, params: dict[str, object], con: duckdb.DuckDBPyConnection | None = None, storage: Storage | None = None
) -> pa.Table:
    """Run the named query with ``params`` bound by DuckDB and return an Arrow table.

    ``storage``: where the parquet files the query reads live (None: local files DuckDB reads by name).
    """
    con = con or duckdb.connect()
    text = sql_load(name)
    if storage is not None:
        try:
            storage.duckdb_prepare(con)
        except duckdb.Error as exc:
            where = storage.url(storage.root)
            if where not in _FALLBACK_SAID:
                _FALLBACK_SAID.add(where)
                log.info("DuckDB cannot read %s itself (%s): its parquet read through pyarrow", where, first_line(exc))
            params = dict(params)
            for key in re.findall(r"read_parquet\(\$(\w+)", text):
                table = _arrow_read(storage, cast("str | list[str]", params.pop(key)))  # URL text: see scan_url
                view = f"_qe_{key}"
                con.register(view, table)
                text = re.sub(rf"read_parquet\(\${key}\b[^)]*\)", view, text)
    # a prepared statement: DuckDB 1.4's relational API (con.sql with params) ran the winner slice
    # 10-20x slower than executing the same statement (benchmarks figure 4)
    return con.execute(text, params).fetch_arrow_table()


def _arrow_read(storage: Storage, value: str | list[str]) -> pa.Table:
    """Read the parquet files ``value`` names into one table, hive columns added.

    Globs are allowed in one path component.
    """
    import pyarrow.parquet as pq

    paths: list[PurePath] = []
    for url in [value] if isinstance(value, str) else value:
        parts = storage.path_of(url).parts
        found = [PurePath(parts[0])]
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
