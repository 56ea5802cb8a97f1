"""Where the lakehouse's bytes live: a local folder or an S3 (or S3-compatible) bucket.

:func:`storage_for` is the one place where ``paths.lakehouse_dir`` picks a backend: a local path
gives :class:`~engine.data.storage.local.LocalStorage`, ``s3://bucket/prefix`` gives
:class:`~engine.data.storage.s3.S3Storage`. Both implement :class:`~engine.data.storage.base.Storage`
(exists, read, write one object whole, list a folder, the readers' options, the facts a caller
needs as attributes); nothing above this package branches on the backend
(``tests/test_data_contract.py`` checks that).

- :mod:`.base`: the interface;
- :mod:`.local`: a folder (temp file + ``os.replace``, ``fcntl`` locks);
- :mod:`.s3`: a bucket through ``pyarrow.fs.S3FileSystem``, settings from the standard AWS chain;
- :mod:`.duckdb_ext`: DuckDB's ``httpfs``/``aws`` extensions loaded from their pip packages.
"""

from __future__ import annotations

import os

from engine.data.storage.base import Storage
from engine.data.storage.duckdb_ext import EXTENSION_PACKAGES, extension_file, extension_load
from engine.data.storage.local import LocalStorage
from engine.data.storage.s3 import S3Settings, S3Storage, redact, s3_settings

__all__ = [
    "EXTENSION_PACKAGES",
    "LocalStorage",
    "S3Settings",
    "S3Storage",
    "Storage",
    "extension_file",
    "extension_load",
    "is_url",
    "redact",
    "s3_settings",
    "storage_for",
]


def is_url(location: str | os.PathLike[str]) -> bool:
    """Return True for an ``s3://`` location."""
    return str(location).startswith("s3://")


def storage_for(location: str | os.PathLike[str]) -> Storage:
    """Return the storage of ``paths.lakehouse_dir``: ``s3://bucket/prefix`` or a local folder."""
    return S3Storage(str(location)) if is_url(location) else LocalStorage(location)
