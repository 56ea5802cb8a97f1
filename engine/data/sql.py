"""SQL lives in ``sql/NAME.sql``, loaded by name and run by DuckDB with its ``$name`` parameters as literals.

A parameter is written into the statement as a typed SQL literal (:func:`sql_literal`: a string
quoted with its quotes doubled, an integer as BIGINT, a float through its exact decimal text, a
list of them as a list), never by splicing raw text. DuckDB's Python binding of parameters (and of
any Python object: a registered Arrow table, ``executemany`` rows) imports pandas on its first use,
~40 MB and ~0.4 s of every run that never needs it (issue 23: memory and start-up); the literal
leaves pandas unimported and gives DuckDB the same values and types.

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
from collections.abc import Iterator, Mapping
from datetime import datetime
from importlib import resources
from pathlib import PurePath
from typing import TYPE_CHECKING, cast

import duckdb
import numpy as np
import pyarrow as pa

from engine.core.errors import first_line

if TYPE_CHECKING:
    from engine.data.storage import Storage

log = logging.getLogger(__name__)
_FALLBACK_SAID: set[str] = set()
STREAM_ROWS = 1 << 16  # rows per record batch of sql_batches


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
    # con.execute, not the relational API: DuckDB 1.4's con.sql ran the winner slice 10-20x slower
    # than executing the same statement (benchmarks figure 4)
    return con.execute(_statement(con, name, params, storage)).fetch_arrow_table()


def sql_batches(name: str, params: dict[str, object], storage: Storage | None = None) -> Iterator[pa.RecordBatch]:
    """Run the named query as :func:`sql_arrow` does and yield its result a record batch at a time.

    DuckDB streams the rows as it produces them (a query without ``ORDER BY`` never holds its whole
    result): the caller's memory follows a batch of :data:`STREAM_ROWS` rows, not the table.
    """
    con = duckdb.connect()
    try:
        yield from con.execute(_statement(con, name, params, storage)).fetch_record_batch(STREAM_ROWS)
    finally:
        con.close()


def _statement(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, object], storage: Storage | None) -> str:
    """Return the named query's text with ``params`` bound (files DuckDB cannot read itself registered on ``con``)."""
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
    return sql_bind(text, params)


# a quoted string or a -- comment (both kept as they are), or a $name parameter outside them
_TOKEN = re.compile(r"'(?:[^']|'')*'|--[^\n]*|\$(\w+)")


def sql_bind(text: str, params: Mapping[str, object]) -> str:
    """Return ``text`` with each ``$name`` outside strings and comments replaced by ``params[name]``'s literal.

    Raises ``KeyError`` for a parameter the statement names but ``params`` lacks.
    """
    return _TOKEN.sub(lambda m: m.group(0) if m.group(1) is None else sql_literal(params[m.group(1)]), text)


def sql_literal(value: object) -> str:
    """Return the DuckDB literal of a parameter value, typed as DuckDB binds the Python value.

    None: NULL; bool: BOOLEAN; int: INTEGER, or BIGINT outside 32 bits (64 at most); float: DOUBLE from its shortest exact text (``repr``,
    ``nan`` and ``inf`` included); str: a quoted VARCHAR, quotes doubled (DuckDB reads no
    backslash escapes in it); datetime (naive): TIMESTAMP to the microsecond; a list or tuple: a
    list of the literals; a numpy scalar as its Python value. Raises ``TypeError`` for anything else.
    """
    if isinstance(value, np.generic):  # a numpy scalar: its Python value (repr of np.float64 names its type)
        value = value.item()
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return f"CAST({value} AS {'INTEGER' if -(2**31) <= value < 2**31 else 'BIGINT'})"
    if isinstance(value, float):
        return f"CAST('{value!r}' AS DOUBLE)"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, datetime) and value.tzinfo is None:
        return f"TIMESTAMP '{value.isoformat(sep=' ', timespec='microseconds')}'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(sql_literal(v) for v in value) + "]"
    msg = f"no SQL literal for a {type(value).__name__} parameter"
    raise TypeError(msg)


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
