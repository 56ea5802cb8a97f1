"""Figure 4: lazy MTF data - 4h ingest throughput and the DuckDB winner slice.

Ingest: ``IngestionService.fetch_mtf_for_candidates`` writes 4 years of 4h bars for every symbol
of a synthetic universe into an empty lakehouse (one call, like a run whose winners cover the
universe); bars written per second, against the synthetic source alone producing the same bars
(no validation, no parquet, no coverage records). Winner slice: ``panel_load`` of 10 winners x 4
years of 4h bars (``sql/winner_slice.sql``, only their partition files) against the same query
over every symbol of the lakehouse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import Row, best_of, timed

FIG = "4 lazy MTF"
START, END = "2021-01-01", "2024-12-31"


def sizes(quick: bool) -> dict[str, Any]:
    return {
        "n_symbols": 100 if quick else 500,
        "interval": "4h",
        "range": f"{START}..{END}",
        "n_winners": 10,
        "generator_sample": 10 if quick else 20,
    }


def run(quick: bool, tmp: Path) -> tuple[list[Row], dict[str, Any]]:
    from engine.data.ingest import IngestionService
    from engine.data.lakehouse import Lakehouse
    from engine.data.panel import panel_load
    from engine.data.sources.synthetic import SyntheticSource

    size = sizes(quick)
    n = size["n_symbols"]
    lake = Lakehouse(tmp / "lake-mtf")
    src = SyntheticSource(7, n, START, END)
    symbols = src.symbols()
    service = IngestionService(lake, src, quiet=True)
    ingest_s, report = timed(lambda: service.fetch_mtf_for_candidates(symbols, ["4h"], src.start_ms, src.end_ms))
    bars = report.rows_written

    sample = symbols[: size["generator_sample"]]
    fresh = SyntheticSource(7, n, START, END)  # empty path cache
    gen_s, gen_bars = timed(
        lambda: sum(fresh.ohlcv_fetch(s, "4h", fresh.start_ms, fresh.end_ms).height for s in sample)
    )

    winners = symbols[: size["n_winners"]]
    one = best_of(lambda: panel_load(lake, "mtf", "4h", winners, src.start_ms, src.end_ms), 5)
    every = best_of(lambda: panel_load(lake, "mtf", "4h", symbols, src.start_ms, src.end_ms), 3)
    panel = panel_load(lake, "mtf", "4h", winners, src.start_ms, src.end_ms)
    rows = [
        Row(
            FIG,
            f"4h ingest, {n} symbols x 4 years (empty lakehouse)",
            bars / ingest_s,
            "bars/s",
            gen_bars / gen_s,
            f"synthetic source alone ({len(sample)} symbols)",
            note=f"{bars} bars in {ingest_s:.1f} s, one process",
        ),
        Row(
            FIG,
            f"winner slice: panel_load 10 of {n} symbols x 4y 4h",
            one * 1e3,
            "ms",
            every * 1e3,
            f"same query over all {n} symbols",
            note=f"{panel.close.shape[0]} x {panel.close.shape[1]} panel",
        ),
    ]
    detail = {
        "sizes": size,
        "bars_written": bars,
        "ingest_s": ingest_s,
        "generator_bars": gen_bars,
        "generator_s": gen_s,
        "winner_slice_s": one,
        "all_symbols_s": every,
    }
    return rows, detail
