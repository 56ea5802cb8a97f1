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

from engine.config import FilesData, RunConfig, SyntheticData
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
    data = cfg.data
    if isinstance(data, SyntheticData):
        if not exclude:
            return data.n_symbols, f"data.n_symbols={data.n_symbols}"
        from engine.data.sources.synthetic import universe_names

        names = set(universe_names(data.n_symbols, data.quote))
        return len(names - exclude), f"data.n_symbols={data.n_symbols} less universe.exclude"
    if isinstance(data, FilesData):
        symbols = _folder_pairs(data)
        if symbols is None:
            return None, ""
        return len(symbols - exclude), f"the pairs of data.path={data.path}"
    return None, ""


def _folder_pairs(data: FilesData) -> set[str] | None:
    """Return the pairs the files of ``data.path`` are named for, in the run's quote (None: not decidable here)."""
    from engine.data.sources.files import FileEntry, expand_path, name_parse

    root = expand_path(data.path)
    if not root.is_dir():
        return None  # the import names a missing folder or a file
    pairs = {e.symbol for p in root.iterdir() if p.is_file() and isinstance(e := name_parse(p), FileEntry)}
    quotes = {s.split("/")[1] for s in pairs}
    quote = data.quote if data.quote is not None else (next(iter(quotes)) if len(quotes) == 1 else None)
    if quote is None or quote not in quotes:
        return None  # no importable file, or several quotes: the import says which
    return {s for s in pairs if s.endswith("/" + quote)}
