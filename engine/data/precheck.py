"""Input checks that need the file system but no data: run before anything is read or written.

The command line runs :func:`inputs_precheck` on every composed run (``engine.compose``), before
Hydra makes a run folder and before the lakehouse is opened, so that these mistakes are one line
and exit code 2 with nothing written:

- ``execution.markets_file`` names no file;
- ``ranking.top_n`` is larger than the universe the run can rank: ``universe.symbols`` (less
  ``universe.exclude``) when given, else the generator's ``data.n_symbols`` or the pairs of
  ``data.path`` in the run's quote, named by their files (no file is opened; a folder whose quote
  is ambiguous is left to the import, which names the problem).

Each check refuses only what the run would refuse later anyway (after reading the data): the
universe counted here is never smaller than the one the run ranks.
"""

from __future__ import annotations

from pathlib import Path

from engine.config import RunConfig
from engine.core.errors import ConfigError


def inputs_precheck(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` (one line) for a missing markets file or a ``top_n`` above the universe."""
    if cfg.task == "ingest":
        return
    _markets_file_check(cfg)
    n, where = _universe_size(cfg)
    if n is not None and cfg.ranking.top_n > n:
        msg = (
            f"ranking.top_n={cfg.ranking.top_n} exceeds the universe of {n} symbols ({where}): "
            f"use 1 <= top_n <= {max(n, 1)}"
        )
        raise ConfigError(msg)


def _markets_file_check(cfg: RunConfig) -> None:
    name = cfg.execution.markets_file
    if name is None:
        return
    p = Path(name).expanduser()
    if not p.is_file():
        why = "is a folder" if p.is_dir() else "does not exist"
        msg = (
            f"execution.markets_file {p} {why}: give a csv/json/yaml file of symbol, min_notional, amount_step, "
            "price_tick (docs/EXECUTION.md), or execution.markets_file=null"
        )
        raise ConfigError(msg)


def _universe_size(cfg: RunConfig) -> tuple[int | None, str]:
    """Return the most symbols the run can rank and where they come from (None: not known without the data)."""
    exclude = set(cfg.universe.exclude)
    if cfg.universe.symbols:
        return len(set(cfg.universe.symbols) - exclude), "universe.symbols less universe.exclude"
    from engine.data.sources.registry import source_class

    named = source_class(cfg.data.source).universe_named(cfg.data)  # each backend knows its own
    if named is None:
        return None, ""
    names, where = named
    return len(names - exclude), where + (" less universe.exclude" if exclude else "")
