"""One read for several spans of the same symbols: each panel equals its own ``panel_load``, value for value.

The plan reads its base bars and the market stage's (from the market's history before the first
window) with :func:`engine.data.panel.panels_load` (issue 24, item 9): the regular grid makes the
later start's panel the rows of the earliest one's from that start on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import small_config

from engine.core.units import DAY_MS, date_ms
from engine.data.lakehouse import store_open
from engine.data.panel import FIELDS, panel_load, panels_load
from engine.data.sources.registry import source_from_config


def test_each_span_of_one_read_equals_its_own_read(lakehouse_dir: Path, tmp_path: Path) -> None:
    cfg = small_config(lakehouse_dir, tmp_path / "out")
    lake = store_open(cfg.paths.lakehouse_dir, source_from_config(cfg.data).identity())
    symbols = [*lake.symbols("bars", "1d")[::3], "ZZZ/USDT"]  # ZZZ has no bars in the store: a NaN column
    end = date_ms("2021-10-01")
    starts = [date_ms("2021-04-01"), date_ms("2021-02-01") + 5 * 3_600_000, date_ms("2021-04-01"), end + DAY_MS]
    got = panels_load(lake, "bars", "1d", symbols, starts, end)
    assert got[0] is not got[2] and got[0] is not got[1]  # copies of the earliest start's read (got[1])
    for panel, start in zip(got, starts, strict=True):
        want = panel_load(lake, "bars", "1d", symbols, start, end)
        assert panel.symbols == want.symbols
        assert np.array_equal(panel.ts_ms, want.ts_ms) and panel.ts_ms.dtype == want.ts_ms.dtype
        for f in FIELDS:
            a, b = getattr(panel, f), getattr(want, f)
            assert a.shape == b.shape and a.tobytes() == b.tobytes(), f
    assert got[0].ts_ms[0] == date_ms("2021-04-01") and got[1].ts_ms[0] == date_ms("2021-02-01")
    assert np.isfinite(got[1].close).sum() > 1000 and np.isnan(got[1].close).any()
    assert got[3].ts_ms.size == 0
