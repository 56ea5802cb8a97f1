"""Locations given as URLs (``scheme://authority/path``): whether one carries credentials, and how to show it.

A location such as ``paths.lakehouse_dir`` may be a local path or a URL of a storage backend;
whatever the backend, credentials typed into its authority (``user:secret@``) are refused and never
echoed: the settings of each backend come from its own standard chain, never from the URL.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def url_has_credentials(location: str) -> bool:
    """Return True when ``location`` is a URL whose authority carries credentials (``user[:secret]@host``).

    Examples
    --------
    >>> url_has_credentials("s3://KEY:SECRET@bucket/prefix"), url_has_credentials("s3://bucket/prefix")
    (True, False)
    >>> url_has_credentials("/data/lake@home")
    False
    """
    scheme, sep, rest = location.partition("://")
    return bool(sep and scheme) and "@" in rest.split("/", 1)[0]


def url_shown(location: str) -> str:
    """Return ``location`` with the credentials of its authority replaced by ``***``.

    Examples
    --------
    >>> url_shown("s3://KEY:SECRET@bucket/prefix/x")
    's3://***@bucket/prefix/x'
    """
    if not url_has_credentials(location):
        return location
    parts = urlsplit(location)
    host = parts.netloc.rsplit("@", 1)[1]
    rest = location.split("://", 1)[1].split("/", 1)[1:] or [""]
    return f"{parts.scheme}://***@{host}/{rest[0]}"
