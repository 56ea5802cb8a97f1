"""Exchange rules per symbol: the smallest order, the amount step and the price tick a fill must respect.

Where the rules come from (:func:`market_rules`):

* ``data=ccxt``: the exchange's own markets, stored with the bars at ingest (``_markets.json`` in the
  data's lakehouse namespace, see :func:`markets_record`): ``market['limits']['cost']['min']`` (the
  minimum notional, in the quote currency), ``market['precision']['amount']`` and
  ``market['precision']['price']`` read in the exchange's ``precisionMode`` (:func:`precision_step`),
  and ``market['active']`` (False: delisted or halted);
* ``execution.markets_file``: a csv, json or yaml file of rows ``symbol, min_notional, amount_step,
  price_tick`` (and optionally ``active`` and ``max_leverage``), for any data; its rows replace the
  stored ones;
* ``execution.min_notional`` / ``amount_step`` / ``price_tick``: the defaults for every symbol (and
  every field) that neither names; 0 means none.

A value an exchange does not give (None) or cannot give as one number (a precision in significant
digits, whose step depends on the price) is stored as null and read as the config default, with a
warning naming the symbols.

A market's maximum leverage (``max_leverage``: ccxt's ``market['limits']['leverage']['max']``, or
the markets file's column) bounds ``portfolio.leverage``: :func:`leverage_check` refuses a run whose
leverage exceeds the maximum of a market it trades. Where no maximum is known (None: the generator,
a file without the column, an exchange whose markets leave it empty) only the global bound
``engine.config.book.MAX_LEVERAGE`` applies.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from engine.core.errors import ConfigError, DataError, EngineError
from engine.core.jsontypes import Record

if TYPE_CHECKING:
    from engine.config import RunConfig
    from engine.data.lakehouse import Lakehouse
    from engine.data.sources.base import DataSource

log = logging.getLogger(__name__)

MARKETS_FILE = "_markets.json"
"""The exchange rules of a ccxt namespace, beside its ``_identity.json``."""
FIELDS = ("min_notional", "amount_step", "price_tick")
COLUMNS = ("symbol", *FIELDS, "active", "max_leverage")
"""The columns a markets file may have (``active`` optional, default true; ``max_leverage`` optional, none)."""

# ccxt's counting modes (ccxt.base.decimal_to_precision); kept here so reading a store needs no ccxt import
DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE = 2, 3, 4
MODE_NAMES = {DECIMAL_PLACES: "DECIMAL_PLACES", SIGNIFICANT_DIGITS: "SIGNIFICANT_DIGITS", TICK_SIZE: "TICK_SIZE"}


@dataclass(frozen=True)
class MarketRule:
    """One symbol's exchange rules, as the market kernel applies them (0 = none).

    Attributes
    ----------
    min_notional
        An order whose quote amount after rounding is below it is not placed.
    amount_step
        Order amounts (base units) round down to a multiple of it.
    price_tick
        Fill prices round to a multiple of it, against the trader.
    active
        False for a market the exchange no longer trades (delisted or halted) at ingest.
    max_leverage
        The highest leverage the market allows (None: not known; only the global bound applies).
    """

    min_notional: float = 0.0
    amount_step: float = 0.0
    price_tick: float = 0.0
    active: bool = True
    max_leverage: float | None = None


@dataclass(frozen=True)
class MarketRow:
    """A market as a file holds it: None where the file (or the exchange) gives no value."""

    symbol: str
    min_notional: float | None = None
    amount_step: float | None = None
    price_tick: float | None = None
    active: bool = True
    max_leverage: float | None = None

    def rule(self, default: MarketRule) -> MarketRule:
        """Return the rule, ``default``'s value in every field this row leaves empty."""
        value = {f: float(getattr(default if getattr(self, f) is None else self, f)) for f in FIELDS}
        return MarketRule(
            value["min_notional"], value["amount_step"], value["price_tick"], self.active, self.max_leverage
        )

    def stored(self) -> Record:
        """Return the row as ``_markets.json`` holds it (``max_leverage`` only where known)."""
        row: Record = asdict(self)
        if self.max_leverage is None:
            del row["max_leverage"]
        return row


