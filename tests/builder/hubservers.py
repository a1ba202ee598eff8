"""Loopback test servers that speak enough of the Hugging Face Hub HTTP API and of the
ModelScope HTTP API for the real `huggingface_hub` and `modelscope` clients to work.

They are real HTTP servers on 127.0.0.1 (port 0, one thread each) holding small in-memory
repositories; tests point the clients at them with HF_ENDPOINT / MODELSCOPE_ENDPOINT and
read `requests` to prove what was (or was not) downloaded.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

__all__ = ["HfHubServer", "ModelScopeServer", "Request"]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Dict[str, str]
    range: Optional[str]
    auth: Optional[str]


class _LoopbackServer:
    """A threaded HTTP server on a free loopback port that logs every request."""

    def __init__(self) -> None:
        self.requests: List[Request] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner._dispatch(self)

            def do_HEAD(self) -> None:
                owner._dispatch(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # A client that stops reading mid-body makes our write fail; that is expected here.
        self.httpd.handle_error = lambda request, address: None  # type: ignore[assignment]
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clear_log(self) -> None:
        with self.lock:
            self.requests.clear()

    def _dispatch(self, h: http.server.BaseHTTPRequestHandler) -> None:
        parts = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        auth = h.headers.get("Authorization")
        cookie = h.headers.get("Cookie") or ""
        if auth is None and "m_session_id=" in cookie:
            auth = "Cookie " + cookie.split("m_session_id=", 1)[1].split(";", 1)[0]
        request = Request(h.command, urllib.parse.unquote(parts.path), query, h.headers.get("Range"), auth)
        with self.lock:
            self.requests.append(request)
        try:
            self.handle(h, request)
        except BrokenPipeError:
            pass

    def handle(self, h: http.server.BaseHTTPRequestHandler, request: Request) -> None:
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def send_json(h: http.server.BaseHTTPRequestHandler, status: int, body: object,
                  headers: Optional[Dict[str, str]] = None) -> None:
        raw = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(raw)

    @staticmethod
    def send_bytes(h: http.server.BaseHTTPRequestHandler, data: bytes, headers: Optional[Dict[str, str]] = None,
                   cut_after: Optional[int] = None) -> None:
        """200 or 206 (one `bytes=N-` range) with the body; `cut_after` closes early, as a dropped link does."""
        start = 0
        match = _RANGE.match(h.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", "bytes */%d" % len(data))
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        if cut_after is not None:
            h.send_header("Connection", "close")
        h.end_headers()
        if h.command == "HEAD":
            return
        if cut_after is not None:
            h.wfile.write(body[:cut_after])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(body)


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob: what the Hub lists as `oid` for a file kept in git."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _commit_id(*parts: str) -> str:
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


@dataclass
class _HfRepo:
    commits: Dict[str, Dict[str, bytes]] = field(default_factory=dict)
    refs: Dict[str, str] = field(default_factory=dict)
    gated: bool = False
    lfs_min: int = 1024


class HfHubServer(_LoopbackServer):
    """The Hub endpoints the client uses: model info by revision, the paginated tree, resolve.

    Files of `lfs_min` bytes or more are listed as LFS (with sha256) and resolve by a 302 to
    a /cdn/ path, as the Hub does; smaller ones are listed with their git blob oid only.
    `corrupt` paths are served with one byte flipped; `cut_once` paths drop the connection
    after N body bytes on their first download; gated repos answer 401 GatedRepo to file
    downloads that lack the token.
    """

    PAGE = 3  # small, so that listing follows the Link header as it must on big repos

    def __init__(self, token: str = "hf_test_token") -> None:
        self.repos: Dict[str, _HfRepo] = {}
        self.token = token
        self.corrupt: set = set()
        self.cut_once: Dict[str, int] = {}
        self.blobs: Dict[str, bytes] = {}
        super().__init__()

    def add_commit(self, repo_id: str, files: Dict[str, bytes], branch: str = "main", tag: Optional[str] = None,
                   gated: bool = False, lfs_min: int = 1024) -> str:
        repo = self.repos.setdefault(repo_id, _HfRepo(gated=gated, lfs_min=lfs_min))
        commit = _commit_id(repo_id, branch, str(len(repo.commits)), *sorted(files))
        repo.commits[commit] = dict(files)
        repo.refs[branch] = commit
        if tag:
            repo.refs[tag] = commit
        for data in files.values():
            self.blobs[hashlib.sha256(data).hexdigest()] = data
        return commit

    def downloads(self, path: Optional[str] = None) -> List[Request]:
        """GETs that carried file bytes (resolve or cdn), optionally for one repo path."""
        with self.lock:
            hits = [r for r in self.requests if r.method == "GET" and ("/resolve/" in r.path or r.path.startswith("/cdn/"))]
        if path is None:
            return hits
        return [r for r in hits if r.path.endswith("/" + path) or r.query.get("file") == path]

    def _is_lfs(self, repo: _HfRepo, data: bytes) -> bool:
        return len(data) >= repo.lfs_min

    def _entries(self, repo: _HfRepo, files: Dict[str, bytes]) -> List[dict]:
        dirs = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
        out: List[dict] = [{"type": "directory", "oid": _commit_id("tree", d), "size": 0, "path": d} for d in dirs]
        for path in sorted(files):
            data = files[path]
            entry = {"type": "file", "size": len(data), "path": path, "oid": git_blob_oid(data)}
            if self._is_lfs(repo, data):
                sha = hashlib.sha256(data).hexdigest()
                # The oid of an LFS file is that of its pointer; the client treats it as opaque.
                entry["oid"] = hashlib.sha1(b"pointer " + sha.encode()).hexdigest()
                entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
            out.append(entry)
        return out

    def _find(self, h, repo_id: str, rev: str) -> Optional[Tuple[_HfRepo, str]]:
        repo = self.repos.get(repo_id)
        if repo is None:
            self.send_json(h, 401, {"error": "Repository not found"},
                           {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            return None
        commit = repo.refs.get(rev, rev if rev in repo.commits else None)
        if commit is None:
            self.send_json(h, 404, {"error": "Invalid rev id: %s" % rev},
                           {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
            return None
        return repo, commit

    def _authorized(self, request: Request) -> bool:
        return request.auth == "Bearer " + self.token

    def handle(self, h, request: Request) -> None:
        path = request.path
        m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/(.+))?$", path)
        if m:
            found = self._find(h, m.group(1), m.group(2) or "main")
            if found:
                repo, commit = found
                self.send_json(h, 200, {
                    "id": m.group(1), "modelId": m.group(1), "sha": commit, "private": False,
                    "gated": "manual" if repo.gated else False,
                    "siblings": [{"rfilename": p} for p in sorted(repo.commits[commit])],
                })
            return
        m = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$", path)
        if m:
            found = self._find(h, m.group(1), m.group(2))
            if found:
                repo, commit = found
                entries = self._entries(repo, repo.commits[commit])
                if request.query.get("recursive", "").lower() not in ("true", "1"):
                    entries = [e for e in entries if "/" not in e["path"]]
                start = int(request.query.get("cursor", "0"))
                page = entries[start:start + self.PAGE]
                headers = {}
                if start + self.PAGE < len(entries):
                    nxt = dict(request.query, cursor=str(start + self.PAGE))
                    headers["Link"] = '<%s%s?%s>; rel="next"' % (self.url, request.path, urllib.parse.urlencode(nxt))
                self.send_json(h, 200, page, headers)
            return
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            found = self._find(h, m.group(1), m.group(2))
            if not found:
                return
            repo, commit = found
            if repo.gated and not self._authorized(request):
                self.send_json(h, 401, {"error": "Access to model %s is restricted." % m.group(1)},
                               {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted"})
                return
            data = repo.commits[commit].get(m.group(3))
            if data is None:
                self.send_json(h, 404, {"error": "Entry not found"},
                               {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
                return
            headers = {"X-Repo-Commit": commit, "ETag": '"%s"' % git_blob_oid(data)}
            if self._is_lfs(repo, data):
                sha = hashlib.sha256(data).hexdigest()
                location = "%s/cdn/%s?%s" % (self.url, sha, urllib.parse.urlencode({"file": m.group(3)}))
                h.send_response(302)
                h.send_header("Location", location)
                h.send_header("X-Repo-Commit", commit)
                h.send_header("X-Linked-Etag", '"%s"' % sha)
                h.send_header("X-Linked-Size", str(len(data)))
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            self._send_file(h, m.group(3), data, headers)
            return
        m = re.match(r"^/cdn/([0-9a-f]{64})$", path)
        if m and m.group(1) in self.blobs:
            self._send_file(h, request.query.get("file", ""), self.blobs[m.group(1)], {})
            return
        self.send_json(h, 404, {"error": "no route %s" % path})

    def _send_file(self, h, name: str, data: bytes, headers: Dict[str, str]) -> None:
        if name in self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0x01])
        cut = self.cut_once.pop(name, None)
        self.send_bytes(h, data, headers, cut_after=cut)


@dataclass
class _MsFile:
    data: bytes
    commit: str


@dataclass
class _MsRepo:
    branches: Dict[str, Dict[str, _MsFile]] = field(default_factory=dict)
    tags: Dict[str, Dict[str, _MsFile]] = field(default_factory=dict)
    private: bool = False


class ModelScopeServer(_LoopbackServer):
    """The ModelScope endpoints the client uses: revisions, the file listing, file download.

    Revisions are branch or tag names only; every listed file carries its last commit id
    (`Revision`) and `Sha256`. Private repos answer 401 unless the token comes as a Bearer
    header or the m_session_id cookie, as the client sends it.
    """

    def __init__(self, token: str = "ms_test_token") -> None:
        self.repos: Dict[str, _MsRepo] = {}
        self.token = token
        self.corrupt: set = set()
        self.cut_once: Dict[str, int] = {}
        super().__init__()

    def commit(self, repo_id: str, files: Dict[str, bytes], branch: str = "master", tag: Optional[str] = None,
               private: bool = False) -> str:
        """Add or change files on a branch (a new commit); files not given stay as they were."""
        repo = self.repos.setdefault(repo_id, _MsRepo(private=private))
        tree = dict(repo.branches.get(branch, {}))
        commit = _commit_id(repo_id, branch, str(sum(len(t) for t in repo.branches.values())), *sorted(files))
        for path, data in files.items():
            tree[path] = _MsFile(data, commit)
        repo.branches[branch] = tree
        if tag:
            repo.tags[tag] = dict(tree)
        return commit

    def downloads(self, path: Optional[str] = None) -> List[Request]:
        with self.lock:
            hits = [r for r in self.requests if r.method == "GET" and r.path.endswith("/repo") and "FilePath" in r.query]
        return hits if path is None else [r for r in hits if r.query["FilePath"] == path]

    def _authorized(self, request: Request) -> bool:
        return request.auth in ("Bearer " + self.token, "Cookie " + self.token)

    def _tree(self, h, repo_id: str, revision: str, request: Request) -> Optional[Dict[str, _MsFile]]:
        repo = self.repos.get(repo_id)
        if repo is None:
            self.send_json(h, 404, {"Code": 10010205001, "Message": "model %s not found" % repo_id, "Success": False})
            return None
        if repo.private and not self._authorized(request):
            self.send_json(h, 401, {"Code": 10010205002, "Message": "please login first", "Success": False})
            return None
        tree = repo.tags.get(revision, repo.branches.get(revision))
        if tree is None:
            self.send_json(h, 404, {"Code": 10010205001, "Message": "revision %s not found" % revision, "Success": False})
        return tree

    def handle(self, h, request: Request) -> None:
        m = re.match(r"^/api/v1/models/([^/]+/[^/]+)/revisions$", request.path)
        if m:
            repo = self.repos.get(m.group(1))
            if repo is None:
                self.send_json(h, 404, {"Code": 10010205001, "Message": "not found", "Success": False})
                return
            if repo.private and not self._authorized(request):
                self.send_json(h, 401, {"Code": 10010205002, "Message": "please login first", "Success": False})
                return
            self.send_json(h, 200, {"Code": 200, "Success": True, "Data": {"RevisionMap": {
                "Branches": [{"Revision": b, "CreatedAt": 1700000000} for b in sorted(repo.branches)],
                "Tags": [{"Revision": t, "CreatedAt": 1700000000} for t in sorted(repo.tags)],
            }}})
            return
        m = re.match(r"^/api/v1/models/([^/]+/[^/]+)/repo/files$", request.path)
        if m:
            tree = self._tree(h, m.group(1), request.query.get("Revision", "master"), request)
            if tree is None:
                return
            dirs = sorted({"/".join(p.split("/")[:i]) for p in tree for i in range(1, p.count("/") + 1)})
            files = [{"Name": d.rsplit("/", 1)[-1], "Path": d, "Type": "tree", "Size": 0} for d in dirs]
            for path in sorted(tree):
                f = tree[path]
                files.append({"Name": path.rsplit("/", 1)[-1], "Path": path, "Type": "blob", "Size": len(f.data),
                              "Sha256": hashlib.sha256(f.data).hexdigest(), "Revision": f.commit,
                              "IsLFS": len(f.data) >= 1024, "CommittedDate": 1700000000})
            self.send_json(h, 200, {"Code": 200, "Success": True, "Data": {"Files": files}})
            return
        m = re.match(r"^/api/v1/models/([^/]+/[^/]+)/repo$", request.path)
        if m and "FilePath" in request.query:
            tree = self._tree(h, m.group(1), request.query.get("Revision", "master"), request)
            if tree is None:
                return
            name = request.query["FilePath"]
            f = tree.get(name)
            if f is None:
                self.send_json(h, 404, {"Code": 10010205001, "Message": "file not found", "Success": False})
                return
            data = f.data
            if name in self.corrupt:
                data = data[:-1] + bytes([data[-1] ^ 0x01])
            self.send_bytes(h, data, cut_after=self.cut_once.pop(name, None))
            return
        self.send_json(h, 404, {"Code": 404, "Message": "no route %s" % request.path, "Success": False})


MANIFEST = """
name = "hubtest"

[target]
python = "3.10"
platform = "x86_64-manylinux_2_28"

[packages]
requirements = ["six==1.16.0"]

[app]
path = "app"

{models}

[server]
command = ["python", "server.py", "--port", "{{port}}"]
port = 6008
ready-log = "ready"
"""


def write_manifest(directory, models: str):
    """A build manifest in `directory` whose [[models]] are `models` (TOML text); returns its path."""
    from pathlib import Path

    directory = Path(directory)
    (directory / "app").mkdir(parents=True, exist_ok=True)
    path = directory / "hubtest.toml"
    path.write_text(MANIFEST.format(models=models), encoding="utf-8")
    return path
