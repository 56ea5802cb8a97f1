"""Write a run's artefacts into its output directory, each file atomically."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from engine.config import ENGINE_VERSION, RunConfig
from engine.data.lakehouse import atomic_write_bytes, parquet_write_atomic
from engine.data.storage import storage_for
from engine.outputs.rundir import (
    AUDIT_JSONL,
    CONFIG_YAML,
    EQUITY_PARQUET,
    MANIFEST_JSON,
    METRICS_JSON,
    ORDERS_PARQUET,
    TRADES_PARQUET,
    WINNERS_PARQUET,
    json_dumps,
    json_write,
    redact,
)
from engine.run.result import BacktestResult

PACKAGES = ("polars", "duckdb", "vectorbt", "numpy", "numba", "pydantic", "hydra-core", "pyarrow")


def data_fingerprint(root: str | Path, files: list[str]) -> str:
    """Hash the relative paths and bytes of the data files a run read (SHA-256).

    ``root`` is a local folder or ``s3://bucket/prefix``, read through :mod:`engine.data.storage`.
    """
    storage = storage_for(root)
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.encode())
        digest.update(hashlib.sha256(storage.read_bytes(storage.root / rel)).digest())
    return digest.hexdigest()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when absent), for manifests and benchmark results."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def metrics_write(path: Path, metrics: Mapping[str, object]) -> None:
    """``metrics.json``, stamped with the engine version (sweep summaries refuse other versions)."""
    json_write(path, {"engine_version": ENGINE_VERSION, **metrics})


def artefacts_write(out: Path, cfg: RunConfig, result: BacktestResult, config_yaml: str) -> None:
    """config.yaml, manifest.json, metrics.json, equity/orders/trades/winners parquet, audit.jsonl.

    JSON is strict (no NaN/Infinity) and secrets in URLs are redacted (:mod:`engine.outputs.rundir`).
    """
    out.mkdir(parents=True, exist_ok=True)
    root = cfg.paths.lakehouse_dir
    versions = package_versions()
    manifest = {
        "engine_version": ENGINE_VERSION,
        "config": cfg.model_dump(mode="json"),
        "data": {"files": len(result.data_files), "fingerprint": data_fingerprint(root, result.data_files)},
        "python": platform.python_version(),
        "packages": versions,
    }
    atomic_write_bytes(out / CONFIG_YAML, redact(config_yaml).encode())
    json_write(out / MANIFEST_JSON, manifest)
    metrics_write(out / METRICS_JSON, result.metrics)
    parquet_write_atomic(result.equity, out / EQUITY_PARQUET)
    parquet_write_atomic(result.orders, out / ORDERS_PARQUET)
    parquet_write_atomic(result.trades, out / TRADES_PARQUET)
    parquet_write_atomic(result.winners, out / WINNERS_PARQUET)
    lines = "".join(json_dumps(a, indent=None) + "\n" for a in result.audit)
    atomic_write_bytes(out / AUDIT_JSONL, lines.encode())
