"""Hugging Face models through the real huggingface_hub client, against a loopback Hub server."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from cosybuild.cache import Cache
from hubservers import HfHubServer, write_manifest
from support import cosybuild, one_sentence, small_archive

REPO = "FunAudioLLM/TinyVoice"
V1 = {
    "config.json": b'{"sample_rate": 22050}\n',
    "README.md": b"# tiny voice\n",
    "llm.pt": os.urandom(300_000),
    "flow/flow.onnx": os.urandom(70_000),
    "tokenizer/vocab.txt": b"a\nb\nc\n",
}
MODEL = """
[[models]]
name = "tiny"
source = "huggingface"
repo = "%s"
revision = "%s"
exclude = ["*.md"]
"""


@pytest.fixture
def hub():
    with HfHubServer() as server:
        yield server


@pytest.fixture
def env(hub: HfHubServer, tmp_path: Path) -> dict:
    """The environment of a cosybuild run pointed at the loopback Hub, with its own caches."""
    return dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"),
                COSYBUILD_CACHE=str(tmp_path / "cache"), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")


def manifest(tmp_path: Path, revision: str = "main", repo: str = REPO) -> Path:
    return write_manifest(tmp_path, MODEL % (repo, revision))


def members(zpath: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zpath) as z:
        return {n: z.read(n) for n in z.namelist() if n != "MANIFEST.json"}


def test_pack_pins_the_branch_commit_and_packing_twice_downloads_once(hub, env, tmp_path: Path) -> None:
    first = hub.add_commit(REPO, V1)
    path = manifest(tmp_path)
    proc = cosybuild("pack", str(path), "--only", "models", "--out", str(tmp_path / "d1"), env=env)
    assert proc.returncode == 0, proc.stderr
    lock = json.loads(path.with_suffix(".lock.json").read_text())
    pin = lock["models"]["models"][0]
    assert pin["commit"] == first and pin["revision"] == "main"
    assert {f["path"]: f["sha256"] for f in pin["files"]} == {
        p: hashlib.sha256(d).hexdigest() for p, d in V1.items() if not p.endswith(".md")}
    # The branch moves on; the lock keeps packing the commit it pinned.
    hub.add_commit(REPO, dict(V1, **{"llm.pt": os.urandom(1000)}))
    hub.clear_log()
    again = cosybuild("pack", str(path), "--only", "models", "--out", str(tmp_path / "d2"), env=env)
    assert again.returncode == 0, again.stderr
    assert hub.requests == [], "a second pack must not contact the Hub at all"
    packed = members(tmp_path / "d1" / "pretrained_models.zip")
    assert packed == {"tiny/" + p: d for p, d in V1.items() if not p.endswith(".md")}
    assert (tmp_path / "d1" / "pretrained_models.zip").read_bytes() == (tmp_path / "d2" / "pretrained_models.zip").read_bytes()


def test_every_file_is_downloaded_once_and_lfs_through_the_redirect(hub, env, tmp_path: Path) -> None:
    hub.add_commit(REPO, V1)
    path = manifest(tmp_path)
    assert cosybuild("pack", str(path), "--only", "models", "--out", str(tmp_path / "d"), env=env).returncode == 0
    for name in ("config.json", "llm.pt", "flow/flow.onnx", "tokenizer/vocab.txt"):
        got = [r for r in hub.downloads() if r.path.endswith("/" + name) or r.query.get("file") == name]
        # LFS files: one resolve (302) and one CDN GET; git files: one resolve.
        assert len(got) == (2 if len(V1[name]) >= 1024 else 1), (name, got)
    assert not hub.downloads("README.md")
    manifest_json = json.loads(zipfile.ZipFile(tmp_path / "d" / "pretrained_models.zip").read("MANIFEST.json"))
    assert manifest_json["models"][0]["commit"] == hub.repos[REPO].refs["main"]
    assert "files" not in manifest_json["models"][0]


@pytest.mark.parametrize("name, words", [
    ("llm.pt", "tiny/llm.pt does not match the lock"),
    ("config.json", "tiny/config.json does not match the hub's listing"),
])
def test_bytes_that_differ_from_the_listing_are_refused_with_exit_3(hub, env, tmp_path: Path, name, words) -> None:
    hub.add_commit(REPO, V1)
    hub.corrupt.add(name)
    proc = cosybuild("pack", str(manifest(tmp_path)), "--only", "models", "--out", str(tmp_path / "d"), env=env)
    assert proc.returncode == 3, proc.stderr
    assert words in one_sentence(proc.stderr)
    assert not (tmp_path / "d" / "pretrained_models.zip").exists()
    cache = Cache(Path(env["COSYBUILD_CACHE"]))
    good = hashlib.sha256(V1[name]).hexdigest()
    assert cache.get(good, len(V1[name])) is None
    # Bytes that failed the check are not kept (other files stopped midway keep theirs, to resume).
    assert not cache.partial_path(good).exists()
    assert not list((cache.root / "partial").glob("unhashed.*")), "failed bytes must not stay in the cache"


def test_gated_repo_without_token_is_a_clear_error_and_the_token_opens_it(hub, env, tmp_path: Path) -> None:
    hub.add_commit(REPO, V1, gated=True)
    path = manifest(tmp_path)
    proc = cosybuild("pack", str(path), "--only", "models", "--out", str(tmp_path / "d"), env=env)
    assert proc.returncode == 4, proc.stderr
    line = one_sentence(proc.stderr)
    assert REPO in line and "gated" in line and "HF_TOKEN" in line
    ok = cosybuild("pack", str(path), "--only", "models", "--out", str(tmp_path / "d"), env=dict(env, HF_TOKEN=hub.token))
    assert ok.returncode == 0, ok.stderr
    assert all(r.auth == "Bearer " + hub.token for r in hub.downloads() if "/resolve/" in r.path)


def test_wrong_token_for_a_gated_repo_says_so(hub, env, tmp_path: Path) -> None:
    hub.add_commit(REPO, V1, gated=True)
    proc = cosybuild("pack", str(manifest(tmp_path)), "--only", "models", "--out", str(tmp_path / "d"),
                     env=dict(env, HF_TOKEN="hf_not_this_one"))
    assert proc.returncode == 4, proc.stderr
    assert "has no access" in one_sentence(proc.stderr)


def test_an_interrupted_download_resumes_where_it_stopped(hub, env, tmp_path: Path) -> None:
    hub.add_commit(REPO, V1)
    path = manifest(tmp_path)
    assert cosybuild("lock", str(path), "--only", "models", env=env).returncode == 0
    # What an earlier, killed run leaves: the first bytes of llm.pt in the cache's .part.
    cache = Cache(Path(env["COSYBUILD_CACHE"]))
    digest = hashlib.sha256(V1["llm.pt"]).hexdigest()
    cache.partial_path(digest).write_bytes(V1["llm.pt"][:100_000])
    # And a connection that drops in the middle of another file.
    hub.cut_once["flow/flow.onnx"] = 20_000
    hub.clear_log()
    proc = cosybuild("pack", str(path), "--only", "models", "--out", str(tmp_path / "d"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert [r.range for r in hub.downloads("llm.pt") if r.path.startswith("/cdn/")] == ["bytes=100000-"]
    # The dropped connection is retried (the client buffers, so it may start that file over).
    assert len([r for r in hub.downloads("flow/flow.onnx") if r.path.startswith("/cdn/")]) == 2
    assert members(tmp_path / "d" / "pretrained_models.zip")["tiny/llm.pt"] == V1["llm.pt"]


def test_unknown_revision_and_repo_are_usage_errors(hub, env, tmp_path: Path) -> None:
    hub.add_commit(REPO, V1)
    proc = cosybuild("lock", str(manifest(tmp_path, revision="v9")), "--only", "models", env=env)
    assert proc.returncode == 2 and "no branch, tag or commit named v9" in one_sentence(proc.stderr)
    proc = cosybuild("lock", str(manifest(tmp_path, repo="nobody/nothing")), "--only", "models", env=env)
    assert proc.returncode == 2 and "nobody/nothing" in one_sentence(proc.stderr)


def test_a_tag_pins_its_commit(hub, env, tmp_path: Path) -> None:
    tagged = hub.add_commit(REPO, V1, tag="v1.0")
    hub.add_commit(REPO, dict(V1, **{"config.json": b"{}"}))
    path = manifest(tmp_path, revision="v1.0")
    assert cosybuild("lock", str(path), "--only", "models", env=env).returncode == 0
    assert json.loads(path.with_suffix(".lock.json").read_text())["models"]["models"][0]["commit"] == tagged


def test_identical_large_files_are_stored_once_and_listed_as_duplicates(hub, env, tmp_path: Path) -> None:
    weights = os.urandom(1024 * 1024 + 10)
    hub.add_commit(REPO, dict(V1, **{"a/model.safetensors": weights, "b/model.safetensors": weights}))
    proc = cosybuild("pack", str(manifest(tmp_path)), "--only", "models", "--out", str(tmp_path / "d"), env=env)
    assert proc.returncode == 0, proc.stderr
    zpath = tmp_path / "d" / "pretrained_models.zip"
    meta = json.loads(zipfile.ZipFile(zpath).read("MANIFEST.json"))
    assert "tiny/a/model.safetensors" in members(zpath) and "tiny/b/model.safetensors" not in members(zpath)
    assert meta["duplicates"] == [{"path": "tiny/b/model.safetensors", "same-as": "tiny/a/model.safetensors",
                                   "size": len(weights), "sha256": hashlib.sha256(weights).hexdigest(),
                                   "executable": False}]
    # Same content, one download.
    assert len([r for r in hub.downloads() if r.path.startswith("/cdn/" + hashlib.sha256(weights).hexdigest())]) == 1


@pytest.mark.parametrize("extra, code, words", [
    ('unzip = ["resource.zip"]', 2, "the unzip step names resource.zip, which the model does not hold"),
    ('install_wheels = ["x.whl"]', 2, "unknown key install_wheels"),
    ('install-wheels = ["config.json"]', 2, "not a .whl file"),
])
def test_install_steps_are_checked_against_the_model(hub, env, tmp_path: Path, extra, code, words) -> None:
    hub.add_commit(REPO, V1)
    path = write_manifest(tmp_path, MODEL % (REPO, "main") + extra + "\n")
    proc = cosybuild("pack", str(path), "--only", "models", "--out", str(tmp_path / "d"), env=env)
    assert proc.returncode == code, proc.stderr
    assert words in one_sentence(proc.stderr)


def test_install_steps_reach_the_models_manifest(hub, env, tmp_path: Path) -> None:
    resource = small_archive({"resource/a.dat": os.urandom(3000), "resource/b.txt": b"text\n"})
    files = dict(V1, **{"resource.zip": resource, "x-1.0-py3-none-any.whl": os.urandom(2000)})
    hub.add_commit(REPO, files)
    steps = 'unzip = ["resource.zip"]\ninstall-wheels = ["x-1.0-py3-none-any.whl"]\n'
    path = write_manifest(tmp_path, MODEL % (REPO, "main") + steps)
    proc = cosybuild("pack", str(path), "--only", "models", "--out", str(tmp_path / "d"), env=env)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(zipfile.ZipFile(tmp_path / "d" / "pretrained_models.zip").read("MANIFEST.json"))
    assert meta["models"][0]["steps"] == {"unzip": ["resource.zip"], "install-wheels": ["x-1.0-py3-none-any.whl"],
                                          "unpacked-bytes": {"resource.zip": 3005}}
