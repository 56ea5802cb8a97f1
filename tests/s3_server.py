"""A real S3 endpoint for the tests: moto's server on 127.0.0.1, with a log of every request."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

KEY_ID = "AKIAQEENGINETEST0001"
SECRET = "qe-secret-Zx9vT4pLm2Qw8RsY6uHb3NcJ"  # grepped for in every artefact: must never appear
REGION = "us-east-1"


DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message>'
    b"<RequestId>qe</RequestId><HostId>qe</HostId></Error>"
)
"""What S3 answers a write the bucket policy refuses (HTTP 403)."""


@dataclass
class Request:
    method: str
    path: str
    query: str
    agent: str = ""  # the client's User-Agent: tells DuckDB httpfs from pyarrow's AWS SDK


@dataclass
class S3Server(ThreadedMotoServer):
    """``ThreadedMotoServer(ip_address="127.0.0.1", port=0)`` whose WSGI app logs each request."""

    requests: list[Request] = field(default_factory=list)
    read_only: set[str] = field(default_factory=set)
    """Key prefixes (``bucket/prefix``) whose writes are refused with S3's 403 ``AccessDenied``."""

    def __post_init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._lock = threading.Lock()

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)

        def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            with self._lock:
                self.requests.append(
                    Request(
                        environ["REQUEST_METHOD"],
                        unquote(environ.get("PATH_INFO", "")),
                        environ.get("QUERY_STRING", ""),
                        environ.get("HTTP_USER_AGENT", ""),
                    )
                )
            path = unquote(environ.get("PATH_INFO", "")).lstrip("/")
            if environ["REQUEST_METHOD"] in ("PUT", "POST", "DELETE") and any(
                path.startswith(p) for p in self.read_only
            ):
                start_response("403 Forbidden", [("Content-Type", "application/xml")])
                return [DENIED]
            return app(environ, start_response)

        self._server = make_server(self._ip_address, self._port, logged, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """The standard AWS settings of this endpoint (what a user exports)."""
        return {
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def bucket_create(self, name: str) -> None:
        import boto3

        client = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
        )
        client.create_bucket(Bucket=name)

    def mark(self) -> int:
        with self._lock:
            return len(self.requests)

    def since(self, mark: int) -> list[Request]:
        with self._lock:
            return list(self.requests[mark:])


@contextlib.contextmanager
def s3_serving(bucket: str) -> Iterator[S3Server]:
    """A started server holding an empty ``bucket``, stopped on exit (werkzeug's request lines silenced)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = S3Server()
    server.start()
    server.bucket_create(bucket)
    try:
        yield server
    finally:
        server.stop()
