"""The data contract: every backend and both storages pass the same cases.

Backends: the generator, the exchange (ccxt against the local Binance-format server of
tests/exchange_server.py), and files (a freqtrade folder of feather files and a folder of csv
files this module writes); storages: a local folder and S3 (moto's server on 127.0.0.1, as in
tests/test_s3_lakehouse.py). The same bars in give the same lakehouse out (every stored partition
read back and compared exactly with the generator's local store, two intervals and two quotes);
the same fault gives the same error (type and one line: a duplicate timestamp, a non-finite
price, high below low, a read-only destination) or the same outcome (a gap, a short history, an
empty symbol) whatever the backend. The shared work that makes them agree is done once above the
backends (``DataSource.ohlcv_load``, ``IngestionService``); the last tests check that nothing
above the interfaces branches on a backend's name or class.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from exchange_server import ExchangeServer
from polars.testing import assert_frame_equal

from engine.config import CcxtData, FilesData
from engine.core.errors import DataError
from engine.core.units import DAY_MS
from engine.data.ingest import IngestionService, IngestReport
from engine.data.lakehouse import Lakehouse, store_open
from engine.data.sources.base import DataSource
from engine.data.sources.synthetic import SyntheticSource
from engine.data.storage import LocalStorage

# one worker holds the module's S3 server; the S3 cases are slow like tests/test_s3_lakehouse.py's
pytestmark = pytest.mark.xdist_group("data_contract")

QUOTES = {"USDT": 11, "EUR": 12}  # quote -> generator seed: two quotes, two different sets of bars
FIRST, LAST = "2024-01-01", "2024-03-31"
START = SyntheticSource(11, 3, FIRST, LAST).start_ms
END = START + 60 * DAY_MS  # the asked span: the sources hold 91 days, so every backend is trimmed
INTERVALS = {"bars": "1d", "mtf": "4h"}  # the universe's base bars and the finer bars of winners
BACKENDS = ("generator", "exchange", "files-freqtrade", "files-csv")
STORAGES = ("local", pytest.param("s3", marks=pytest.mark.slow))
BUCKET = "qe-contract"

Fault = Callable[[str, str, pl.DataFrame], pl.DataFrame]


def _clean(symbol: str, interval: str, bars: pl.DataFrame) -> pl.DataFrame:
    return bars


class Served(SyntheticSource):
    """The generator with a fault applied to the bars it serves (``fault(symbol, interval, bars)``)."""

    def __init__(self, quote: str, fault: Fault = _clean) -> None:
        super().__init__(QUOTES[quote], 3, FIRST, LAST, quote)
        self.fault = fault

    def ohlcv_fetch(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        """Return the faulty bars of the whole history that open in ``[start_ms, end_ms)``."""
        bars = self.fault(symbol, interval, super().ohlcv_fetch(symbol, interval, 0, 2**62))
        ts = pl.col("timestamp").dt.epoch("ms")
        return bars.filter((ts >= start_ms) & (ts < end_ms))

    def history(self, symbol: str, interval: str) -> pl.DataFrame:
        """Return every bar served of ``(symbol, interval)``, as a file would hold them."""
        return self.ohlcv_fetch(symbol, interval, 0, 2**62)


# ---- the backends, each serving the bars of one Served generator --------------------------------


def _files_write(served: Served, folder: Path, fmt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for symbol in served.symbols():
        for interval in INTERVALS.values():
            bars = served.history(symbol, interval)
            stem = f"{symbol.replace('/', '_')}-{interval}"
            if fmt == "freqtrade":  # freqtrade writes feather through pandas: `date`, datetime64[ns, UTC]
                bars.rename({"timestamp": "date"}).with_columns(pl.col("date").dt.cast_time_unit("ns")).write_ipc(
                    folder / f"{stem}.feather"
                )
            else:  # csv: epoch milliseconds and the floats' shortest round-trip text
                bars.with_columns(pl.col("timestamp").dt.epoch("ms")).write_csv(folder / f"{stem}.csv")


@contextlib.contextmanager
def backend(name: str, served: Served, tmp: Path) -> Iterator[DataSource]:
    """The source of backend ``name`` serving ``served``'s bars (a folder it writes, a server it starts)."""
    if name == "generator":
        yield served
    elif name == "exchange":
        with ExchangeServer(served, extra_markets=()) as server:
            cfg = CcxtData(
                exchange="binance",
                symbols=served.symbols(),
                quote=served.quote,
                api_url=server.api_url,
                rate_limit_ms=0,
                limit=1000,
                timeout_ms=5000,
                max_retries=0,
            )
            from engine.data.sources.ccxt_source import CcxtSource

            with CcxtSource(cfg, sleep=lambda s: None, backoff_base_s=0.0) as src:
                yield src
    else:
        fmt = name.removeprefix("files-")
        folder = tmp / f"import-{fmt}"
        for quote in QUOTES:  # both quotes in one folder, as a user's download holds them
            _files_write(served if quote == served.quote else Served(quote), folder, fmt)
        from engine.data.sources.files import FilesSource

        yield FilesSource(FilesData(path=str(folder), quote=served.quote))


