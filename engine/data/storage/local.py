"""A lakehouse in a local folder: atomic writes by temp file + ``os.replace``, ``fcntl`` locks."""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import threading
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from engine.data.storage.base import Storage

if TYPE_CHECKING:
    from pyarrow import NativeFile


STALE = ".*.tmp-*"  # the name of a temp file left by a process killed mid-write


def _lock_open(part: Path) -> int:
    """Create the partition's folder if need be and open its ``.lock`` (an fd; created empty, as ``open("a")``)."""
    part.mkdir(parents=True, exist_ok=True)
    return os.open(part / ".lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)


def _stale_remove(part: Path) -> None:
    """Remove the temp files a process killed mid-write left in ``part`` (under its lock)."""
    with os.scandir(part) as entries:
        stale = [e.path for e in entries if fnmatch.fnmatchcase(e.name, STALE)]
    for name in stale:
        Path(name).unlink(missing_ok=True)


class LocalStorage(Storage):
    """A folder on this machine: atomic writes by temp file + ``os.replace``, ``fcntl`` locks."""

    locking = True
    legacy_layouts = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._held = threading.local()  # .part: the partition this thread holds the lock of (its folder exists)

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
        """Write the file ``path`` whole: a temp file beside it, fsynced, then ``os.replace``.

        What is guaranteed: after a crash the file is whole, old or new (the temp file is on disk
        before the rename; a crash before the rename leaves the previous file, or none, and a stale
        temp file, which the partition's next writer removes under its lock).
        """
        path = Path(path)
        if path.parent != getattr(self._held, "part", None):  # a locked partition's folder exists
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)  # as open("wb")
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
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
        fd = _lock_open(part)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            outer = getattr(self._held, "part", None)
            try:
                _stale_remove(part)
                self._held.part = part
                yield
            finally:
                self._held.part = outer
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def path_of(self, url: str) -> PurePath:
        """Return ``url`` (a local path) as a :class:`~pathlib.Path`."""
        return Path(url)

    def parquet_file(self, path: PurePath) -> str | NativeFile:
        """Return ``path`` as a string (``pyarrow.parquet`` opens local files by name)."""
        return str(path)
