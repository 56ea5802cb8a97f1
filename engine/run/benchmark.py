"""The report's benchmarks: the equal-weight universe and BTC buy-and-hold, one batch of symbols at a time.

The equal-weight universe averages every listed symbol's return at each base bar, so it reads the
whole universe; it does so through :func:`~engine.data.lakehouse.scan_batches` (only
``timestamp`` and ``close``), adding each batch's returns into per-bar sums in symbol order. The
sums are a left fold over the symbols (``np.add.at`` adds in array order), so they do not depend
on the batch size, and memory follows one batch, not the universe: half the ranking's batch
(:data:`~engine.data.lakehouse.SCAN_BATCH`), since this read comes when the run holds the most (its
plan, its walk and the artefact frames) and a batch's sort and returns take ~4x its rows' bytes
(~90 MB at 256 symbols of 2021-2024 daily bars, ~45 MB at 128, at the same speed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from engine.data import lakehouse
from engine.data.lakehouse import scan_batches

if TYPE_CHECKING:
    from engine.run.plan import RunPlan

BTC = "BTC/USDT"


def benchmark_frame(plan: RunPlan) -> pl.DataFrame:
    """Equal-weight universe (rebalanced every base bar) and BTC buy-and-hold, marked at the base bars' closes.

    Columns ``timestamp`` (the bar's close time), ``equal_weight`` and, when the universe holds
    BTC/USDT, ``btc_buy_hold``; one row per base bar at which some symbol has a return.
    """
    start, end, step = plan.windows[0].start_ms, plan.windows[-1].end_ms, plan.base_ms
    init = plan.cfg.backtest.init_cash
    grid = np.arange(start // step * step, end + step, step, dtype=np.int64)
    total, count = np.zeros(grid.size), np.zeros(grid.size, dtype=np.int64)
    btc: pl.DataFrame | None = None
    for batch in scan_batches(plan.lakehouse, "bars", plan.base, max(1, lakehouse.SCAN_BATCH // 2)):
        # read streaming, then each row's return from the row before when it is the same symbol's
        # (sorted by symbol, time): the window function over the lazy scan held ~2x the memory
        rets = (
            batch.select("symbol", pl.col("timestamp").dt.epoch("ms").alias("ts"), "close")
            .collect(engine="streaming")
            .sort("symbol", "ts")
            .with_columns(
                pl.when(pl.col("symbol") == pl.col("symbol").shift(1))
                .then(pl.col("close") / pl.col("close").shift(1) - 1.0)
                .alias("ret")
            )
            .filter(pl.col("ts").is_between(start, end - 1))
            .select("symbol", "ts", "ret")
        )
        if rets.filter(pl.col("symbol") == BTC).height:
            btc = rets.filter(pl.col("symbol") == BTC)
        ok = rets.filter(pl.col("ret").is_not_null())
        idx = np.searchsorted(grid, ok.get_column("ts").to_numpy())
        np.add.at(total, idx, ok.get_column("ret").to_numpy())  # in symbol order, bar by bar
        np.add.at(count, idx, 1)
    held = count > 0
    ew = pl.DataFrame(
        {
            "ts": grid[held],
            "equal_weight": init * np.cumprod(1.0 + total[held] / count[held]),
        }
    )
    if btc is not None:
        bh = btc.select("ts", (init * (1.0 + pl.col("ret").fill_null(0.0)).cum_prod()).alias("btc_buy_hold"))
        ew = ew.join(bh, on="ts", how="left")
    return (
        ew.with_columns((pl.col("ts") + plan.base_ms).cast(pl.Datetime("ms", "UTC")).alias("timestamp"))
        .drop("ts")
        .select("timestamp", pl.exclude("timestamp"))
        .sort("timestamp")
    )
