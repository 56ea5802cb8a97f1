"""quant-engine: a dataframe-native walk-forward backtester (see the README).

Importing the package, before polars is loaded, sets polars' allocator (its own jemalloc, configured
once when polars loads: ``import polars`` appends ``_RJEM_MALLOC_CONF`` to its defaults
``dirty_decay_ms:500,muzzy_decay_ms:1000``) to give freed pages back to the system at once
(``dirty_decay_ms:0,muzzy_decay_ms:0``): the pages of the batches of symbols the ranking and the
report's benchmark scan would otherwise pile up between decays, ~70 MB at 2,000 symbols
(benchmarks figure 5). A value already set (by the user) is kept; with polars imported first the
setting has no effect. Numbers do not depend on it.
"""

import os

os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
