"""A package index on 127.0.0.1 for tests: real wheels and sdists made in the test, served
through the simple API (PEP 503 HTML, PEP 691/700 JSON with sizes) with byte ranges.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import tarfile
import textwrap
import threading
import urllib.parse
from pathlib import Path

from support import make_wheel, wheel_metadata as _metadata, dist_name as _dist
from typing import Dict, Iterable, List, Optional

__all__ = ["LoopIndex", "make_wheel", "make_sdist", "uv_wheel", "write_manifest", "BACKEND", "normalize"]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def uv_wheel(directory: Path) -> Path:
    """A stand-in for uv's manylinux wheel at the builder's uv version, which every lock pins.

    Packing only copies its binary into the artifact; the tests that install use real uv.
    """
    from cosybuild.uvtool import uv_version

    version = uv_version()
    script = "#!/bin/sh\necho 'uv stand-in from loopindex'\n"
    return make_wheel(directory, "uv", version, tag="py3-none-manylinux_2_17_x86_64",
                      extra={"uv-%s.data/scripts/uv" % version: script})


# An in-tree PEP 517 backend: the sdist builds with nothing from the index, as a real one does
# with setuptools; it writes a pure wheel holding the sdist's module.
BACKEND = textwrap.dedent('''
    import base64, hashlib, os, zipfile
    NAME, VERSION, REQUIRES, TAG = {name!r}, {version!r}, {requires!r}, {tag!r}
    DIST = NAME.replace("-", "_")
    def _wheel_name():
        return "%s-%s-%s.whl" % (DIST, VERSION, TAG)
    def get_requires_for_build_wheel(config_settings=None):
        return []
    def prepare_metadata_for_build_wheel(directory, config_settings=None):
        info = os.path.join(directory, "%s-%s.dist-info" % (DIST, VERSION))
        os.makedirs(info)
        with open(os.path.join(info, "METADATA"), "w") as f:
            f.write(_metadata())
        return os.path.basename(info)
    def _metadata():
        lines = ["Metadata-Version: 2.1", "Name: " + NAME, "Version: " + VERSION]
        return "\\n".join(lines + ["Requires-Dist: " + r for r in REQUIRES]) + "\\n"
    def build_wheel(directory, config_settings=None, metadata_directory=None):
        info = "%s-%s.dist-info" % (DIST, VERSION)
        src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), DIST.lower(), "__init__.py")).read()
        files = {{DIST.lower() + "/__init__.py": src, info + "/METADATA": _metadata(),
                 info + "/WHEEL": "Wheel-Version: 1.0\\nGenerator: loopbackend\\nRoot-Is-Purelib: true\\nTag: %s\\n" % TAG}}
        record = []
        for path, text in files.items():
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            record.append("%s,sha256=%s,%d" % (path, digest, len(text.encode())))
        files[info + "/RECORD"] = "\\n".join(record + [info + "/RECORD,,"]) + "\\n"
        with zipfile.ZipFile(os.path.join(directory, _wheel_name()), "w") as z:
            for path, text in files.items():
                z.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), text)
        return _wheel_name()
''')


def make_sdist(directory: Path, name: str, version: str, requires: Iterable[str] = (), pyproject: Optional[str] = None,
               tag: str = "py3-none-any", static: bool = False) -> Path:
    """A real sdist (tar.gz). Default: builds with the in-tree BACKEND; `pyproject` replaces it.

    `static` puts a [project] table in pyproject.toml so a resolver can read the metadata
    without building (as a wheel-stub's metadata is read).
    """
    dist = _dist(name)
    root = "%s-%s" % (dist, version)
    if pyproject is None:
        pyproject = '[build-system]\nrequires = []\nbuild-backend = "loopbackend"\nbackend-path = ["."]\n'
    if static:
        pyproject += '\n[project]\nname = "%s"\nversion = "%s"\ndependencies = %s\n' % (name, version, json.dumps(list(requires)))
    files = {
        root + "/PKG-INFO": _metadata(name, version, requires).replace("2.1", "2.2", 1),
        root + "/pyproject.toml": pyproject,
        root + "/loopbackend.py": BACKEND.format(name=name, version=version, requires=list(requires), tag=tag),
        root + "/%s/__init__.py" % dist.lower(): "VERSION = %r\nBUILT = True\n" % version,
    }
    path = directory / (root + ".tar.gz")
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as archive:
        for member, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size, info.mtime, info.mode = len(data), 1577836800, 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


def _range(header: str, size: int) -> "tuple[int, int]":
    """(first, last) byte of a `bytes=a-b`, `bytes=a-` or `bytes=-n` request; the whole file otherwise."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or size == 0 or not (match.group(1) or match.group(2)):
        return 0, size - 1
    if not match.group(1):
        return max(0, size - int(match.group(2))), size - 1
    first = min(int(match.group(1)), size - 1)
    last = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    return first, max(first, last)


class LoopIndex:
    """Serves files as a simple index on 127.0.0.1; `served` overrides the bytes sent for a file."""

    def __init__(self, files: Iterable[Path], served: Optional[Dict[str, bytes]] = None) -> None:
        self.files: Dict[str, Path] = {p.name: p for p in files}
        self.served = dict(served or {})
        self.requests: List[str] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner._serve(self, body=True)

            def do_HEAD(self) -> None:
                owner._serve(self, body=False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # type: ignore[assignment]
        self.base = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.url = self.base + "/simple"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def __enter__(self) -> "LoopIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def file_gets(self) -> List[str]:
        with self.lock:
            return [p for p in self.requests if p.startswith("/files/")]

    def _bytes(self, filename: str) -> bytes:
        if filename in self.served:
            return self.served[filename]
        return self.files[filename].read_bytes()

    def _project(self, filename: str) -> str:
        stem = filename[:-len(".tar.gz")] if filename.endswith(".tar.gz") else filename.rsplit(".", 1)[0]
        return normalize(stem.split("-")[0])

    def _page(self, project: str, as_json: bool) -> Optional[bytes]:
        names = sorted(n for n in self.files if self._project(n) == project)
        if not names:
            return None
        entries = []
        for name in names:
            data = self._bytes(name)
            entries.append({"filename": name, "url": "../../files/" + name, "size": len(data),
                            "hashes": {"sha256": hashlib.sha256(data).hexdigest()}})
        if as_json:
            return json.dumps({"meta": {"api-version": "1.1"}, "name": project, "files": entries,
                               "versions": sorted({n.split("-")[1] for n in names})}).encode()
        links = "".join('<a href="%s#sha256=%s">%s</a>\n' % (e["url"], e["hashes"]["sha256"], e["filename"]) for e in entries)
        return ("<!DOCTYPE html><html><body>\n%s</body></html>\n" % links).encode()

    def _serve(self, handler: http.server.BaseHTTPRequestHandler, body: bool) -> None:
        path = urllib.parse.urlsplit(handler.path).path
        with self.lock:
            self.requests.append(path if body else "HEAD " + path)
        if path.startswith("/simple/"):
            as_json = "application/vnd.pypi.simple.v1+json" in handler.headers.get("Accept", "")
            page = self._page(normalize(path[len("/simple/"):].strip("/")), as_json)
            ctype = "application/vnd.pypi.simple.v1+json" if as_json else "text/html"
            return self._send(handler, page, ctype)
        name = path[len("/files/"):] if path.startswith("/files/") else ""
        if name not in self.files:
            return self._send(handler, None, "")
        data = self._bytes(name)
        first, last = _range(handler.headers.get("Range", ""), len(data))
        handler.send_response(206 if (first, last) != (0, len(data) - 1) else 200)
        if (first, last) != (0, len(data) - 1):
            handler.send_header("Content-Range", "bytes %d-%d/%d" % (first, last, len(data)))
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(last + 1 - first))
        handler.end_headers()
        if body:
            handler.wfile.write(data[first:last + 1])

    @staticmethod
    def _send(handler: http.server.BaseHTTPRequestHandler, body: Optional[bytes], ctype: str) -> None:
        if body is None:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def write_manifest(tmp_path: Path, requirements: List[str], index: Optional[str] = None, extra: str = "") -> Path:
    """A manifest for CPython 3.10 on manylinux_2_28 with a local app and model, beside its lock."""
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "app" / "server.py").write_text("print('hi')\n", encoding="utf-8")
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "weights.bin").write_bytes(b"w" * 100)
    path = tmp_path / "m.toml"
    path.write_text(textwrap.dedent("""\
        name = "m"
        [target]
        python = "3.10"
        platform = "x86_64-manylinux_2_28"
        [packages]
        requirements = %s
        %s
        %s
        [app]
        path = "app"
        [[models]]
        name = "model"
        source = "local"
        repo = "model"
        [server]
        command = ["python", "server.py"]
        launcher = "direct"
        """) % (json.dumps(requirements), 'index-url = "%s"' % index if index else "", extra), encoding="utf-8")
    return path
