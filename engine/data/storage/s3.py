"""A lakehouse in an S3 (or S3-compatible) bucket, ``s3://bucket/prefix``.

S3 is reached through :class:`pyarrow.fs.S3FileSystem`: pyarrow is already a dependency (no
second S3 client, no botocore/aiobotocore pins), it is maintained by Apache Arrow on the AWS SDK
for C++ (the standard credential chain, retries, timeouts), and its paths are the ones
``pyarrow.parquet`` reads. The readers use their own S3 clients with the same settings:
polars ``scan_parquet(storage_options=...)`` and DuckDB ``httpfs`` with a secret
(:meth:`S3Storage.duckdb_prepare`; the extension from the pip package built for the running DuckDB
where one is installed, :func:`engine.data.storage.duckdb_ext.extension_file`).

Settings come only from the standard AWS chain (:func:`s3_settings`): ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (MinIO, Ceph, R2, moto), else the profile files
(``AWS_PROFILE``, ``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_CONFIG_FILE``). They are held in memory
only; every message that leaves this module goes through :meth:`Storage.redact`.
"""

from __future__ import annotations

import configparser
import contextlib
import errno
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any  # Any: polars' reader options (polars_options)
from urllib.parse import urlsplit

from engine.core.errors import DataError, first_line
from engine.data.storage.base import Storage
from engine.data.storage.duckdb_ext import extension_load

if TYPE_CHECKING:
    import duckdb
    from pyarrow import NativeFile
    from pyarrow.fs import S3FileSystem

log = logging.getLogger(__name__)

RETRIES = 3
"""Attempts per S3 request (the first one included): bounded, so a dead endpoint fails in seconds."""
CONNECT_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class S3Settings:
    """The resolved standard AWS settings (never written anywhere; ``repr`` hides the secrets)."""

    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint: str | None = None

    def secrets(self) -> list[str]:
        """Return the key, secret and token that are set (what :func:`redact` hides)."""
        return [s for s in (self.key, self.secret, self.token) if s]