# ---- the storages ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server() -> Iterator[object]:
    pytest.importorskip("moto.server", reason="needs moto[server] (the test extra)")
    from s3_server import s3_serving

    with s3_serving(BUCKET) as server:
        yield server


@pytest.fixture
def lake_root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Where the case's lakehouse lives: a local folder, or a fresh prefix of the S3 bucket."""
    if request.param == "local":
        yield str(tmp_path / "lake")
        return
    server = request.getfixturevalue("s3_server")
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    for key, value in server.env().items():  # type: ignore[attr-defined]
        monkeypatch.setenv(key, value)
    yield f"s3://{BUCKET}/{request.node.name.replace('[', '-').replace(']', '').replace('/', '_')}"


def ingest(source: DataSource, root: str) -> tuple[Lakehouse, list[IngestReport]]:
    """The universe's daily bars and the finer bars of every symbol over the asked span."""
    lake = store_open(root, source.identity())
    service = IngestionService(lake, source)
    symbols = source.symbols()
    return lake, [
        service.fetch_universe(symbols, START, END, INTERVALS["bars"]),
        service.fetch_mtf_for_candidates(symbols, [INTERVALS["mtf"]], START, END),
    ]


def stored(lake: Lakehouse) -> dict[tuple[str, str, str], tuple[pl.DataFrame, list[tuple[int, int]]]]:
    """Every partition of the store, read back: its bars and its coverage."""
    return {
        (kind, interval, symbol): (lake.read(kind, interval, symbol), lake.coverage(kind, interval, symbol))
        for kind, interval in INTERVALS.items()
        for symbol in lake.symbols(kind, interval)
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[tuple[str, str, str], object]]:
    """The generator's own local store per quote: what every backend and storage must give."""
    root = tmp_path_factory.mktemp("reference")
    return {q: stored(ingest(Served(q), str(root))[0]) for q in QUOTES}  # type: ignore[misc]


# ---- the same bars give the same lakehouse ---------------------------------------------------------


@pytest.mark.parametrize("lake_root", STORAGES, indirect=True)
@pytest.mark.parametrize("name", BACKENDS)
def test_the_same_bars_give_the_same_lakehouse(
    name: str, lake_root: str, tmp_path: Path, reference: dict[str, dict[tuple[str, str, str], object]]
) -> None:
    for quote in QUOTES:
        served = Served(quote)
        with backend(name, served, tmp_path) as source:
            lake, reports = ingest(source, lake_root)
            again = IngestionService(lake, source).fetch_mtf_for_candidates(source.symbols(), ["4h"], START, END)
        got, want = stored(lake), reference[quote]
        assert sorted(got) == sorted(want) and len(got) == 2 * 3, name
        for key, (bars, coverage) in got.items():
            ref_bars, ref_coverage = want[key]  # type: ignore[misc]
            assert_frame_equal(bars, ref_bars, check_exact=True)
            assert coverage == ref_coverage == [(START, END)], key
        # the generator's bars, trimmed to the span: 60 daily and 360 four-hour bars per symbol
        assert [r.bars_read for r in reports] == [3 * 60, 3 * 360]
        assert [r.rows_written for r in reports] == [3 * 60, 3 * 360]
        assert all(not r.gaps for r in reports)
        assert again.fetched == []  # covered: a second ask fetches nothing from any backend


