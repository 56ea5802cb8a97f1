"""engine.outputs.artefacts, directly: the data fingerprint by hand, strict and stamped metrics,
and the files artefacts_write leaves in a run directory (their bytes read back)."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.config import ENGINE_VERSION, RunConfig
from engine.outputs import rundir
from engine.outputs.artefacts import artefacts_write, data_fingerprint, metrics_write, package_versions
from engine.run.result import BacktestResult


def _store(root: Path, files: dict[str, bytes]) -> None:
    for rel, payload in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(payload)


def test_data_fingerprint_is_the_hash_of_names_and_contents(tmp_path: Path) -> None:
    files = {
        "ohlcv/interval=1d/symbol=BTC_USDT/data.parquet": b"btc",
        "ohlcv/interval=1d/symbol=ETH_USDT/data.parquet": b"eth",
    }
    _store(tmp_path, files)
    names = sorted(files)
    expected = hashlib.sha256()
    for rel in names:  # by hand: each relative path, then the SHA-256 of its bytes
        expected.update(rel.encode())
        expected.update(hashlib.sha256(files[rel]).digest())
    assert data_fingerprint(tmp_path, names) == expected.hexdigest()
    assert data_fingerprint(str(tmp_path), names) == expected.hexdigest()
    assert data_fingerprint(tmp_path, names[::-1]) != expected.hexdigest()  # the order the run read them
    assert data_fingerprint(tmp_path, []) == hashlib.sha256().hexdigest()
    (tmp_path / names[0]).write_bytes(b"btc, rewritten")
    assert data_fingerprint(tmp_path, names) != expected.hexdigest()


def test_package_versions_names_an_absent_package_none() -> None:
    versions = package_versions(("numpy", "polars", "no-such-package-qe"))
    assert versions == {"numpy": np.__version__, "polars": pl.__version__, "no-such-package-qe": None}


def test_metrics_are_strict_json_stamped_and_redacted(tmp_path: Path) -> None:
    path = tmp_path / rundir.METRICS_JSON
    metrics_write(path, {"sharpe": 1.25, "n_trades": np.int64(7), "source": "http://user:pw@example.com/x"})
    assert json.loads(path.read_text()) == {
        "engine_version": ENGINE_VERSION,
        "n_trades": 7,
        "sharpe": 1.25,
        "source": "http://***@example.com/x",
    }
    assert path.read_text().index('"engine_version"') < path.read_text().index('"sharpe"')  # keys sorted
    with pytest.raises(ValueError, match="JSON"):
        metrics_write(tmp_path / "nan.json", {"sharpe": math.nan})  # never a bare NaN in metrics.json
    assert not (tmp_path / "nan.json").exists()


def _result(files: list[str]) -> BacktestResult:
    ts = [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 3)]
    equity = pl.DataFrame({"timestamp": ts, "equity": [100.0, 101.5, 99.25]})
    orders = pl.DataFrame({"symbol": ["BTC/USDT"], "size": [0.5], "price": [42_000.0]})
    trades = pl.DataFrame({"symbol": ["BTC/USDT"], "pnl": [-12.5]})
    winners = pl.DataFrame({"window": [0], "symbol": ["BTC/USDT"], "weight": [1.0]})
    audit = [{"window": 0, "winners": ["BTC/USDT"]}, {"window": 1, "note": "token=abc"}]
    return BacktestResult(
        metrics={"sharpe": 0.5, "total_return": -0.0075},
        equity=equity,
        orders=orders,
        trades=trades,
        winners=winners,
        audit=audit,
        timings={},
        data_files=files,
        benchmark=pl.DataFrame(),
    )


def test_artefacts_write_leaves_every_file_and_nothing_else(tmp_path: Path) -> None:
    lake, out = tmp_path / "lake", tmp_path / "run"
    files = {"ohlcv/interval=1d/symbol=BTC_USDT/data.parquet": b"bars"}
    _store(lake, files)
    cfg = RunConfig.model_validate({"paths": {"lakehouse_dir": str(lake), "output_dir": str(out)}})
    result = _result(sorted(files))
    artefacts_write(out, cfg, result, "data:\n  api_url: https://me:secret@api.example.com\n")

    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            rundir.CONFIG_YAML,
            rundir.MANIFEST_JSON,
            rundir.METRICS_JSON,
            rundir.EQUITY_PARQUET,
            rundir.ORDERS_PARQUET,
            rundir.TRADES_PARQUET,
            rundir.WINNERS_PARQUET,
            rundir.AUDIT_JSONL,
        ]
    )  # no temporary file left behind, and every name is one ARTEFACTS lists (a rerun removes them)
    assert {p.name for p in out.iterdir()} <= set(rundir.ARTEFACTS)
    assert (out / rundir.CONFIG_YAML).read_text() == "data:\n  api_url: https://***@api.example.com\n"
    manifest = json.loads((out / rundir.MANIFEST_JSON).read_text())
    assert manifest["engine_version"] == ENGINE_VERSION
    assert manifest["data"] == {"files": 1, "fingerprint": data_fingerprint(lake, sorted(files))}
    assert manifest["config"] == json.loads(json.dumps(cfg.model_dump(mode="json")))
    assert set(manifest["packages"]) == {
        "polars",
        "duckdb",
        "vectorbt",
        "numpy",
        "numba",
        "pydantic",
        "hydra-core",
        "pyarrow",
    }
    assert json.loads((out / rundir.METRICS_JSON).read_text()) == {"engine_version": ENGINE_VERSION, **result.metrics}
    for name, frame in [
        (rundir.EQUITY_PARQUET, result.equity),
        (rundir.ORDERS_PARQUET, result.orders),
        (rundir.TRADES_PARQUET, result.trades),
        (rundir.WINNERS_PARQUET, result.winners),
    ]:
        assert pl.read_parquet(out / name).equals(frame), name
    lines = (out / rundir.AUDIT_JSONL).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"window": 0, "winners": ["BTC/USDT"]},
        {"note": "token=abc", "window": 1},
    ]
    assert lines[0] == '{"window": 0, "winners": ["BTC/USDT"]}'  # one compact line per record
