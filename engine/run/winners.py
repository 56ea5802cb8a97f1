"""The first book's winners frame (winners.parquet, the report's heatmap): every window's full ranking.

Its rows grow with the universe (~27 MB at 2,000 symbols) and it is built after the run's
survivorship audit, when the run holds the most it ever holds: the order (window, rank) is found
on the two integer keys alone, every column is gathered once in that order, and the weights are
joined on the two key columns only (the lazy join, join and sort of the whole frame it replaces
held ~3x the frame at once; the same frame, bit for bit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from engine.config.book import is_sided

if TYPE_CHECKING:
    from engine.run.plan import RunPlan
    from engine.run.state import BookOutput


def winners_frame(plan: RunPlan, out: BookOutput) -> pl.DataFrame:
    """Every window's full ranking, sorted by (window, rank), with the weight each selected winner was given."""
    windows = pl.DataFrame(
        {"rank_ms": [w.rank_ms for w in plan.windows], "window": [w.index for w in plan.windows]},
        schema={"rank_ms": pl.Int64, "window": pl.Int64},
    )
    weights = pl.DataFrame(
        [{"window": a["window"], "symbol": s, "weight": x} for a in out.audit for s, x in a["weights"].items()],
        schema={"window": pl.Int64, "symbol": pl.String, "weight": pl.Float64},
    )
    order = (  # unique keys: the order does not depend on the join's
        plan.ranks.select("rank_ms", "rank").with_row_index("row").join(windows, on="rank_ms").sort(["window", "rank"])
    )
    rows = order.get_column("row")
    frame = plan.ranks.select(
        pl.col("rank_date").gather(rows),
        pl.col("rank_ms").gather(rows).cast(pl.Datetime("ms", "UTC")).alias("rank_time"),
        pl.exclude("rank_date", "rank_ms").gather(rows),
    ).with_columns(order.get_column("window"), (pl.col("rank") <= plan.cfg.ranking.top_n).alias("selected"))
    del order, rows
    weight = (
        frame.select("window", "symbol")
        .join(weights, on=["window", "symbol"], how="left", maintain_order="left")
        .get_column("weight")
    )
    frame = frame.with_columns(weight)
    if is_sided(plan.cfg):  # a long-short book: selected = given a weight, long (> 0) or short (< 0)
        frame = frame.with_columns(pl.col("weight").is_not_null().alias("selected"))
    return frame