# ---- the same faults give the same error -----------------------------------------------------------

SYMBOL = "ETH"
K = 37  # the four-hour bar the fault hits (inside the span)


def _at(bars: pl.DataFrame, k: int) -> pl.Expr:
    return pl.col("timestamp") == bars.get_column("timestamp")[k]


def _set(bars: pl.DataFrame, k: int, **values: float) -> pl.DataFrame:
    hit = _at(bars, k)
    return bars.with_columns([pl.when(hit).then(pl.lit(v)).otherwise(pl.col(c)).alias(c) for c, v in values.items()])


def _on(change: Callable[[pl.DataFrame], pl.DataFrame]) -> Fault:
    """A fault on the four-hour bars of ETH only (the daily bars stay clean)."""

    def fault(symbol: str, interval: str, bars: pl.DataFrame) -> pl.DataFrame:
        return change(bars) if symbol.startswith(SYMBOL + "/") and interval == "4h" else bars

    return fault


ERRORS: dict[str, tuple[Fault, str]] = {
    "duplicate timestamp": (
        _on(lambda b: pl.concat([b, b.slice(K, 1).with_columns(pl.col("volume") * 2.0)]).sort("timestamp")),
        "duplicate timestamp with different values at {ts} (2 bar(s))",
    ),
    "non-finite price": (
        _on(lambda b: _set(b, K, close=float("inf"), high=float("inf"))),
        "infinite price or volume at {ts} (1 bar(s))",
    ),
    "NaN price": (_on(lambda b: _set(b, K, open=float("nan"))), "NaN or missing value at {ts} (1 bar(s))"),
    "high below low": (
        _on(lambda b: _set(b, K, high=float(b["low"][K]) * 0.5)),
        "high below low/open/close or low above open/close at {ts} (1 bar(s))",
    ),
}


@pytest.mark.parametrize("fault", list(ERRORS))
@pytest.mark.parametrize("name", BACKENDS)
def test_the_same_fault_gives_the_same_error(name: str, fault: str, tmp_path: Path) -> None:
    """One line, the same words whatever the backend (files add the file they read), nothing written."""
    change, problem = ERRORS[fault]
    served = Served("USDT", change)
    ts = Served("USDT").ohlcv_fetch(f"{SYMBOL}/USDT", "4h", 0, 2**62)["timestamp"][K]
    with backend(name, served, tmp_path) as source:
        lake = store_open(str(tmp_path / "lake"), source.identity())
        with pytest.raises(DataError) as info:
            IngestionService(lake, source).fetch_mtf_for_candidates([f"{SYMBOL}/USDT"], ["4h"], START, END)
    text = str(info.value)
    assert type(info.value) is DataError and "\n" not in text
    core = re.sub(r" \(file [^()]+\)$", "", text)  # the files backend names the file it read
    assert core == f"{SYMBOL}/USDT 4h: {problem.format(ts=ts)}; fix or remove these bars", text
    assert (core == text) == (not name.startswith("files")), text
    assert lake.read("mtf", "4h", f"{SYMBOL}/USDT").height == 0