def _profile_files() -> tuple[dict[str, str], dict[str, str]]:
    """(credentials, config) of ``AWS_PROFILE`` (default ``default``) from the profile files."""
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    creds_file = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")).expanduser()
    config_file = Path(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")).expanduser()
    creds: dict[str, str] = {}
    config: dict[str, str] = {}
    for path, section, out in (
        (creds_file, profile, creds),
        (config_file, profile if profile == "default" else f"profile {profile}", config),
    ):
        if not path.is_file():
            continue
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        if parser.has_section(section):
            out.update(parser[section])
    return creds, config


def s3_settings() -> S3Settings:
    """Resolve the standard AWS settings: environment variables first, then the profile files."""
    env = os.environ
    creds, config = _profile_files()
    key = env.get("AWS_ACCESS_KEY_ID") or creds.get("aws_access_key_id") or config.get("aws_access_key_id")
    secret = (
        env.get("AWS_SECRET_ACCESS_KEY") or creds.get("aws_secret_access_key") or config.get("aws_secret_access_key")
    )
    token = env.get("AWS_SESSION_TOKEN") or creds.get("aws_session_token") or config.get("aws_session_token")
    if env.get("AWS_ACCESS_KEY_ID"):  # a key from the environment pairs with the environment's secret only
        secret, token = env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_SESSION_TOKEN")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or config.get("region")
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or config.get("endpoint_url")
    return S3Settings(key, secret, token, region, endpoint.rstrip("/") if endpoint else None)


def redact(text: str) -> str:
    """``text`` without the key, secret or token of the current AWS settings."""
    for secret in s3_settings().secrets():
        text = text.replace(secret, "***")
    return text


class S3Storage(Storage):
    """An S3 or S3-compatible bucket, ``s3://bucket/prefix``, through ``pyarrow.fs.S3FileSystem``.

    A PUT is atomic (the object appears whole or not at all; an upload cut short is never listed),
    so each object is written in one request. There is no lock: see the lakehouse's write rule.
    """

    def __init__(self, location: str, settings: S3Settings | None = None) -> None:
        parts = urlsplit(location)
        self.settings = settings or s3_settings()
        if parts.username or parts.password or "@" in parts.netloc:
            msg = (
                f"paths.lakehouse_dir s3://{parts.hostname or ''}{parts.path} carries credentials in the URL: "
                "remove them and use the standard AWS settings (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)"
            )
            raise DataError(self.redact(msg).replace(parts.username or "\0", "***"))
        if not parts.netloc or not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", parts.netloc):
            msg = f"paths.lakehouse_dir={location!r} names no valid bucket: use s3://BUCKET/PREFIX"
            raise DataError(msg)
        self.bucket = parts.netloc
        self.root = PurePosixPath(self.bucket, *[p for p in parts.path.split("/") if p])
        self._fs: S3FileSystem | None = None

    # ---- names and secrets ----------------------------------------------------------------------

    def url(self, path: PurePath) -> str:
        """Return ``path`` as ``s3://bucket/key``."""
        return f"s3://{path}"

    def where(self) -> str:
        """Return the location and endpoint, for messages."""
        endpoint = self.settings.endpoint or "AWS S3"
        return f"{self.url(self.root)} (endpoint {_endpoint_redacted(endpoint)})"

    def redact(self, text: str) -> str:
        """Return ``text`` with the key, secret and token of these settings replaced by ``***``."""
        for secret in self.settings.secrets():
            text = text.replace(secret, "***")
        return text

    # ---- the file system ------------------------------------------------------------------------

    @property
    def fs(self) -> S3FileSystem:
        """Return the ``pyarrow.fs.S3FileSystem`` of these settings (created on first use)."""
        if self._fs is None:
            from pyarrow import fs as pafs

            s = self.settings
            kwargs: dict[str, object] = {
                "connect_timeout": CONNECT_TIMEOUT_S,
                "request_timeout": REQUEST_TIMEOUT_S,
                "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=RETRIES),
            }
            if s.key and s.secret:
                kwargs.update(access_key=s.key, secret_key=s.secret, session_token=s.token)
            if s.region:
                kwargs["region"] = s.region
            if s.endpoint:
                ep = urlsplit(s.endpoint)
                kwargs["endpoint_override"] = ep.netloc or s.endpoint
                kwargs["scheme"] = ep.scheme or "https"
            self._fs = pafs.S3FileSystem(**kwargs)
        return self._fs

    def _error(self, exc: BaseException, what: str) -> DataError:
        detail = first_line(exc)
        return DataError(self.redact(f"{what} on {self.where()} failed: {detail}"))

    def exists(self, path: PurePath) -> bool:
        """Return True if the object ``path`` exists."""
        from pyarrow import fs as pafs

        try:
            return bool(self.fs.get_file_info(str(path)).type == pafs.FileType.File)
        except OSError as exc:
            raise self._error(exc, f"reading {self.url(path)}") from None

    def is_dir(self, path: PurePath) -> bool:
        """Return True if the prefix ``path`` holds at least one entry."""
        return bool(self.listdir(path))

    def read_bytes(self, path: PurePath) -> bytes:
        """Return the bytes of the object ``path`` (one GET stream)."""
        try:
            with self.fs.open_input_stream(str(path)) as fh:
                return bytes(fh.read())
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self._error(exc, f"reading {self.url(path)}") from None

    def write_bytes(self, path: PurePath, payload: bytes) -> None:
        """Write the object ``path`` whole in one PUT; a refused PUT is a :class:`PermissionError`."""
        try:
            with self.fs.open_output_stream(str(path)) as fh:  # one PUT when closed (small objects)
                fh.write(payload)
        except OSError as exc:
            if _refused(first_line(exc)):  # the interface's one way to say "read-only to this user"
                raise PermissionError(errno.EACCES, "Access Denied", self.url(path)) from None
            raise self._error(exc, f"writing {self.url(path)}") from None

    def listdir(self, path: PurePath) -> list[str]:
        """Return the sorted names of the entries directly under the prefix ``path``."""
        from pyarrow import fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(str(path), allow_not_found=True, recursive=False))
        except OSError as exc:
            raise self._error(exc, f"listing {self.url(path)}") from None
        return sorted(PurePosixPath(i.path).name for i in infos)

    def find(self, path: PurePath, name: str) -> list[PurePath]:
        """Return every object called ``name`` anywhere below ``path``, sorted (one recursive listing)."""
        from pyarrow import fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(str(path), allow_not_found=True, recursive=True))
        except OSError as exc:
            raise self._error(exc, f"listing {self.url(path)}") from None
        return sorted(
            PurePosixPath(i.path) for i in infos if i.type == pafs.FileType.File and PurePosixPath(i.path).name == name
        )

    def delete(self, path: PurePath) -> None:
        """Delete the object ``path`` (nothing happens if it is missing)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(str(path))

    def check(self) -> None:
        """One request: the bucket exists and these settings may list it."""
        from pyarrow import fs as pafs

        try:
            info = self.fs.get_file_info(self.bucket)
            if info.type == pafs.FileType.NotFound:
                msg = f"bucket {self.bucket!r} does not exist at {self.where()}: create it or fix paths.lakehouse_dir"
                raise DataError(msg)
            self.fs.get_file_info(pafs.FileSelector(str(self.root), allow_not_found=True, recursive=False))
        except OSError as exc:
            detail = first_line(exc)
            low = detail.lower().replace("_", "").replace(" ", "")
            if _refused(detail) or any(k in low for k in ("signature", "invalidaccesskeyid", "invalidtoken")):
                hint = "the credentials were refused: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            elif "nosuchbucket" in low or "bucketdoesnotexist" in low:
                hint = f"bucket {self.bucket!r} does not exist: create it or fix paths.lakehouse_dir"
            else:
                hint = f"the endpoint cannot be reached after {RETRIES} attempts: check AWS_ENDPOINT_URL / the network"
            msg = f"cannot use the lakehouse {self.where()}: {hint} ({detail})"
            raise DataError(self.redact(msg)) from None

    def parquet_file(self, path: PurePath) -> str | NativeFile:
        """Return the object ``path`` opened as a random-access file for ``pyarrow.parquet``."""
        return self.fs.open_input_file(str(path))

    def scan_url(self, path: PurePath) -> str:
        """Return ``path`` as ``s3://bucket/key``, the form polars and DuckDB read."""
        return self.url(path)

    def path_of(self, url: str) -> PurePath:
        """Return the path of ``s3://bucket/key`` (``PurePosixPath("bucket/key")``)."""
        return PurePosixPath(url.removeprefix("s3://"))

    def polars_options(self) -> dict[str, Any]:  # Any: spread as keyword arguments of polars' readers
        """Return the S3 ``storage_options`` for polars, from these settings."""
        s = self.settings
        opts: dict[str, object] = {}
        if s.key and s.secret:
            opts.update(aws_access_key_id=s.key, aws_secret_access_key=s.secret)
            if s.token:
                opts["aws_session_token"] = s.token
        if s.region:
            opts["aws_region"] = s.region
        if s.endpoint:
            opts["aws_endpoint_url"] = s.endpoint
            if s.endpoint.startswith("http://"):
                opts["aws_allow_http"] = "true"
        opts["max_retries"] = RETRIES - 1
        return {"storage_options": opts}

    def duckdb_prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        """DuckDB ``httpfs`` with a temporary (in-memory, never persisted) secret of these settings.

        The extension is loaded by :func:`extension_load`: from the pip package built for this
        DuckDB where one is installed (``duckdb-ext-httpfs``), else DuckDB's own ``LOAD httpfs``.
        Without a key in the settings, DuckDB's credential chain needs its ``aws`` extension too,
        loaded the same way. Raises ``duckdb.Error`` when one cannot be loaded (no package, not
        installed, no access to DuckDB's extension repository); :func:`engine.data.sql.sql_arrow` then
        reads the files through this storage instead (pyarrow follows the same chain).
        """
        extension_load(con, "httpfs")
        s = self.settings
        fields = ["TYPE s3"]
        params: list[str] = []
        if s.key and s.secret:
            fields += ["KEY_ID ?", "SECRET ?"]
            params += [s.key, s.secret]
            if s.token:
                fields.append("SESSION_TOKEN ?")
                params.append(s.token)
        else:
            extension_load(con, "aws")  # before the secret: a failure here is a duckdb.Error (the fallback)
            fields.append("PROVIDER credential_chain")
        if s.region:
            fields.append("REGION ?")
            params.append(s.region)
        if s.endpoint:
            ep = urlsplit(s.endpoint)
            fields += ["ENDPOINT ?", "URL_STYLE 'path'", f"USE_SSL {'false' if ep.scheme == 'http' else 'true'}"]
            params.append(ep.netloc or s.endpoint)
        # CREATE SECRET takes no prepared parameters: values are quoted literals, never logged
        sql = "CREATE OR REPLACE TEMPORARY SECRET qe_lakehouse (" + ", ".join(fields) + ")"
        for value in params:
            sql = sql.replace("?", "'" + value.replace("'", "''") + "'", 1)
        try:
            con.execute(sql)
        except Exception as exc:  # the statement holds the secret: never let it into a message
            if not (s.key and s.secret) and "Validation Failure" in str(exc):
                msg = (
                    f"no AWS credentials for {self.where()}: neither the AWS_* settings, the profile files nor "
                    "DuckDB's credential chain (SSO, container or instance role) has any; set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
                )
                raise DataError(msg) from None
            first = " ".join(str(exc).split())  # one line
            raise DataError(self.redact(f"DuckDB refused the S3 settings for {self.where()}: {first}")) from None
        con.execute(f"SET http_retries = {RETRIES - 1}")


def _endpoint_redacted(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.username or parts.password:
        return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"
    return endpoint


def _refused(detail: str) -> bool:
    """Return True if an S3 error line says the request was refused (HTTP 403, ``AccessDenied``)."""
    low = detail.lower().replace("_", "").replace(" ", "")
    return "accessdenied" in low or "forbidden" in low
