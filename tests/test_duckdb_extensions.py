"""DuckDB extensions from pip packages: found for the running DuckDB only, loaded by path, and a
missing one is a ``duckdb.Error`` (the pyarrow fallback), never a failed run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from engine.core.errors import DataError
from engine.data.storage import S3Settings, S3Storage, extension_file, extension_load


@pytest.fixture(autouse=True)
def _fresh_lookup() -> Iterator[None]:
    extension_file.cache_clear()
    yield
    extension_file.cache_clear()


def _fake_package(site: Path, version: str) -> Path:
    """A pip-installed ``duckdb-ext-qefake`` laid out as duckdb-ext-httpfs is (dist-info with a RECORD)."""
    rel = f"duckdb_ext/extensions/v{version}/linux_amd64/qefake.duckdb_extension"
    (site / rel).parent.mkdir(parents=True)
    (site / rel).write_bytes(b"not really an extension")
    info = site / "duckdb_ext_qefake-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: duckdb-ext-qefake\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{rel},,\nduckdb_ext_qefake-1.0.dist-info/METADATA,,\n")
    return site / rel


def test_an_extension_package_counts_only_for_the_duckdb_it_was_built_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _fake_package(tmp_path, duckdb.__version__)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert extension_file("qefake") == path
    assert extension_file("qefake", "0.9.0") is None
    assert extension_file("qe_no_such_extension") is None


def test_a_package_for_another_duckdb_is_not_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, "0.9.0")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert extension_file("qefake") is None
    with pytest.raises(duckdb.Error):  # LOAD qefake: DuckDB's own folder has none either
        extension_load(duckdb.connect(), "qefake")


def test_httpfs_from_its_package_is_loaded_by_path() -> None:
    path = extension_file("httpfs")
    if path is None:
        pytest.skip(f"no httpfs package for DuckDB {duckdb.__version__}")
    con = duckdb.connect()
    assert extension_load(con, "httpfs") == str(path)
    loaded = con.sql("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'").fetchall()
    assert loaded == [(True,)]


def test_no_credentials_anywhere_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No key in the settings: DuckDB's credential chain (its ``aws`` extension, from the s3 extra)
    is asked; when it finds nothing either, one line says where credentials come from."""
    if extension_file("httpfs") is None or extension_file("aws") is None:
        pytest.skip(f"no httpfs / aws packages for DuckDB {duckdb.__version__} (the s3 extra installs them)")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup from a test
    storage = S3Storage("s3://qe-lake/x", S3Settings(region="us-east-1", endpoint="http://127.0.0.1:9"))
    with pytest.raises(DataError) as info:
        storage.duckdb_prepare(duckdb.connect())
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no AWS credentials for s3://qe-lake/x") and "AWS_ACCESS_KEY_ID" in message


def test_without_the_aws_extension_a_keyless_read_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Where ``aws`` does not load, preparing the connection is a ``duckdb.Error``, the signal for
    the pyarrow reader, not the one-line ``DataError`` that stops a run."""
    import engine.data.storage.duckdb_ext as storage_module

    real = storage_module.extension_file
    monkeypatch.setattr(storage_module, "extension_file", lambda name: None if name == "aws" else real(name))
    con = duckdb.connect()
    con.execute(f"SET extension_directory='{tmp_path}'")  # no aws installed there
    con.execute("SET autoinstall_known_extensions=false")  # and none fetched
    storage = S3Storage("s3://qe-lake/x", S3Settings(region="us-east-1", endpoint="http://127.0.0.1:9"))
    with pytest.raises(duckdb.Error):
        storage.duckdb_prepare(con)
