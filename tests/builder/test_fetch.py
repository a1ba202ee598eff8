"""The download engine through the package-index transport (cosybuild.packageindex), and cosybuild.cache,
against a loopback HTTP server that the tests control."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import threading
import time
import urllib.parse
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from cosybuild import download
from cosybuild.cache import Cache, default_cache_root
from cosybuild.packageindex import FetchItem, fetch_all
from cosybuild.transfererror import TransferError
from cosyinstall.errors import ArtifactRejected, CosyError
from cosyinstall.progress import NullReporter, Reporter

MB = 1024 * 1024


class FileServer:
    """Serves named byte strings with Range support; each file can be made to misbehave.

    Options per file: cut_after (first request sends only N body bytes, then closes),
    wrong (same length, one byte flipped), ignore_range (always 200), extra (bytes past the
    real end, Content-Length included), no_length (close-delimited body), fail_first
    ((count, status): the first `count` requests get `status`), delay (seconds per 64 KiB).
    """

    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.options: Dict[str, dict] = {}
        self.requests: List[Tuple[str, str, Optional[str]]] = []
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner._serve(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # A client that gives up mid-body makes the write fail; that is expected here.
        self.httpd.handle_error = lambda request, address: None  # type: ignore[assignment]
        self.base = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add(self, name: str, data: bytes, **options: object) -> FetchItem:
        self.files[name] = data
        self.options[name] = options
        return FetchItem(name, len(data), hashlib.sha256(data).hexdigest(), "%s/files/%s" % (self.base, name))

    def ranges(self, name: str) -> List[Optional[str]]:
        """The Range header (or None) of every GET for `name`, in order."""
        with self.lock:
            return [rng for method, path, rng in self.requests if method == "GET" and path == "/files/" + name]

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        # A proxied request carries an absolute URI; only its path names the file.
        path = urllib.parse.urlsplit(handler.path).path
        name = path[len("/files/"):] if path.startswith("/files/") else None
        rng = handler.headers.get("Range")
        with self.lock:
            self.requests.append(("GET", path, rng))
            count = sum(1 for _m, p, _r in self.requests if p == path) - 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self._respond(handler, name, rng, count)
        finally:
            with self.lock:
                self.active -= 1

    def _respond(self, handler, name: Optional[str], rng: Optional[str], count: int) -> None:
        if name not in self.files:
            handler.send_error(404, "Not Found")
            return
        opts = self.options[name]
        fail_first = opts.get("fail_first")
        if fail_first and count < fail_first[0]:
            handler.send_error(fail_first[1])
            return
        body = self.files[name]
        if opts.get("wrong"):
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
        body += opts.get("extra", b"")
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and not opts.get("ignore_range"):
            start = int(match.group(1))
            handler.send_response(206)
            handler.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(body) - 1, len(body)))
        else:
            handler.send_response(200)
        payload = body[start:]
        if not opts.get("no_length"):
            handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        cut = opts.get("cut_after")
        if cut is not None and count == 0:
            payload = payload[:cut]
        delay = opts.get("delay", 0)
        for pos in range(0, len(payload), 64 * 1024):
            handler.wfile.write(payload[pos:pos + 64 * 1024])
            if delay:
                time.sleep(delay)
        handler.wfile.flush()
        # Returning closes the connection (HTTP/1.0): a cut body ends short of Content-Length.


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


@pytest.fixture(autouse=True)
def _fast_and_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    # No real waiting between retries, and no developer proxy between us and 127.0.0.1.
    monkeypatch.setattr(download, "BACKOFF", 0.0)
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)


def blob(n: int, seed: int = 0) -> bytes:
    # Deterministic and incompressible enough; os.urandom would make failures hard to replay.
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:n])


def tiny_wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tiny/__init__.py", "VALUE = 1\n")
        zf.writestr("tiny-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tiny\nVersion: 1.0\n")
        zf.writestr("tiny-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("tiny-1.0.dist-info/RECORD", "")
    return buf.getvalue()


def stored_files(cache: Cache) -> List[Path]:
    return [p for p in cache.root.rglob("*") if p.is_file()]


def assert_cached(cache: Cache, item: FetchItem, data: bytes, paths: Dict[str, Path]) -> None:
    path = paths[item.sha256]
    assert path == cache.root / "sha256" / item.sha256[:2] / item.sha256
    assert path.read_bytes() == data
    assert cache.get(item.sha256, item.size) == path
    assert not cache.partial_path(item.sha256).exists()


def test_fetch_verifies_and_caches(server: FileServer, cache: Cache) -> None:
    wheel = tiny_wheel()
    data = blob(3 * MB + 17)
    items = [server.add("tiny-1.0-py3-none-any.whl", wheel), server.add("big-1.0.tar.gz", data)]
    paths = fetch_all(items, cache, NullReporter())
    assert set(paths) == {i.sha256 for i in items}
    assert_cached(cache, items[0], wheel, paths)
    assert_cached(cache, items[1], data, paths)
    assert zipfile.ZipFile(paths[items[0].sha256]).read("tiny/__init__.py") == b"VALUE = 1\n"
    assert server.ranges("big-1.0.tar.gz") == [None]


def test_second_fetch_downloads_nothing(server: FileServer, cache: Cache) -> None:
    items = [server.add("a.whl", blob(MB, 1)), server.add("b.whl", blob(2 * MB, 2))]
    first = fetch_all(items, cache, NullReporter())
    server.requests.clear()
    second = fetch_all(items, cache, NullReporter())
    assert second == first
    assert server.requests == []


def test_progress_counts_every_downloaded_byte(server: FileServer, cache: Cache) -> None:
    items = [server.add("a.whl", blob(MB + 5, 1)), server.add("b.whl", blob(2 * MB, 2))]
    stream = io.StringIO()
    reporter = Reporter(stream=stream, live=False, line_interval=0)
    fetch_all(items, cache, reporter)
    last = stream.getvalue().strip().splitlines()[-1]
    assert last.startswith("Downloading 2 files") and "(100%)" in last


def test_cut_connection_resumes_with_range(server: FileServer, cache: Cache) -> None:
    data = blob(4 * MB + 3, 3)
    cut = 1_500_000 + 123  # deliberately not a multiple of the 1 MiB chunk
    item = server.add("cut.whl", data, cut_after=cut)
    paths = fetch_all([item], cache, NullReporter())
    assert server.ranges("cut.whl") == [None, "bytes=%d-" % cut]
    assert_cached(cache, item, data, paths)


def test_part_from_earlier_process_resumes_with_range(server: FileServer, cache: Cache) -> None:
    data = blob(3 * MB + 1, 4)
    item = server.add("half.whl", data)
    half = len(data) // 2
    cache.partial_path(item.sha256).write_bytes(data[:half])
    paths = fetch_all([item], cache, NullReporter())
    assert server.ranges("half.whl") == ["bytes=%d-" % half]
    assert_cached(cache, item, data, paths)


def test_complete_part_is_committed_without_network(server: FileServer, cache: Cache) -> None:
    data = blob(MB, 5)
    item = server.add("done.whl", data)
    cache.partial_path(item.sha256).write_bytes(data)
    paths = fetch_all([item], cache, NullReporter())
    assert server.ranges("done.whl") == []
    assert_cached(cache, item, data, paths)


def test_stale_part_is_replaced_by_a_clean_download(server: FileServer, cache: Cache) -> None:
    data = blob(2 * MB, 6)
    item = server.add("stale.whl", data)
    half = len(data) // 2
    cache.partial_path(item.sha256).write_bytes(b"\0" * half)  # not a prefix of the real file
    paths = fetch_all([item], cache, NullReporter())
    assert server.ranges("stale.whl") == ["bytes=%d-" % half, None]
    assert_cached(cache, item, data, paths)


def test_wrong_bytes_are_rejected_and_not_cached(server: FileServer, cache: Cache) -> None:
    item = server.add("evil-1.0-py3-none-any.whl", blob(2 * MB, 7), wrong=True)
    with pytest.raises(ArtifactRejected) as info:
        fetch_all([item], cache, NullReporter())
    assert info.value.exit_code == 3
    message = str(info.value)
    assert "evil-1.0-py3-none-any.whl" in message and item.sha256 in message
    assert message.count(".") >= 1 and "\n" not in message
    assert cache.get(item.sha256, item.size) is None
    assert stored_files(cache) == []


def test_wrong_bytes_after_resume_are_rejected(server: FileServer, cache: Cache) -> None:
    data = blob(2 * MB, 8)
    item = server.add("evil2.whl", data, wrong=True)
    cache.partial_path(item.sha256).write_bytes(data[:1000])
    with pytest.raises(ArtifactRejected, match="evil2.whl"):
        fetch_all([item], cache, NullReporter())
    # One clean retry from zero decided that the server, not the part, is wrong.
    assert server.ranges("evil2.whl") == ["bytes=1000-", None]
    assert stored_files(cache) == []


@pytest.mark.parametrize("no_length", [False, True], ids=["content-length", "close-delimited"])
def test_more_bytes_than_locked_are_rejected(server: FileServer, cache: Cache, no_length: bool) -> None:
    data = blob(MB + 10, 9)
    item = server.add("long.whl", data, extra=b"trailing", no_length=no_length)
    with pytest.raises(ArtifactRejected, match="long.whl") as info:
        fetch_all([item], cache, NullReporter())
    assert info.value.exit_code == 3
    assert str(MB + 10) in str(info.value)
    assert stored_files(cache) == []


def test_server_ignoring_range_still_gives_correct_file(server: FileServer, cache: Cache) -> None:
    data = blob(3 * MB, 10)
    item = server.add("norange.whl", data, ignore_range=True, cut_after=MB + 7)
    paths = fetch_all([item], cache, NullReporter())
    # The retry asked for a range, got 200 with the whole file, and started over from zero.
    assert server.ranges("norange.whl") == [None, "bytes=%d-" % (MB + 7)]
    assert_cached(cache, item, data, paths)


def test_parallel_fetch_of_several_files(server: FileServer, cache: Cache) -> None:
    datas = [blob(MB + i * 1000, 20 + i) for i in range(6)]
    items = [server.add("p%d.whl" % i, d, delay=0.01) for i, d in enumerate(datas)]
    paths = fetch_all(items, cache, NullReporter(), jobs=4)
    for item, data in zip(items, datas, strict=True):
        assert_cached(cache, item, data, paths)
    assert server.max_active >= 2


def test_duplicate_items_download_once(server: FileServer, cache: Cache) -> None:
    data = blob(MB, 11)
    item = server.add("dup.whl", data)
    paths = fetch_all([item, item], cache, NullReporter())
    assert list(paths) == [item.sha256]
    assert server.ranges("dup.whl") == [None]


def test_404_raises_transfer_error_naming_the_file(server: FileServer, cache: Cache) -> None:
    item = FetchItem("gone-1.0-py3-none-any.whl", 10, "0" * 64, server.base + "/files/gone.whl")
    with pytest.raises(TransferError) as info:
        fetch_all([item], cache, NullReporter())
    assert isinstance(info.value, CosyError) and info.value.exit_code == 3
    assert "gone-1.0-py3-none-any.whl" in str(info.value) and "404" in str(info.value)
    assert server.ranges("gone.whl") == [None]  # a 404 is final, not retried
    assert stored_files(cache) == []


def test_5xx_is_retried(server: FileServer, cache: Cache) -> None:
    data = blob(MB, 12)
    item = server.add("flaky.whl", data, fail_first=(2, 503))
    paths = fetch_all([item], cache, NullReporter(), retries=3)
    assert server.ranges("flaky.whl") == [None, None, None]
    assert_cached(cache, item, data, paths)


def test_retries_exhausted_raise_transfer_error(server: FileServer, cache: Cache) -> None:
    item = server.add("down.whl", blob(MB, 13), fail_first=(99, 502))
    with pytest.raises(TransferError, match="down.whl") as info:
        fetch_all([item], cache, NullReporter(), retries=2)
    assert "502" in str(info.value) and "3 attempts" in str(info.value)
    assert len(server.ranges("down.whl")) == 3


def test_connection_refused_is_retried_then_fails(cache: Cache) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    item = FetchItem("nowhere.whl", 1, "1" * 64, "http://127.0.0.1:%d/nowhere.whl" % port)
    with pytest.raises(TransferError, match="nowhere.whl") as info:
        fetch_all([item], cache, NullReporter(), retries=1)
    assert info.value.exit_code == 3 and "2 attempts" in str(info.value)


def test_one_failure_cancels_the_rest(server: FileServer, cache: Cache) -> None:
    missing = FetchItem("missing.whl", 10, "2" * 64, server.base + "/files/missing.whl")
    slow = [server.add("slow%d.whl" % i, blob(4 * MB, 30 + i), delay=0.02) for i in range(4)]
    started = time.monotonic()
    with pytest.raises(TransferError, match="missing.whl"):
        fetch_all([missing] + slow, cache, NullReporter(), jobs=2)
    # 4 MB at 64 KiB / 20 ms is over a second per file; cancellation must not wait for all.
    assert time.monotonic() - started < 2.5
    for item in slow[1:]:
        assert server.ranges(item.filename) == []
    for item in slow:
        assert cache.get(item.sha256, item.size) is None


def test_file_url(tmp_path: Path, cache: Cache) -> None:
    data = blob(2 * MB, 14)
    src = tmp_path / "local-1.0.tar.gz"
    src.write_bytes(data)
    item = FetchItem(src.name, len(data), hashlib.sha256(data).hexdigest(), src.as_uri())
    cache.partial_path(item.sha256).write_bytes(data[:100])  # file:// ignores Range: restart
    paths = fetch_all([item], cache, NullReporter())
    assert_cached(cache, item, data, paths)


def test_missing_file_url_fails_without_retry(tmp_path: Path, cache: Cache) -> None:
    item = FetchItem("absent.whl", 1, "3" * 64, (tmp_path / "absent.whl").as_uri())
    with pytest.raises(TransferError, match="absent.whl"):
        fetch_all([item], cache, NullReporter(), retries=50)


def test_http_proxy_env_is_honoured(server: FileServer, cache: Cache, monkeypatch: pytest.MonkeyPatch) -> None:
    data = blob(MB, 15)
    server.add("proxied.whl", data)
    monkeypatch.setenv("http_proxy", server.base)
    item = FetchItem("proxied.whl", len(data), hashlib.sha256(data).hexdigest(), "http://files.invalid/files/proxied.whl")
    paths = fetch_all([item], cache, NullReporter())
    assert_cached(cache, item, data, paths)
    assert server.ranges("proxied.whl") == [None]


def test_put_file_verifies_while_copying(tmp_path: Path, cache: Cache) -> None:
    data = blob(MB + 1, 16)
    src = tmp_path / "built-1.0-py3-none-any.whl"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(ArtifactRejected, match="built-1.0-py3-none-any.whl"):
        cache.put_file(src, "4" * 64, len(data))
    assert stored_files(cache) == []
    path = cache.put_file(src, digest, len(data))
    assert path.read_bytes() == data and cache.get(digest, len(data)) == path
    assert [p for p in stored_files(cache)] == [path]


def test_cache_get_checks_size_and_digest_format(cache: Cache) -> None:
    digest = "ab" * 32
    path = cache.path_for(digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"12345")
    assert cache.get(digest, 5) == path
    assert cache.get(digest.upper(), 5) == path
    assert cache.get(digest, 6) is None
    with pytest.raises(ValueError):
        cache.get("../../etc/passwd", 5)


def test_cache_lock_is_exclusive_and_cleaned_up(cache: Cache) -> None:
    digest = "cd" * 32
    first = cache.try_lock(digest)
    assert first is not None
    assert cache.try_lock(digest) is None
    first.release()
    again = cache.try_lock(digest)
    assert again is not None
    again.release()
    assert stored_files(cache) == []


def test_default_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COSYBUILD_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("COSYBUILD_CACHE")
    assert default_cache_root() == tmp_path / "xdg" / "cosybuild"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_root() == tmp_path / "home" / ".cache" / "cosybuild"
    assert os.fspath(Cache().root) == os.fspath(tmp_path / "home" / ".cache" / "cosybuild")
