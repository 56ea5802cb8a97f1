"""A lakehouse in a local folder: atomic writes by temp file + ``os.replace``, ``fcntl`` locks."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from engine.data.storage.base import Storage

if TYPE_CHECKING:
    from pyarrow import NativeFile


class LocalStorage(Storage):
    """A folder on this machine: atomic writes by temp file + ``os.replace``, ``fcntl`` locks."""

    locking = True
    legacy_layouts = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def exists(self, path: PurePath) -> bool:
        """Return True if ``path`` is an existing file."""
        return Path(path).is_file()

    def is_dir(self, path: PurePath) -> bool:
        """Return True if ``path`` is an existing folder."""
        return Path(path).is_dir()

    def read_bytes(self, path: PurePath) -> bytes:
        """Return the bytes of the file ``path``."""
        return Path(path).read_bytes()

    def write_bytes(self, path: PurePath, payload: bytes) -> None:
        """Write the file ``path`` whole: a temp file beside it, fsynced, then ``os.replace``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with tmp.open("wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def listdir(self, path: PurePath) -> list[str]:
        """Return the sorted names of the entries directly under ``path`` (empty if none)."""
        p = Path(path)
        return sorted(c.name for c in p.iterdir()) if p.is_dir() else []

    def find(self, path: PurePath, name: str) -> list[PurePath]:
        """Return every file called ``name`` anywhere below ``path``, sorted."""
        return sorted(p for p in Path(path).rglob(name) if p.is_file())

    def delete(self, path: PurePath) -> None:
        """Delete the file ``path`` (nothing happens if it is missing)."""
        Path(path).unlink(missing_ok=True)

    @contextlib.contextmanager
    def locked(self, path: PurePath) -> Iterator[None]:
        """Hold an exclusive ``fcntl`` lock on ``path/.lock``, removing stale temp files once held."""
        part = Path(path)
        part.mkdir(parents=True, exist_ok=True)
        with (part / ".lock").open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                for stale in part.glob(".*.tmp-*"):  # left by a process killed mid-write
                    stale.unlink(missing_ok=True)
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def path_of(self, url: str) -> PurePath:
        """Return ``url`` (a local path) as a :class:`~pathlib.Path`."""
        return Path(url)

    def parquet_file(self, path: PurePath) -> str | NativeFile:
        """Return ``path`` as a string (``pyarrow.parquet`` opens local files by name)."""
        return str(path)
