"""The synthesis probe: one real request (`[server.probe]`) that must produce audio before the server is ready.

A health URL answering 2xx says the web framework runs, not that synthesis works: the fork's
fast_server.py logs and swallows warm-up failures. The probe sends the manifest's form, JSON or
multipart body (files read from the install tree in chunks, never whole) and reads the answer to
its end, checking status, Content-Type prefix and the least number of bytes.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple
from urllib.parse import urlencode

from cosyinstall.artifact import ProbeSpec
from cosyinstall.errors import NotReady
from cosyinstall.tree import InstallTree

__all__ = ["ProbeResult", "run_probe", "check_probe"]

_CHUNK = 1 << 16
_HEAD = 200


@dataclass(frozen=True)
class ProbeResult:
    status: Optional[int]
    content_type: str
    size: int
    head: bytes
    seconds: float
    error: str = ""


def _multipart(tree: InstallTree, probe: ProbeSpec, boundary: str) -> Tuple[List[object], int]:
    """The body as parts (bytes, or a path to stream) and its total length."""
    parts: List[object] = []
    for name, value in probe.form:
        parts.append(('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n' % (boundary, name)).encode("utf-8")
                     + value.encode("utf-8") + b"\r\n")
    for name, rel in probe.files:
        path = tree.app_path(rel)
        parts.append(('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                      'Content-Type: application/octet-stream\r\n\r\n'
                      % (boundary, name, os.path.basename(rel))).encode("utf-8"))
        parts.append(path)
        parts.append(b"\r\n")
    parts.append(("--%s--\r\n" % boundary).encode("utf-8"))
    total = sum(len(p) if isinstance(p, bytes) else os.path.getsize(str(p)) for p in parts)
    return parts, total


def _chunks(parts: List[object]) -> Iterator[bytes]:
    for part in parts:
        if isinstance(part, bytes):
            yield part
            continue
        with open(str(part), "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                yield chunk


def _body(tree: InstallTree, probe: ProbeSpec) -> Tuple[List[object], int, str]:
    if probe.files:
        boundary = "cosyinstall-" + uuid.uuid4().hex
        parts, total = _multipart(tree, probe, boundary)
        return parts, total, "multipart/form-data; boundary=" + boundary
    if probe.json_body is not None:
        data = json.dumps(json.loads(probe.json_body), ensure_ascii=False).encode("utf-8")
        return [data], len(data), "application/json"
    if probe.form:
        data = urlencode(list(probe.form)).encode("ascii")
        return [data], len(data), "application/x-www-form-urlencoded"
    return [], 0, ""


def run_probe(tree: InstallTree, probe: ProbeSpec, port: int, host: str = "127.0.0.1") -> ProbeResult:
    """Send the probe once and read the whole answer (within `probe.timeout`)."""
    started = time.monotonic()
    deadline = started + probe.timeout
    for _name, rel in probe.files:
        if not os.path.isfile(tree.app_path(rel)):
            return ProbeResult(None, "", 0, b"", 0.0, "the probe's file %s does not exist" % tree.app_path(rel))
    parts, total, ctype = _body(tree, probe)
    conn = http.client.HTTPConnection(host, port, timeout=probe.timeout)
    try:
        conn.putrequest(probe.method, probe.path)
        conn.putheader("User-Agent", "cosyinstall-probe")
        if ctype:
            conn.putheader("Content-Type", ctype)
        if probe.method != "GET" or total:
            conn.putheader("Content-Length", str(total))
        conn.endheaders()
        for chunk in _chunks(parts):
            conn.send(chunk)
        response = conn.getresponse()
        head = b""
        size = 0
        while True:
            if time.monotonic() > deadline:
                return ProbeResult(response.status, response.getheader("Content-Type") or "", size, head,
                                   time.monotonic() - started, "the answer did not end within %ds" % int(probe.timeout))
            chunk = response.read1(_CHUNK) if hasattr(response, "read1") else response.read(_CHUNK)
            if not chunk:
                break
            if len(head) < _HEAD:
                head += chunk[: _HEAD - len(head)]
            size += len(chunk)
        return ProbeResult(response.status, response.getheader("Content-Type") or "", size, head,
                           time.monotonic() - started)
    except (OSError, http.client.HTTPException, socket.timeout) as exc:
        return ProbeResult(None, "", 0, b"", time.monotonic() - started, "%s: %s" % (type(exc).__name__, exc))
    finally:
        conn.close()


def _shown(head: bytes) -> str:
    text = head.decode("utf-8", "replace")
    return repr(text[:120])


def check_probe(result: ProbeResult, probe: ProbeSpec, port: int, log_path: str) -> Optional[NotReady]:
    """The error a failed probe is (exit 5), or None when it passed."""
    what = "the synthesis probe %s http://127.0.0.1:%d%s" % (probe.method, port, probe.path)
    hint = "see %s; the probe is [server.probe] in the manifest" % log_path
    if result.status is None:
        return NotReady("%s got no HTTP answer (%s)" % (what, result.error), hint)
    problem = ""
    if not 200 <= result.status < 300:
        problem = "answered HTTP %d" % result.status
    elif result.error:
        problem = result.error
    elif probe.expect and not result.content_type.lower().startswith(probe.expect.lower()):
        problem = "answered Content-Type %r, not %s..." % (result.content_type, probe.expect)
    elif result.size < probe.min_bytes:
        problem = "answered only %d bytes, fewer than the %d expected" % (result.size, probe.min_bytes)
    if not problem:
        return None
    return NotReady("%s %s (HTTP %d, %d bytes); the answer began %s"
                    % (what, problem, result.status, result.size, _shown(result.head)), hint)
