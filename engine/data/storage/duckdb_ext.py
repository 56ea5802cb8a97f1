"""DuckDB extensions loaded by path from the pip packages built for the running DuckDB (no download).

The S3 storage needs ``httpfs`` (and, without a key in the settings, ``aws``) to let DuckDB read
``s3://`` parquet itself; see :meth:`engine.data.storage.s3.S3Storage.duckdb_prepare`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb


EXTENSION_PACKAGES = ("duckdb-ext-{name}", "duckdb-extension-{name}")
"""PyPI packages that ship ``{name}.duckdb_extension`` for one DuckDB release (each pins ``duckdb==``
that release), e.g. ``duckdb-ext-httpfs`` (``duckdb_ext/extensions/vX.Y.Z/PLATFORM/``) and
``duckdb-extension-httpfs`` (``duckdb_extension_httpfs/extensions/vX.Y.Z/``)."""


@functools.cache
def extension_file(name: str, version: str | None = None) -> Path | None:
    """Return the ``{name}.duckdb_extension`` a pip package installed for this DuckDB, or None.

    Only a file under a ``v{version}`` folder counts (an extension loads only into the DuckDB
    release it was built for); ``version`` defaults to the running ``duckdb.__version__``.
    """
    from importlib import metadata

    if version is None:
        import duckdb

        version = duckdb.__version__
    for package in EXTENSION_PACKAGES:
        try:
            dist = metadata.distribution(package.format(name=name))
        except metadata.PackageNotFoundError:
            continue
        for file in dist.files or []:
            if file.name == f"{name}.duckdb_extension" and f"v{version}" in file.parts:
                path = Path(str(file.locate()))
                if path.is_file():
                    return path
    return None


def extension_load(con: duckdb.DuckDBPyConnection, name: str) -> str:
    """Load the DuckDB extension ``name`` into ``con``; return where it came from (a file, or ``"duckdb"``).

    The pip package built for this DuckDB (:func:`extension_file`) is loaded by its path, with no
    download; without one, ``LOAD name`` takes an extension installed in DuckDB's own extension
    directory. Raises ``duckdb.Error`` if neither works.
    """
    path = extension_file(name)
    if path is None:
        con.execute(f"LOAD {name}")
        return "duckdb"
    con.execute("LOAD '" + str(path).replace("'", "''") + "'")
    return str(path)
