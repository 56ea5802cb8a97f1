"""The storage interface: the few operations the lakehouse and the readers need from where bytes live.

Every backend (:mod:`.local`, :mod:`.s3`) implements them; the layers above call only these and
read the backend's facts from its attributes (:attr:`Storage.locking`,
:attr:`Storage.legacy_layouts`), never its class or the scheme of its location.

Paths inside a storage are :class:`~pathlib.PurePath` objects joined with ``/``: a local
:class:`~pathlib.Path`, or ``PurePosixPath("bucket/prefix/...")`` on S3 (pyarrow's path form);
:meth:`Storage.url` gives the user-facing name (``s3://bucket/prefix/...``, never a credential).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, ClassVar  # Any: polars' reader options (polars_options)

if TYPE_CHECKING:
    import duckdb
    from pyarrow import NativeFile


class Storage:
    """The operations the lakehouse needs; see :class:`LocalStorage` and :class:`S3Storage`."""

    root: PurePath
    """The location given (``paths.lakehouse_dir``) in this storage's path form."""
    locking: ClassVar[bool] = False
    """True where :meth:`locked` serialises the writers of one folder (a local folder's ``fcntl``
    lock): a write then needs no read-back and a read no retry. Without it (S3: a PUT is atomic but
    nothing is locked) the lakehouse reads back what it wrote and merges again if a concurrent
    writer replaced it."""
    legacy_layouts: ClassVar[bool] = False
    """True where stores written by earlier engine versions may be found (local folders: the single-store
    layout, coverage sidecar files); object storage came after both, so it never holds them."""

    def url(self, path: PurePath) -> str:
        """User-facing name of ``path`` (no credentials)."""
        return str(path)

    def redact(self, text: str) -> str:
        """``text`` without any credential."""
        return text

    def exists(self, path: PurePath) -> bool:
        """Return True if ``path`` is an existing file (object)."""
        raise NotImplementedError

    def is_dir(self, path: PurePath) -> bool:
        """Return True if ``path`` is a folder (on S3: a prefix with at least one entry)."""
        raise NotImplementedError

    def read_bytes(self, path: PurePath) -> bytes:
        """Return the bytes of the file ``path``; raise :class:`FileNotFoundError` if it is missing."""
        raise NotImplementedError

    def write_bytes(self, path: PurePath, payload: bytes) -> None:
        """Write one object whole: a reader sees the old bytes or the new ones, never a part.

        A destination that refuses writes (a read-only folder, an S3 ``AccessDenied``) raises
        :class:`PermissionError`, whatever the backend, so the caller says so in one way.
        """
        raise NotImplementedError

    def listdir(self, path: PurePath) -> list[str]:
        """Names of the entries directly under ``path`` (empty if none)."""
        raise NotImplementedError

    def find(self, path: PurePath, name: str) -> list[PurePath]:
        """Every file called ``name`` anywhere below ``path``, sorted (one recursive listing on S3)."""
        raise NotImplementedError

    def delete(self, path: PurePath) -> None:
        """Delete the file ``path`` (nothing happens if it is missing)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def locked(self, path: PurePath) -> Iterator[None]:
        """Serialise writers of the folder ``path`` where the storage can (a no-op on S3)."""
        yield

    def check(self) -> None:
        """Fail with one line if the location cannot be used (unreachable, no bucket, refused)."""

    def parquet_file(self, path: PurePath) -> str | NativeFile:
        """Return what ``pyarrow.parquet`` opens for ``path``."""
        raise NotImplementedError

    def scan_url(self, path: PurePath) -> str:
        """``path`` as polars and DuckDB name it."""
        return str(path)

    def path_of(self, url: str) -> PurePath:
        """Return the path that :meth:`scan_url` names ``url`` (its inverse)."""
        return PurePath(url)

    def polars_options(self) -> dict[str, Any]:  # Any: spread as keyword arguments of polars' readers
        """Keyword arguments for ``pl.scan_parquet`` / ``pl.read_parquet``."""
        return {}

    def duckdb_prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make ``con`` able to read this storage's paths (nothing to do for local files).

        Raises ``duckdb.Error`` when DuckDB cannot read them itself; :func:`engine.data.sql.sql_arrow`
        then reads the files through this storage (pyarrow) and runs the query on the Arrow table.
        """
