"""quant-engine: a dataframe-native walk-forward backtester (see the README).

Importing the package, before polars is loaded, sets polars' allocator (its own jemalloc,
configured once when polars loads: ``import polars`` appends ``_RJEM_MALLOC_CONF`` to its defaults
``dirty_decay_ms:500,muzzy_decay_ms:1000``) to one arena whose freed pages go back to the system
after 0.2 s (``narenas:1,dirty_decay_ms:200,muzzy_decay_ms:0``): the pages of the batches of symbols
the ranking and the report's benchmark read otherwise pile up in one arena per thread and stay
resident (a muzzy page still counts), ~60 MB at 2,000 symbols (docs/PERFORMANCE.md). Measured on
2 cores at 2,000 and 20,000 symbols it costs no CPU; returning pages at once (``dirty_decay_ms:0``)
saved as much but cost ~10 % more CPU at 2,000 and ~40 % at 20,000. A value already set (by the
user) is kept; with polars imported first the setting has no effect. Numbers do not depend on it.
"""

import os

os.environ.setdefault("_RJEM_MALLOC_CONF", "narenas:1,dirty_decay_ms:200,muzzy_decay_ms:0")