def precision_step(value: object, mode: int) -> float | None:
    """Return a ccxt ``market['precision']`` value as a step in units of the amount or price.

    ``TICK_SIZE`` (what all but two ccxt exchanges use): the value is the step. ``DECIMAL_PLACES``:
    ``n`` decimals, a step of ``10**-n``. ``SIGNIFICANT_DIGITS`` (bitfinex, bithumb): the step grows
    with the price, no single step exists: None. A missing value is None.

    Examples
    --------
    >>> precision_step(0.001, TICK_SIZE), precision_step(3, DECIMAL_PLACES), precision_step(5, SIGNIFICANT_DIGITS)
    (0.001, 0.001, None)
    """
    if value is None or mode == SIGNIFICANT_DIGITS:
        return None
    x = float(str(value))
    if mode == DECIMAL_PLACES:
        return float(10.0 ** -int(x))
    if mode == TICK_SIZE:
        return x if x > 0 else None
    msg = f"unknown ccxt precisionMode {mode}: expected TICK_SIZE, DECIMAL_PLACES or SIGNIFICANT_DIGITS"
    raise DataError(msg)


def ccxt_row(symbol: str, market: Record, mode: int) -> MarketRow:
    """Return the rules of one ccxt market (``limits.cost.min``, ``precision``, ``active``, ``limits.leverage.max``)."""
    limits = market.get("limits") or {}
    cost = (limits.get("cost") or {}).get("min")
    lev = (limits.get("leverage") or {}).get("max")
    precision = market.get("precision") or {}
    notional = float(cost) if cost is not None and float(cost) > 0 else None
    return MarketRow(
        symbol,
        notional,
        precision_step(precision.get("amount"), mode),
        precision_step(precision.get("price"), mode),
        market.get("active") is not False,
        float(lev) if lev is not None and float(lev) >= 1 else None,  # ccxt: None where the exchange says nothing
    )


# ---- files: the user's markets file and the stored ccxt markets ----------------------------------


def _number(value: object, field: str, where: str, *, positive: bool) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        x = float(value)  # type: ignore[arg-type]  # str, int or float; anything else raises
    except (TypeError, ValueError):
        msg = f"{where}: {field}={value!r} is not a number; give a number (or leave it empty for the config default)"
        raise DataError(msg) from None
    if not math.isfinite(x) or x < 0 or (positive and x == 0):
        need = "a positive number" if positive else "a number >= 0"
        msg = f"{where}: {field}={value!r} must be {need} (or empty for the config default)"
        raise DataError(msg)
    return x


