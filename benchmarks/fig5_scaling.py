"""Figure 5 (full mode only): scaling with the universe size, MTF on (``backtest.timeframes=[4h]``).

For 100, 500 and 2,000 synthetic symbols (2021-01-01..2024-12-31, top-10 winners, default
profile): one fresh subprocess on an empty lakehouse (generation + lazy 4h fetch of the winners
included) and one on the then existing lakehouse (the backtest alone). Wall time and the
subprocess's own peak RSS (``VmHWM`` of /proc/self/status at its end; ``ru_maxrss`` would include the
parent's RSS at fork, which Linux keeps across exec).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import Row, backtest_subprocess, check

FIG = "5 scaling"
RSS_TARGET_MB = 1536.0
DAYS = 1461


def sizes(quick: bool) -> dict[str, Any]:
    return {"n_symbols": [100, 500, 2000], "days": DAYS, "top_n": 10, "timeframes": ["4h"]}


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    size = sizes(quick)
    rows: list[Row] = []
    detail: dict[str, Any] = {"sizes": size}
    per_mrow: dict[int, float] = {}
    per_uni: dict[int, float] = {}
    for n in size["n_symbols"]:
        base = ["+profile=crypto_rating", f"data.n_symbols={n}", "ranking.top_n=10", "backtest.timeframes=[4h]"]
        lake = tmp / f"lake-{n}"
        cold = backtest_subprocess(lake, tmp / f"out-{n}-empty", base)
        warm = backtest_subprocess(lake, tmp / f"out-{n}-existing", base)
        detail[str(n)] = {"empty_lakehouse": cold, "existing_lakehouse": warm}
        ct = cold["runs"][0]["timings"]
        mrows = n * DAYS / 1e6
        per_mrow[n] = warm["process_wall_s"] / mrows
        ref = per_mrow[size["n_symbols"][0]]
        t = warm["runs"][0]["timings"]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k != "total")
        rows.append(
            Row(
                FIG,
                f"{n} symbols, existing lakehouse: process wall",
                warm["process_wall_s"],
                "s",
                note=f"stages s: {stages}",
            )
        )
        rows.append(
            Row(
                FIG,
                f"{n} symbols: wall per million daily rows",
                per_mrow[n],
                "s/Mrow",
                ref,
                f"{size['n_symbols'][0]} symbols",
                "~linear (ratio <= 1)",
                check(per_mrow[n] / ref, 1.0 + 1e-9),
            )
        )
        uni = sum(t.get(k, 0.0) for k in ("data", "ranking", "windows"))
        per_uni[n] = uni / mrows
        rows.append(
            Row(
                FIG,
                f"{n} symbols: universe stages (data+ranking+windows) per Mrow",
                per_uni[n],
                "s/Mrow",
                per_uni[size["n_symbols"][0]],
                f"{size['n_symbols'][0]} symbols",
                "~linear (ratio <= 1)",
                check(per_uni[n] / per_uni[size["n_symbols"][0]], 1.05),
                note=f"{uni:.2f} s; ambiguous exits {warm['runs'][0]['n_ambiguous']} (> 0: a second, optimistic pass)",
            )
        )
        rows.append(
            Row(
                FIG,
                f"{n} symbols, empty lakehouse: process wall",
                cold["process_wall_s"],
                "s",
                note=f"generation {ct['data']:.1f} s, 4h fetch {ct.get('mtf', 0):.1f} s",
            )
        )
        rss_target = f"<= {RSS_TARGET_MB:.0f} MB" if n == size["n_symbols"][-1] else ""
        peak = max(cold["maxrss_mb"], warm["maxrss_mb"])
        rows.append(
            Row(
                FIG,
                f"{n} symbols: peak RSS (max of both processes)",
                peak,
                "MB",
                target=rss_target,
                status=check(peak, RSS_TARGET_MB) if rss_target else "",
                note=f"empty {cold['maxrss_mb']:.0f} MB, existing {warm['maxrss_mb']:.0f} MB",
            )
        )
    return rows, detail
