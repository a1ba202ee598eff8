"""ModelScope models through the real modelscope client, against a loopback ModelScope server."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from cosybuild.cache import Cache
from hubservers import HfHubServer, ModelScopeServer, write_manifest
from support import REPO as REPO_ROOT
from support import cosybuild, one_sentence, small_archive

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = "iic/TinyVoice"
V1 = {
    "configuration.json": b'{"framework": "pytorch"}\n',
    "llm.pt": os.urandom(250_000),
    "flow/flow.pt": os.urandom(60_000),
    "README.md": b"# tiny\n",
}
MODEL = """
[[models]]
name = "tiny"
source = "modelscope"
repo = "%s"
%s
include = ["*.pt", "*.json"]
"""


@pytest.fixture
def hub():
    with ModelScopeServer() as server:
        yield server


@pytest.fixture
def env(hub: ModelScopeServer, tmp_path: Path) -> dict:
    return dict(os.environ, MODELSCOPE_ENDPOINT=hub.url, MODELSCOPE_HOME=str(tmp_path / "ms-home"),
                MODELSCOPE_CACHE=str(tmp_path / "ms-cache"), COSYBUILD_CACHE=str(tmp_path / "cache"),
                NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")


def manifest(tmp_path: Path, revision: str | None = None, repo: str = REPO) -> Path:
    # No revision means the manifest default ("main"), which ModelScope reads as its "master".
    return write_manifest(tmp_path, MODEL % (repo, 'revision = "%s"' % revision if revision else ""))


def pack(path: Path, out: Path, env: dict):
    return cosybuild("pack", str(path), "--only", "models", "--out", str(out), env=env)


def members(zpath: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zpath) as z:
        return {n: z.read(n) for n in z.namelist() if n != "MANIFEST.json"}


def test_lock_records_revision_commits_and_hashes_and_packing_twice_downloads_once(hub, env, tmp_path: Path) -> None:
    commit = hub.commit(REPO, V1)
    path = manifest(tmp_path)
    proc = pack(path, tmp_path / "d1", env)
    assert proc.returncode == 0, proc.stderr
    pin = json.loads(path.with_suffix(".lock.json").read_text())["models"]["models"][0]
    assert pin["revision"] == "master"
    assert pin["files"] == [
        {"path": p, "size": len(V1[p]), "sha256": hashlib.sha256(V1[p]).hexdigest(), "commit": commit}
        for p in sorted(V1) if not p.endswith(".md")]
    assert {r.query["FilePath"] for r in hub.downloads()} == {"configuration.json", "llm.pt", "flow/flow.pt"}
    assert len(hub.downloads()) == 3
    assert members(tmp_path / "d1" / "pretrained_models.zip") == {"tiny/" + p: d for p, d in V1.items() if not p.endswith(".md")}
    hub.clear_log()
    again = pack(path, tmp_path / "d2", env)
    assert again.returncode == 0, again.stderr
    assert hub.requests == [], "a second pack must not contact ModelScope at all"
    assert (tmp_path / "d1" / "pretrained_models.zip").read_bytes() == (tmp_path / "d2" / "pretrained_models.zip").read_bytes()


def test_listing_changed_since_the_lock_stops_pack_naming_the_files(hub, env, tmp_path: Path) -> None:
    hub.commit(REPO, V1)
    path = manifest(tmp_path)
    assert cosybuild("lock", str(path), "--only", "models", env=env).returncode == 0
    # Someone pushes new weights to the branch after the lock was made.
    hub.commit(REPO, {"llm.pt": os.urandom(250_000)})
    proc = pack(path, tmp_path / "d", env)
    assert proc.returncode == 3, proc.stderr
    line = one_sentence(proc.stderr)
    assert "no longer matches the lock" in line and "llm.pt" in line and "flow/flow.pt" not in line
    assert "cosybuild lock --only models --upgrade" in line
    assert not hub.downloads("llm.pt")
    # Re-locking takes the new state, and pack succeeds again.
    assert cosybuild("lock", str(path), "--only", "models", "--upgrade", env=env).returncode == 0
    assert pack(path, tmp_path / "d", env).returncode == 0


def test_a_tag_is_a_revision_and_a_moved_branch_does_not_matter_to_it(hub, env, tmp_path: Path) -> None:
    hub.commit(REPO, V1, tag="v1.0")
    hub.commit(REPO, {"llm.pt": b"x" * 2000})
    path = manifest(tmp_path, revision="v1.0")
    assert pack(path, tmp_path / "d", env).returncode == 0
    assert members(tmp_path / "d" / "pretrained_models.zip")["tiny/llm.pt"] == V1["llm.pt"]


def test_bytes_that_differ_from_the_listing_sha256_are_refused_with_exit_3(hub, env, tmp_path: Path) -> None:
    hub.commit(REPO, V1)
    hub.corrupt.add("flow/flow.pt")
    proc = pack(manifest(tmp_path), tmp_path / "d", env)
    assert proc.returncode == 3, proc.stderr
    assert "tiny/flow/flow.pt does not match the lock" in one_sentence(proc.stderr)
    cache = Cache(Path(env["COSYBUILD_CACHE"]))
    good = hashlib.sha256(V1["flow/flow.pt"]).hexdigest()
    assert cache.get(good, len(V1["flow/flow.pt"])) is None
    # Bytes that failed the check are not kept (other files stopped midway keep theirs, to resume).
    assert not cache.partial_path(good).exists()


def test_private_repo_needs_a_token_and_says_which(hub, env, tmp_path: Path) -> None:
    hub.commit(REPO, V1, private=True)
    path = manifest(tmp_path)
    proc = pack(path, tmp_path / "d", env)
    assert proc.returncode == 4, proc.stderr
    line = one_sentence(proc.stderr)
    assert REPO in line and "MODELSCOPE_API_TOKEN" in line
    ok = pack(path, tmp_path / "d", dict(env, MODELSCOPE_API_TOKEN=hub.token))
    assert ok.returncode == 0, ok.stderr
    assert hub.downloads() and all(r.auth is not None for r in hub.downloads())


def test_an_interrupted_download_resumes_with_a_range(hub, env, tmp_path: Path) -> None:
    hub.commit(REPO, V1)
    path = manifest(tmp_path)
    assert cosybuild("lock", str(path), "--only", "models", env=env).returncode == 0
    cache = Cache(Path(env["COSYBUILD_CACHE"]))
    # What an earlier, killed run leaves: the first bytes of flow.pt in the cache's .part.
    cache.partial_path(hashlib.sha256(V1["flow/flow.pt"]).hexdigest()).write_bytes(V1["flow/flow.pt"][:50_000])
    # And a connection that drops in the middle of llm.pt.
    hub.cut_once["llm.pt"] = 150_000
    proc = pack(path, tmp_path / "d", env)
    assert proc.returncode == 0, proc.stderr
    assert [r.range for r in hub.downloads("flow/flow.pt")] == ["bytes=50000-"]
    first, second = [r.range for r in hub.downloads("llm.pt")]
    assert first is None and second.startswith("bytes=") and 64 * 1024 <= int(second[6:-1]) <= 150_000
    packed = members(tmp_path / "d" / "pretrained_models.zip")
    assert packed["tiny/llm.pt"] == V1["llm.pt"] and packed["tiny/flow/flow.pt"] == V1["flow/flow.pt"]


def test_a_missing_branch_names_what_the_repo_has(hub, env, tmp_path: Path) -> None:
    hub.commit(REPO, V1, tag="v1.0")
    proc = cosybuild("lock", str(manifest(tmp_path, revision="dev")), "--only", "models", env=env)
    assert proc.returncode == 2, proc.stderr
    line = one_sentence(proc.stderr)
    assert "no branch or tag named dev" in line and "master" in line and "v1.0" in line


def _toml_table(entry: dict) -> str:
    # JSON strings and arrays of strings are valid TOML values.
    return "[[models]]\n" + "".join("%s = %s\n" % (k, json.dumps(v)) for k, v in entry.items())


def test_the_real_ttsfrd_entry_packs_from_either_hub_by_editing_source_and_repo_only(tmp_path: Path) -> None:
    """The real manifest's CosyVoice-ttsfrd entry, keys as written, served by loopback twins of both hubs."""
    with (REPO_ROOT / "manifests" / "cosyvoice2-trtllm.toml").open("rb") as handle:
        entry = next(m for m in tomllib.load(handle)["models"] if m["name"] == "CosyVoice-ttsfrd")
    files = {name: os.urandom(2000) for name in entry["install-wheels"]}
    files.update({name: small_archive({"resource/a.dat": os.urandom(2000)}) for name in entry["unzip"]})
    files["configuration.json"] = b"{}\n"
    with ModelScopeServer() as ms, HfHubServer() as hf:
        ms.commit(entry["repo"], files)
        hf.add_commit("FunAudioLLM/CosyVoice-ttsfrd", files)
        env = dict(os.environ, MODELSCOPE_ENDPOINT=ms.url, HF_ENDPOINT=hf.url, HF_HOME=str(tmp_path / "hf"),
                   MODELSCOPE_HOME=str(tmp_path / "ms"), COSYBUILD_CACHE=str(tmp_path / "cache"))
        packed = {}
        for source, repo in (("modelscope", entry["repo"]), ("huggingface", "FunAudioLLM/CosyVoice-ttsfrd")):
            switched = dict(entry, source=source, repo=repo)
            path = write_manifest(tmp_path / source, _toml_table(switched))
            proc = pack(path, tmp_path / source / "dist", env)
            assert proc.returncode == 0, proc.stderr
            zpath = tmp_path / source / "dist" / "pretrained_models.zip"
            meta = json.loads(zipfile.ZipFile(zpath).read("MANIFEST.json"))["models"][0]
            assert meta["source"] == source
            assert meta["steps"] == {"unzip": entry["unzip"], "install-wheels": entry["install-wheels"],
                                     "unpacked-bytes": {name: 2000 for name in entry["unzip"]}}
            packed[source] = members(zpath)
        assert packed["modelscope"] == packed["huggingface"] == {"CosyVoice-ttsfrd/" + n: d for n, d in files.items()}
