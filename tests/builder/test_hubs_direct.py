"""The model hubs called directly (no CLI): the real huggingface_hub and modelscope clients through the
download engine, against the loopback hub servers of hubservers.py (stand-ins: the real hubs are unreachable)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from cosybuild import download
from cosybuild.cache import Cache
from cosybuild.hubs.registry import get_hub
from cosybuild.profile import Model
from cosyinstall.errors import ArtifactRejected
from cosyinstall.progress import NullReporter, Reporter
from hubservers import HfHubServer, ModelScopeServer

FILES = {
    "config.json": b'{"sample_rate": 22050}\n',
    "llm.pt": os.urandom(300_000),
    "flow/flow.pt": os.urandom(70_000),
}


@pytest.fixture(autouse=True)
def _direct(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(download, "BACKOFF", 0.0)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))


def model(source: str, repo: str) -> Model:
    return Model("tiny", source, repo, "main", (), (), {})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["huggingface", "modelscope"])
def hub(request, monkeypatch: pytest.MonkeyPatch):
    """A hub server holding FILES at its default branch, and the cosybuild hub talking to it."""
    if request.param == "huggingface":
        with HfHubServer() as server:
            server.add_commit("org/tiny", FILES)
            monkeypatch.setenv("HF_ENDPOINT", server.url)
            yield request.param, server
    else:
        with ModelScopeServer() as server:
            server.commit("org/tiny", FILES)
            monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
            yield request.param, server


def byte_requests(source: str, server, path: str) -> list:
    """The Range headers of the requests that carried `path`'s bytes (HF: the CDN leg of LFS files)."""
    hits = server.downloads(path)
    if source == "huggingface":
        hits = [r for r in hits if r.path.startswith("/cdn/")]
    return [r.range for r in hits]


def test_pin_lists_every_file_by_content_and_fetch_returns_them_sorted(hub, tmp_path: Path) -> None:
    source, server = hub
    cache = Cache(tmp_path / "cache")
    m = model(source, "org/tiny")
    pin = get_hub(source, tmp_path, cache).pin(m)
    assert {f["path"]: f["sha256"] for f in pin["files"]} == {p: sha(d) for p, d in FILES.items()}
    files = get_hub(source, tmp_path, cache).fetch(m, pin, cache, NullReporter())
    assert [rel for rel, _p, _x in files] == sorted(FILES)
    assert all(path.read_bytes() == FILES[rel] for rel, path, _x in files)
    server.clear_log()
    # Everything is cached now: a second fetch asks the hub for no byte.
    get_hub(source, tmp_path, cache).fetch(m, pin, cache, NullReporter())
    assert server.downloads() == []


def test_fetch_resumes_a_partial_file_with_a_range(hub, tmp_path: Path) -> None:
    source, server = hub
    cache = Cache(tmp_path / "cache")
    m = model(source, "org/tiny")
    pin = get_hub(source, tmp_path, cache).pin(m)
    cache.partial_path(sha(FILES["llm.pt"])).write_bytes(FILES["llm.pt"][:100_000])
    server.clear_log()
    log = io.StringIO()
    files = dict((rel, path) for rel, path, _x in
                 get_hub(source, tmp_path, cache).fetch(m, pin, cache, Reporter(stream=log, live=False)))
    assert byte_requests(source, server, "llm.pt") == ["bytes=100000-"]
    assert files["llm.pt"].read_bytes() == FILES["llm.pt"]
    assert "resuming tiny/llm.pt at 100000 of 300000 bytes" in log.getvalue()
    assert not cache.partial_path(sha(FILES["llm.pt"])).exists()


def test_fetch_refuses_bytes_other_than_the_pinned_sha256_naming_the_file(hub, tmp_path: Path) -> None:
    source, server = hub
    cache = Cache(tmp_path / "cache")
    m = model(source, "org/tiny")
    pin = get_hub(source, tmp_path, cache).pin(m)
    server.corrupt.add("llm.pt")
    with pytest.raises(ArtifactRejected) as info:
        get_hub(source, tmp_path, cache).fetch(m, pin, cache, NullReporter())
    assert info.value.exit_code == 3
    message = str(info.value)
    assert "tiny/llm.pt does not match the lock" in message and sha(FILES["llm.pt"]) in message
    assert "\n" not in message
    # Bytes that failed verification are kept nowhere, not even as a part to resume.
    assert cache.get(sha(FILES["llm.pt"]), len(FILES["llm.pt"])) is None
    assert not cache.partial_path(sha(FILES["llm.pt"])).exists()