def _flag(value: object, where: str) -> bool:
    if value is None or isinstance(value, bool):
        return value is not False
    text = str(value).strip().lower()
    if text in ("", "true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    msg = f"{where}: active={value!r} is not true or false"
    raise DataError(msg)


def rows_parse(records: Iterable[Record], source: str) -> dict[str, MarketRow]:
    """Return validated rows by symbol; an unknown column, a bad value or a symbol twice is a one-line error."""
    from engine.core.symbols import symbol_check

    out: dict[str, MarketRow] = {}
    for i, rec in enumerate(records, start=1):
        where = f"markets file {source}, row {i}"
        if not isinstance(rec, Mapping):
            msg = f"{where}: expected an object with the columns {', '.join(COLUMNS)}, got {type(rec).__name__}"
            raise DataError(msg)
        unknown = sorted(set(rec) - set(COLUMNS))
        if unknown:
            msg = f"markets file {source}: unknown column(s) {unknown}; use {', '.join(COLUMNS)} (active optional)"
            raise DataError(msg)
        symbol = str(rec.get("symbol") or "").strip()
        if not symbol:
            msg = f"{where}: no symbol; every row names a market as BASE/QUOTE, e.g. BTC/USDT"
            raise DataError(msg)
        try:
            symbol_check(symbol)
        except EngineError as exc:
            msg = f"{where}: {exc}"
            raise DataError(msg) from None
        if symbol in out:
            msg = f"markets file {source}: {symbol} is given twice; keep one row per symbol"
            raise DataError(msg)
        out[symbol] = MarketRow(
            symbol,
            _number(rec.get("min_notional"), "min_notional", where, positive=False),
            _number(rec.get("amount_step"), "amount_step", where, positive=True),
            _number(rec.get("price_tick"), "price_tick", where, positive=True),
            _flag(rec.get("active"), where),
            _leverage(rec.get("max_leverage"), where),
        )
    return out


def _leverage(value: object, where: str) -> float | None:
    x = _number(value, "max_leverage", where, positive=True)
    if x is not None and x < 1.0:
        msg = f"{where}: max_leverage={value!r} must be at least 1 (1: no leverage), or empty when not known"
        raise DataError(msg)
    return x


def _records(payload: object, source: str) -> list[Record]:
    if isinstance(payload, dict) and "markets" in payload:
        payload = payload["markets"]
    if not isinstance(payload, list):
        msg = (
            f"markets file {source}: expected a list of rows (or an object whose 'markets' is one), each with "
            f"{', '.join(COLUMNS)}"
        )
        raise DataError(msg)
    return payload


def markets_file_read(path: str | Path) -> dict[str, MarketRow]:
    """Read a user's markets file (``.csv``, ``.json``, ``.yaml``/``.yml``) into rows by symbol.

    csv: a header naming the columns; json/yaml: a list of row objects, or an object whose
    ``markets`` is that list (the layout of a stored ``_markets.json``, so one can be copied). An
    empty value (or null) is the config default for that field.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        msg = f"execution.markets_file {p} does not exist: give a csv/json/yaml file of {', '.join(COLUMNS[:4])}"
        raise DataError(msg)
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            import csv

            with p.open(newline="") as fh:
                reader = csv.DictReader(fh)
                header = [c.strip() for c in reader.fieldnames or []]
                unknown = sorted(set(header) - set(COLUMNS))
                if unknown or "symbol" not in header:
                    msg = f"markets file {p}: unknown column(s) {unknown} or no symbol column; use {', '.join(COLUMNS)}"
                    raise DataError(msg)
                records: list[Record] = []
                for i, row in enumerate(reader, start=1):
                    if None in row:
                        msg = f"markets file {p}, row {i}: more values than the header has columns"
                        raise DataError(msg)
                    records.append({k.strip(): v for k, v in row.items()})
        elif suffix == ".json":
            records = _records(json.loads(p.read_text()), str(p))
        elif suffix in (".yaml", ".yml"):
            from omegaconf import OmegaConf

            records = _records(OmegaConf.to_container(OmegaConf.load(p)), str(p))
        else:
            msg = f"execution.markets_file {p}: unknown format {suffix or '(none)'}; use .csv, .json or .yaml"
            raise DataError(msg)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        msg = f"markets file {p} cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
        raise DataError(msg) from None
    return rows_parse(records, str(p))


def markets_store_read(lakehouse: Lakehouse) -> dict[str, MarketRow] | None:
    """Return the exchange rules stored in a namespace at ingest (None if it has none)."""
    path = lakehouse.root / MARKETS_FILE
    if not lakehouse.storage.exists(path):
        return None
    where = lakehouse.url(path)
    try:
        payload = json.loads(lakehouse.storage.read_bytes(path))
    except (ValueError, OSError) as exc:
        msg = f"corrupt exchange rules {where} ({type(exc).__name__}): delete it and run task=ingest again"
        raise DataError(msg) from None
    return rows_parse(_records(payload, where), where)


def markets_store_write(lakehouse: Lakehouse, rows: Mapping[str, MarketRow], meta: Mapping[str, object]) -> None:
    """Write the namespace's exchange rules whole (temp file and rename locally, one PUT on S3)."""
    payload = {**meta, "markets": [rows[s].stored() for s in sorted(rows)]}
    data = (json.dumps(payload, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()
    lakehouse.storage.write_bytes(lakehouse.root / MARKETS_FILE, data)


def markets_record(lakehouse: Lakehouse, source: DataSource, symbols: Sequence[str], interval: str) -> list[str]:
    """Store the source's exchange rules for ``symbols`` after their ingest; return the symbols kept.

    Only a source with exchange rules (ccxt) records anything; any other gets ``symbols`` back.
    An inactive (delisted) market is kept when the store holds bars of it (the exchange served its
    history) and left out otherwise; both are named in a warning, and the stored rows say
    ``active: false``. Rows stored by earlier ingests of other symbols are kept.
    """
    info = source.market_rows(symbols)
    if info is None:
        return list(symbols)
    rows, meta = info
    inactive = [s for s in symbols if s in rows and not rows[s].active]
    served = {s for s in inactive if lakehouse.read("bars", interval, s).height > 0}
    left_out = sorted(set(inactive) - served)
    if served:
        log.warning(
            "%d inactive (delisted) market(s) kept, the exchange serves their history: %s",
            len(served),
            ", ".join(sorted(served)),
        )
    if left_out:
        log.warning(
            "%d inactive (delisted) market(s) left out, the exchange served no %s bars of them in the range: %s",
            len(left_out),
            interval,
            ", ".join(left_out),
        )
    kept = [s for s in symbols if s not in left_out]
    old = markets_store_read(lakehouse) or {}
    merged = {**{s: r for s, r in old.items() if s not in rows}, **{s: rows[s] for s in kept if s in rows}}
    lakehouse._identity_commit()
    markets_store_write(lakehouse, merged, meta)
    return kept


# ---- the rules of a run ---------------------------------------------------------------------------


def rule_default(cfg: RunConfig) -> MarketRule:
    """Return the config defaults ``execution.min_notional/amount_step/price_tick`` (0 where not set)."""
    ex = getattr(cfg, "execution", None)  # the execution section: branch i22-wire
    value = {f: float(getattr(ex, f, 0.0) or 0.0) for f in FIELDS}
    return MarketRule(value["min_notional"], value["amount_step"], value["price_tick"])


def market_rules(cfg: RunConfig, symbols: Sequence[str], lakehouse: Lakehouse | None = None) -> dict[str, MarketRule]:
    """Return the exchange rules of every symbol in ``symbols`` for a run of ``cfg`` (call once per run).

    ``data=ccxt``: the rules stored at ingest in the data's namespace (``lakehouse``, opened from
    ``cfg`` when None); ``execution.markets_file``: its rows replace those; every other symbol and
    every empty field: the config defaults. A default standing in for what the exchange or the
    markets file should have said is named in a warning.
    """
    default = rule_default(cfg)
    rows: dict[str, MarketRow] = {}
    said = "the config defaults (execution.min_notional/amount_step/price_tick)"
    from engine.data.sources.registry import source_class, source_from_config

    if source_class(cfg.data.source).market_rules_stored:
        if lakehouse is None:
            from engine.data.lakehouse import store_open

            lakehouse = store_open(cfg.paths.lakehouse_dir, source_from_config(cfg.data).identity())
        stored = markets_store_read(lakehouse)
        if stored is None:
            log.warning(
                "no exchange rules stored with this data in %s (ingested before they were): %s apply; "
                "run task=ingest with the same data settings once to store them (no bar is refetched)",
                lakehouse.url(),
                said,
            )
        rows.update(stored or {})
    markets_file = getattr(getattr(cfg, "execution", None), "markets_file", None)
    if markets_file is not None:
        rows.update(markets_file_read(str(markets_file)))
    if rows:
        absent = [s for s in symbols if s not in rows]
        empty = [s for s in symbols if s in rows and any(getattr(rows[s], f) is None for f in FIELDS)]
        for what, names in (("no exchange rules", absent), ("a rule left empty", empty)):
            if names:
                shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
                log.warning("%d symbol(s) with %s, %s stand in: %s", len(names), what, said, shown)
    return {s: rows[s].rule(default) if s in rows else default for s in symbols}


def rules_arrays(rules: Mapping[str, MarketRule], symbols: Sequence[str]) -> dict[str, npt.NDArray[np.float64]]:
    """Return ``min_notional``, ``amount_step``, ``price_tick`` as float64 arrays in the order of ``symbols``.

    Examples
    --------
    >>> rules_arrays({"A/B": MarketRule(5.0, 0.1, 0.01)}, ["A/B"])["amount_step"]
    array([0.1])
    """
    return {f: np.array([float(getattr(rules[s], f)) for s in symbols], dtype=np.float64) for f in FIELDS}


def leverage_check(leverage: float, rules: Mapping[str, MarketRule]) -> None:
    """Refuse ``portfolio.leverage`` above the maximum of a market the run trades (one line, exit 2).

    ``rules``: the traded symbols' rules (:func:`market_rules`). A market without a known maximum is
    bounded by the global ``engine.config.book.MAX_LEVERAGE`` only (the config's own check).
    """
    over = sorted(
        (r.max_leverage, s)
        for s, r in rules.items()
        if r.max_leverage is not None and leverage > r.max_leverage + 1e-12
    )
    if over:
        most, symbol = over[0]
        more = f" (and {len(over) - 1} more market(s) whose maximum is below it)" if len(over) > 1 else ""
        msg = (
            f"portfolio.leverage={leverage:g} exceeds the maximum leverage of {symbol}, {most:g}x{more}: set "
            f"portfolio.leverage={most:g} or lower (or leave {symbol} out of the universe)"
        )
        raise ConfigError(msg)