def _gap(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.filter(~_at(bars, K))


def _short(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.filter(pl.col("timestamp").dt.epoch("ms") >= START + 20 * DAY_MS)  # listed on day 20


def _empty(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.filter(pl.col("timestamp").dt.epoch("ms") >= END)  # bars only after the asked span


OUTCOMES: dict[str, tuple[Callable[[pl.DataFrame], pl.DataFrame], int]] = {
    "gap": (_gap, 1),  # (the change, the missing bars reported inside the range read)
    "short history": (_short, 0),
    "empty symbol": (_empty, 0),
}


@pytest.mark.parametrize("fault", list(OUTCOMES))
@pytest.mark.parametrize("name", BACKENDS)
def test_the_same_gap_short_or_empty_history_gives_the_same_store(
    name: str, fault: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No error: the bars there are stored, the span is covered, a gap is counted and said, by every backend."""
    change, gaps = OUTCOMES[fault]
    served = Served("USDT", _on(change))
    symbol = f"{SYMBOL}/USDT"
    want = change(Served("USDT").ohlcv_fetch(symbol, "4h", START, END))
    with caplog.at_level(logging.WARNING), backend(name, served, tmp_path) as source:
        lake = store_open(str(tmp_path / "lake"), source.identity())
        report = IngestionService(lake, source).fetch_mtf_for_candidates([symbol], ["4h"], START, END)
    assert_frame_equal(lake.read("mtf", "4h", symbol), want, check_exact=True)
    assert lake.coverage("mtf", "4h", symbol) == [(START, END)]
    assert report.bars_read == want.height == {"gap": 359, "short history": 240, "empty symbol": 0}[fault]
    assert report.gaps == ({(symbol, "4h"): gaps} if gaps else {})
    said = [r.getMessage() for r in caplog.records if "missing bar(s)" in r.getMessage()]
    assert said == ([f"{symbol} 4h: {gaps} missing bar(s) inside the range read (a bar resampled from finer ones "
                     "needs all of them)"] if gaps else [])  # fmt: skip


@pytest.mark.parametrize("lake_root", STORAGES, indirect=True)
@pytest.mark.parametrize("name", BACKENDS)
def test_a_read_only_destination_gives_the_same_error(
    name: str, lake_root: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lakehouse this user may not write: one line naming the partition and the fix, nothing written."""
    if lake_root.startswith("s3://"):  # the bucket refuses every write under the case's prefix (HTTP 403)
        server = request.getfixturevalue("s3_server")
        prefix = lake_root.removeprefix("s3://")
        server.read_only.add(prefix)  # type: ignore[attr-defined]
        request.addfinalizer(lambda: server.read_only.discard(prefix))  # type: ignore[attr-defined]
    elif os.geteuid() == 0:  # root writes through any mode: the folder answers as a read-only one does

        def refused(self: LocalStorage, path: Path, payload: bytes) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

        monkeypatch.setattr(LocalStorage, "write_bytes", refused)
    else:
        Path(lake_root).mkdir()
        Path(lake_root).chmod(0o555)
        request.addfinalizer(lambda: Path(lake_root).chmod(0o755))
    with backend(name, Served("USDT"), tmp_path) as source:
        with pytest.raises(DataError) as info:
            ingest(source, lake_root)
        lake = store_open(lake_root, source.identity())
    text = str(info.value)
    part = lake.url(lake.partition("bars", "1d", "BTC/USDT"))
    pattern = (
        rf"cannot write the partition {re.escape(part)} \(BTC/USDT 1d\): it lacks 2024-01-01 00:00 to "
        r"2024-03-01 00:00, which this run needs, and the lakehouse is read-only to this user \((Permission|Access) "
        r"[Dd]enied: [^()]+\): add that data once as a user who can write the lakehouse, or set "
        r"paths.lakehouse_dir to a folder you own"
    )
    assert re.fullmatch(pattern, text), text
    assert lake.symbols("bars", "1d") == [] and lake.read("bars", "1d", "BTC/USDT").height == 0


# ---- nothing above the interfaces branches on a backend ------------------------------------------

ENGINE = Path(__file__).resolve().parent.parent / "engine"
NAMES = {"synthetic", "generator", "ccxt", "files", "s3", "local"}
"""Backend names: data.source values, the generator, and the storages."""
CLASSES = {
    "SyntheticSource",
    "CcxtSource",
    "FilesSource",
    "LocalStorage",
    "S3Storage",
    "SyntheticData",
    "CcxtData",
    "FilesData",
}
ALLOWED: dict[str, set[str] | None] = {
    "engine/data/sources/": None,  # the backends themselves, and registry.py: the one place data.source picks one
    "engine/data/storage/": None,  # the storage backends, and storage_for: the one place a location picks one
    "engine/config/": {"synthetic", "ccxt", "files"},  # the data settings' discriminated union defines the tags
}
"""Where a branch on a backend is allowed, and on which names (None: any)."""


def _is_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        value = node.value
        if value in NAMES or re.match(r"^[a-z0-9]+://", value):
            return value
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        found = [_is_name(e) for e in node.elts]
        return next((f for f in found if f), None)
    return None


def _is_class(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name) and node.id in CLASSES:
        return node.id
    if isinstance(node, ast.Attribute) and node.attr in CLASSES:
        return node.attr
    if isinstance(node, ast.Tuple):
        return next((c for c in map(_is_class, node.elts) if c), None)
    return None


def backend_branches(source: str) -> list[tuple[int, str]]:
    """Every branch on a backend name or class in ``source``: comparisons, prefix tests, isinstance, match."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                if name := _is_name(operand):
                    found.append((node.lineno, name))
        elif isinstance(node, ast.Call):
            func = node.func
            prefix = isinstance(func, ast.Attribute) and func.attr in ("startswith", "endswith", "removeprefix")
            if prefix and node.args and (name := _is_name(node.args[0])):
                found.append((node.lineno, name))
            typed = isinstance(func, ast.Name) and func.id in ("isinstance", "issubclass") and len(node.args) == 2
            if typed and (cls := _is_class(node.args[1])):
                found.append((node.lineno, cls))
        elif isinstance(node, ast.MatchValue) and (name := _is_name(node.value)):
            found.append((node.lineno, name))
    return found


def test_nothing_above_the_interfaces_branches_on_a_backend() -> None:
    """Outside the allowed places no module compares with a backend's name, tests a URL scheme or a backend class."""
    offending = []
    for path in sorted(ENGINE.rglob("*.py")):
        rel = path.relative_to(ENGINE.parent).as_posix()
        allowed = next((names for place, names in ALLOWED.items() if rel.startswith(place)), set())
        for line, name in backend_branches(path.read_text()):
            if allowed is not None and name not in allowed:
                offending.append(f"{rel}:{line} branches on {name!r}")
    assert not offending, offending


def test_the_branch_check_sees_what_it_must() -> None:
    planted = """
if cfg.data.source == "ccxt": pass
if data.source not in ("synthetic", "ccxt"): pass
if location.startswith("s3://"): pass
if isinstance(storage, LocalStorage): pass
if isinstance(source, (FilesSource, object)): pass
if kind == "bars" or name.endswith(".parquet"): pass
"""
    assert backend_branches(planted) == [
        (2, "ccxt"),
        (3, "synthetic"),
        (4, "s3://"),
        (5, "LocalStorage"),
        (6, "FilesSource"),
    ]


@pytest.mark.parametrize("name", BACKENDS)
def test_a_symbol_the_backend_does_not_serve_is_a_data_error(name: str, tmp_path: Path) -> None:
    """Asking any backend for a symbol it does not have is one line of the same error type, nothing written."""
    served = Served("USDT")
    with backend(name, served, tmp_path) as source:
        lake = store_open(str(tmp_path / "lake"), source.identity())
        with pytest.raises(DataError) as info:
            IngestionService(lake, source).fetch_mtf_for_candidates(["ZZZ/USDT"], ["4h"], START, END)
    text = str(info.value)
    assert type(info.value) is DataError and "\n" not in text and "ZZZ/USDT" in text, text
    assert lake.read("mtf", "4h", "ZZZ/USDT").height == 0
