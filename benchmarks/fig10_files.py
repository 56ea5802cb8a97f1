"""Figure 10: fingerprinting a folder of 1,000 user files by their content.

A files store re-imports a file whose fingerprint changed (``FilesSource.origin``: name, size and
a blake2b hash of the bytes, streamed in 1 MiB chunks). Measured: the fingerprints of all 1,000
files of a fresh source (folder scan included), against the plain ``os.stat`` scan of the same
files (what a size-and-mtime fingerprint costs), the two timed alternately in one run. The
correctness row rewrites one file in place with its size and modification time kept
(``touch -r``) and checks that exactly that file's fingerprint changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.common import Row, check, check_equal, median_interval, paired_times, timed

FIG = "10 files"
N_FILES = 1000
TARGET_S = 2.0  # fingerprints of 1,000 files, seconds (reported, never enforced)


def sizes(quick: bool) -> dict[str, Any]:
    return {"n_files": N_FILES, "bars_per_file": 365 if quick else 1461, "interval": "1d", "format": "csv"}


def folder_write(folder: Path, n_files: int, n_bars: int) -> int:
    """``n_files`` daily csv files of ``n_bars`` random-walk bars; returns their total bytes."""
    rng = np.random.default_rng(10)
    ts = 1_609_459_200_000 + np.arange(n_bars, dtype=np.int64) * 86_400_000
    total = 0
    for i in range(n_files):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, n_bars)))
        open_ = np.concatenate([close[:1], close[:-1]])
        path = folder / f"S{i:04d}_USDT-1d.csv"
        pl.DataFrame(
            {
                "date": ts,
                "open": open_,
                "high": np.maximum(open_, close) * 1.01,
                "low": np.minimum(open_, close) * 0.99,
                "close": close,
                "volume": rng.uniform(1e3, 1e5, n_bars),
            }
        ).write_csv(path, float_precision=6)
        total += path.stat().st_size
    return total


def fingerprints(folder: Path) -> dict[str, object]:
    """``origin`` of every file of a fresh source (nothing cached), by symbol."""
    from engine.config import FilesData
    from engine.data.sources.files import FilesSource

    src = FilesSource(FilesData(path=str(folder)))
    return {s: src.origin(s, "1d") for s in src.symbols()}


def stat_scan(folder: Path) -> list[tuple[int, int]]:
    """The plain scan a size-and-mtime fingerprint needs: one ``os.stat`` per file."""
    return [(e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder)]


def rewrite_keeping_stat(path: Path) -> None:
    """Change one digit of the last bar's volume in place; size and mtime kept (``touch -r``)."""
    st = path.stat()
    payload = bytearray(path.read_bytes())
    at = len(payload) - 2  # the last digit before the final newline
    payload[at] = ord("1") if payload[at] != ord("1") else ord("2")
    path.write_bytes(bytes(payload))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    size = sizes(quick)
    folder = tmp / "import"
    folder.mkdir()
    write_s, total = timed(lambda: folder_write(folder, size["n_files"], size["bars_per_file"]))
    ta, tb = paired_times(lambda: fingerprints(folder), lambda: stat_scan(folder), repeat=5)
    hash_s, _, _ = median_interval(ta)
    stat_s, _, _ = median_interval(tb)

    before = fingerprints(folder)
    victim = folder / "S0500_USDT-1d.csv"
    st = victim.stat()
    rewrite_keeping_stat(victim)
    after = fingerprints(folder)
    kept = (victim.stat().st_size, victim.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    changed = sorted(s for s in before if before[s] != after[s])
    rows = [
        Row(
            FIG,
            f"fingerprint {size['n_files']} files by content ({total / 2**20:.0f} MiB, blake2b)",
            hash_s,
            "s",
            stat_s,
            "os.stat scan of the same files",
            target=f"<= {TARGET_S:g} s",
            status=check(hash_s, TARGET_S),
            note=f"median of 5 alternating pairs; files written in {write_s:.1f} s",
        ),
        Row(
            FIG,
            "a file rewritten with size and mtime kept is detected",
            float(len(changed)),
            "files changed",
            target="exactly S0500/USDT",
            status=check_equal(kept and changed == ["S0500/USDT"]),
            note=f"size and mtime kept: {kept}; fingerprints changed: {changed}",
        ),
    ]
    detail = {"sizes": size, "bytes": total, "hash_s": ta, "stat_s": tb, "changed": changed}
    return rows, detail
