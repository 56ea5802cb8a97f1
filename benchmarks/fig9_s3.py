"""Figure 9: the lakehouse on object storage (moto's S3 server on 127.0.0.1) against local disk.

The endpoint is on this machine, so the times measure the engine's request pattern, not a
network: the winner slice (``panel_load`` of 10 winners' 4h bars) and a full run with
``backtest.timeframes=[4h]`` on ``s3://`` over the same on a local folder (ratio), the number of
S3 requests a (second, warm) run makes, and the requests on finer bars (``mtf/``) for two universe
sizes with the same ``top_n``: they follow the winners, not the universe.

Needs ``moto[server]`` (the test extra); without it the figure reports nothing and says why.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import Row, best_of, run_config

FIG = "9 object storage"
BUCKET = "qe-bench"


def sizes(quick: bool) -> dict[str, Any]:
    return {
        "universes": [20, 40] if quick else [30, 120],
        "end": "2021-12-31" if quick else "2022-12-31",
        "top_n": 5,
        "timeframes": "[4h]",
        "slice_winners": 10,
    }


def _overrides(n: int, size: dict[str, Any]) -> list[str]:
    return [
        f"data.n_symbols={n}",
        "data.start=2021-01-01",
        f"data.end={size['end']}",
        f"ranking.top_n={size['top_n']}",
        f"backtest.timeframes={size['timeframes']}",
    ]


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    try:
        from tests.s3_server import S3Server
    except ImportError as exc:  # moto[server] missing, or not run from the repository
        return [Row(FIG, "object storage (needs moto[server])", None, "", note=str(exc))], {"skipped": str(exc)}
    from engine.data.lakehouse import store_open
    from engine.data.panel import panel_load
    from engine.data.sources.synthetic import SyntheticSource
    from engine.tasks import run_backtest

    size = sizes(quick)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = S3Server()
    server.start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        server.bucket_create(BUCKET)
        rows: list[Row] = []
        detail: dict[str, Any] = {"sizes": size, "runs": {}}
        mtf_requests: dict[int, int] = {}
        for n in size["universes"]:
            over = _overrides(n, size)
            local_lake, s3_lake = tmp / f"lake{n}", f"s3://{BUCKET}/lake{n}"
            # first runs generate (universe) and fetch (winners' 4h bars); the timed runs are warm
            run_backtest(run_config(local_lake, tmp / f"warm-local{n}", over))
            run_backtest(run_config(s3_lake, tmp / f"warm-s3{n}", over))  # type: ignore[arg-type]
            t0 = time.perf_counter()
            local = run_backtest(run_config(local_lake, tmp / f"local{n}", over))
            local_s = time.perf_counter() - t0
            mark = server.mark()
            t0 = time.perf_counter()
            remote = run_backtest(run_config(s3_lake, tmp / f"s3{n}", over))  # type: ignore[arg-type]
            s3_s = time.perf_counter() - t0
            requests = server.since(mark)
            assert remote.metrics == local.metrics, "the run on s3:// differs from the run on local disk"
            mtf = [r for r in requests if "/mtf/" in r.path]
            mtf_requests[n] = len(mtf)
            detail["runs"][n] = {
                "local_s": local_s,
                "s3_s": s3_s,
                "requests": len(requests),
                "by_method": dict(Counter(r.method for r in requests)),
                "mtf_requests": len(mtf),
                "mtf_symbols": len({p for r in mtf for p in r.path.split("/") if p.startswith("symbol=")}),
            }
            rows.append(
                Row(
                    FIG,
                    f"full run, {n} symbols, 4h stops (warm)",
                    s3_s,
                    "s",
                    local_s,
                    "local disk",
                    note="moto on 127.0.0.1",
                )
            )
            rows.append(Row(FIG, f"S3 requests of a warm run, {n} symbols", len(requests), "requests"))
        small, large = size["universes"]
        per = {n: mtf_requests[n] / max(1, detail["runs"][n]["mtf_symbols"]) for n in (small, large)}
        rows.append(
            Row(
                FIG,
                f"requests on finer bars per winner: {large} vs {small} symbols (same top_n)",
                per[large],
                "req/winner",
                per[small],
                f"{small} symbols",
                note="finer bars are touched for winners only: the cost follows the winners, not the universe",
            )
        )
        # the winner slice alone: the same winners' 4h bars read from the small and the large universe
        stores = {}
        for n in (small, large):
            src = SyntheticSource(7, n, "2021-01-01", size["end"])
            stores[n] = (
                src,
                store_open(tmp / f"lake{n}", src.identity()),
                store_open(f"s3://{BUCKET}/lake{n}", src.identity()),
            )
        common = sorted(set(stores[small][1].symbols("mtf", "4h")) & set(stores[large][1].symbols("mtf", "4h")))
        winners = common[: size["slice_winners"]]
        src = stores[large][0]
        slice_s = {}
        for name, lake in (("local", stores[large][1]), ("s3", stores[large][2])):
            slice_s[name] = best_of(
                lambda lake=lake: panel_load(lake, "mtf", "4h", winners, src.start_ms, src.end_ms), 3
            )
        slice_requests = {}
        for n in (small, large):
            mark = server.mark()
            panel_load(stores[n][2], "mtf", "4h", winners, stores[n][0].start_ms, stores[n][0].end_ms)
            slice_requests[n] = len(server.since(mark))
        rows.append(
            Row(
                FIG,
                f"winner slice: {len(winners)} winners' 4h bars, {large} symbols",
                slice_s["s3"] * 1e3,
                "ms",
                slice_s["local"] * 1e3,
                "local disk",
            )
        )
        rows.append(
            Row(
                FIG,
                f"winner slice requests: the same {len(winners)} winners, {large} vs {small} symbols",
                slice_requests[large],
                "requests",
                slice_requests[small],
                f"{small} symbols",
                note="only the winners' partition files are named: no listing of the universe",
            )
        )
        detail["winner_slice_requests"] = slice_requests
        detail["winner_slice_ms"] = {k: v * 1e3 for k, v in slice_s.items()}
        detail["mtf_requests"] = mtf_requests
        return rows, detail
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
