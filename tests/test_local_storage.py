"""The local storage's write and lock: the files a write leaves, stale temp files, other threads' locks."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

from engine.data.storage.local import LocalStorage


def test_a_write_under_the_lock_leaves_the_file_and_the_lock_only(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    part = tmp_path / "bars" / "interval=1d" / "symbol=BTC_USDT"
    with storage.locked(part):
        storage.write_bytes(part / "data.parquet", b"x" * 100_000)
    assert sorted(p.name for p in part.iterdir()) == [".lock", "data.parquet"]
    assert (part / "data.parquet").read_bytes() == b"x" * 100_000
    assert (part / ".lock").stat().st_size == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in (".lock", "data.parquet"):  # as open("a") and open("wb") create them
        assert stat.S_IMODE((part / name).stat().st_mode) == 0o666 & ~umask
    storage.write_bytes(tmp_path / "new" / "folder" / "f.json", b"{}")  # outside a lock: its folder made
    assert (tmp_path / "new" / "folder" / "f.json").read_bytes() == b"{}"


def test_the_lock_removes_stale_temp_files_and_keeps_the_rest(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    part = tmp_path / "p"
    part.mkdir()
    for name in (".data.parquet.tmp-123", ".x.tmp-9", "data.parquet", ".lock", "keep.tmp-1", ".hidden"):
        (part / name).write_bytes(b"")
    with storage.locked(part):
        assert sorted(p.name for p in part.iterdir()) == [".hidden", ".lock", "data.parquet", "keep.tmp-1"]


def test_the_lock_excludes_another_thread_until_released(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    part = tmp_path / "p"
    order: list[str] = []
    held = threading.Event()

    def other() -> None:
        held.wait(5)
        with storage.locked(part):
            order.append("other")

    t = threading.Thread(target=other)
    t.start()
    with storage.locked(part):
        held.set()
        time.sleep(0.2)
        order.append("first")
        storage.write_bytes(part / "data.parquet", b"1")
    t.join(5)
    assert order == ["first", "other"]
