"""The package index as a transport of the download engine: locked package files by URL.

`fetch_all` takes the files the lock pins, each with the URL uv located it at for this run
(an index, a mirror, or file://), and hands them to cosybuild.download; this module only
speaks HTTP (urllib, so the *_proxy variables apply): byte ranges, statuses worth a retry,
Retry-After, and a Content-Range or Content-Length that contradicts the lock.
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Any, Dict, Optional, Sequence

from cosyinstall.progress import Reporter
from cosyinstall.streams import CHUNK

from cosybuild.cache import Cache
from cosybuild.download import Sink, Transport, Want, download_verified
from cosybuild.transfererror import TransferError, Transient

__all__ = ["FetchItem", "fetch_all"]

# Seconds of socket silence before an attempt counts as failed (then it is retried).
TIMEOUT = 60.0
USER_AGENT = "cosybuild/0.1 (urllib)"

# Statuses that say "try again later" rather than "this will never work".
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


@dataclass(frozen=True)
class FetchItem:
    """One locked file and the URL it was found at for this run."""

    filename: str
    size: int
    sha256: str
    url: str


def fetch_all(items: Sequence[FetchItem], cache: Cache, reporter: Reporter, jobs: int = 8,
              retries: int = 3) -> Dict[str, Path]:
    """Make every item present in `cache`; return sha256 -> cached path (see download_verified)."""
    # Built per run so ProxyHandler reads the *_proxy / no_proxy variables as they are now.
    opener = urllib.request.build_opener()
    transport = Transport(
        get=lambda want, sink: _get(opener, want, sink),
        retry_hint="check the network or proxy and run again",
        relock_hint="the index serves different bytes under this name; run cosybuild lock again if that is expected",
        where=lambda want: " from " + _host(want.key),
    )
    wants = [Want(item.filename, item.url, item.size, item.sha256) for item in items]
    return download_verified(wants, transport, cache, reporter, jobs=jobs, retries=retries)


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return "a local path"
    # hostname/port only: the netloc may carry credentials, which must not reach a message.
    host = parts.hostname or "?"
    return "%s:%d" % (host, parts.port) if parts.port else host


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        inner = exc.reason
        return str(inner) if not isinstance(inner, BaseException) else _reason(inner)
    if isinstance(exc, TimeoutError):
        return "timed out after %d s without data" % TIMEOUT
    return str(exc) or type(exc).__name__


def _open(opener: urllib.request.OpenerDirector, want: Want, offset: int, sink: Sink) -> Any:
    """An http.client.HTTPResponse, or a urllib addinfourl for file:// (typeshed types both as Any)."""
    # identity: a compressing proxy would change the bytes we hash.
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = "bytes=%d-" % offset
    local = urllib.parse.urlsplit(want.key).scheme == "file"
    try:
        return opener.open(urllib.request.Request(want.key, headers=headers), timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        exc.close()
        status = "HTTP %d %s" % (exc.code, exc.reason)
        if exc.code == 416 and offset:
            # The server's file ends before our .part does: the part cannot be right.
            sink.restart()
            raise Transient(status) from None
        if exc.code in _RETRY_STATUSES or exc.code >= 500:
            raise Transient(status, _retry_after(exc.headers)) from None
        raise TransferError("could not download %s from %s: %s" % (want.label, _host(want.key), status),
                            "check that the index still serves this file, or run cosybuild lock again") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        if local or isinstance(exc, ValueError):
            # A missing local file or a malformed URL will not fix itself by waiting.
            raise TransferError("could not download %s: %s" % (want.label, _reason(exc)),
                                "check the URL found for this file") from None
        raise Transient(_reason(exc)) from None


def _get(opener: urllib.request.OpenerDirector, want: Want, sink: Sink) -> None:
    """One request: continue from what the sink holds if the server allows, else from zero."""
    offset = sink.tell()
    with _open(opener, want, offset, sink) as response:
        status = response.status or 200  # file:// responses carry no status
        if status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not offset or not match or int(match.group(1)) != offset:
                # Not the range we asked for: its bytes cannot be placed, start over.
                sink.restart()
                raise Transient("the server answered with a different byte range")
            if match.group(3) != "*":
                sink.check_total(int(match.group(3)))
        else:
            if offset:
                # The server ignored Range and sends the whole file: begin again at zero.
                sink.restart()
            length = response.headers.get("Content-Length")
            if length is not None and length.strip().isdigit():
                sink.check_total(int(length))
        _stream(response, sink)


def _stream(response: IO[bytes], sink: Sink) -> None:
    # Read up to one byte past the locked size, so an over-long body is caught, not stored.
    while sink.have <= sink.size:
        try:
            chunk = response.read(min(CHUNK, sink.size + 1 - sink.have))
        except (OSError, http.client.HTTPException) as exc:
            raise Transient(_reason(exc)) from None
        if not chunk:
            break
        sink.write(chunk)
    if sink.have < sink.size:
        raise Transient("the connection closed after %d of %d bytes" % (sink.have, sink.size))


def _retry_after(headers: Optional[Message]) -> Optional[float]:
    # Only the delta-seconds form; an HTTP date is rare for file servers and backoff covers it.
    value = headers.get("Retry-After", "") if headers is not None else ""
    value = value.strip()
    return float(value) if value.isdigit() else None
