"""cosyinstall.model_steps on a real venv: model-carried wheels installed and archives unpacked, offline."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Optional

import pytest

from cosyinstall.errors import ArtifactRejected
from cosyinstall.model_steps import apply_model_steps
from cosyinstall.tree import InstallTree
from cosyinstall.venv import Uv
from cosyinstall.progress import NullReporter
from cosyinstall.zipwrite import Member, write_artifact
from support import REPO, find_python, offline, run

MODEL = "CosyVoice-ttsfrd"


def make_wheel(dest: Path, name: str, version: str, modules: Dict[str, str], requires: tuple = ()) -> Path:
    """A minimal valid pure wheel (METADATA, WHEEL, RECORD with hashes), byte-for-byte reproducible."""
    info = "%s-%s.dist-info" % (name, version)
    files = dict(modules)
    files[info + "/METADATA"] = "Metadata-Version: 2.1\nName: %s\nVersion: %s\n%s" % (
        name, version, "".join("Requires-Dist: %s\n" % r for r in requires))
    files[info + "/WHEEL"] = "Wheel-Version: 1.0\nGenerator: cosy-offline-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (path, digest, len(text.encode())))
    files[info + "/RECORD"] = "\n".join(record + [info + "/RECORD,,"]) + "\n"
    out = dest / ("%s-%s-py3-none-any.whl" % (name, version))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(files):
            zi = zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, files[path])
    return out


def make_zip(dest: Path, members: Dict[str, bytes], modes: Optional[Dict[str, int]] = None) -> Path:
    with zipfile.ZipFile(dest, "w") as z:
        for name, data in members.items():
            zi = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            zi.external_attr = (modes or {}).get(name, 0o100644) << 16
            z.writestr(zi, data)
    return dest


class Bundle:
    """A models artifact written by the real writer, extracted as apply's models step leaves it."""

    def __init__(self, tmp: Path, resource: Dict[str, bytes], modes: Optional[Dict[str, int]] = None,
                 extra_meta: Optional[dict] = None, wheel_bytes: Optional[bytes] = None) -> None:
        src = tmp / "src"
        src.mkdir(parents=True, exist_ok=True)
        dep = make_wheel(src, "ttsfrd_dependency", "0.1", {"ttsfrd_dependency/__init__.py": "VALUE = 42\n"})
        frd = make_wheel(src, "ttsfrd", "0.4.2", {"ttsfrd/__init__.py": "from ttsfrd_dependency import VALUE\n"},
                         requires=("ttsfrd_dependency",))
        archive = make_zip(src / "resource.zip", resource, modes)
        (src / "config.json").write_bytes(b"{}\n")
        self.wheels = [dep.name, frd.name]
        members = [Member("%s/%s" % (MODEL, p.name), str(p), p.stat().st_size) for p in (dep, frd, archive, src / "config.json")]
        meta = {"models": [{"name": MODEL, "source": "local", "repo": "x",
                            "steps": {"unzip": ["resource.zip"], "install-wheels": self.wheels}}]}
        meta.update(extra_meta or {})
        self.zip = tmp / "pretrained_models.zip"
        self.manifest = write_artifact(str(self.zip), "models", "t", {"python": "3.10"}, members, meta)
        self.sources = {m.arcname: Path(m.source) for m in members}
        if wheel_bytes is not None:
            frd.write_bytes(wheel_bytes)

    def extract(self, to: Path) -> None:
        with zipfile.ZipFile(self.zip) as z:
            for name in z.namelist():
                if name != "MANIFEST.json":
                    target = to / "pretrained_models" / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))

    def manifest_file(self, tmp: Path) -> Path:
        path = tmp / "models.MANIFEST.json"
        path.write_bytes(self.manifest.to_bytes())
        return path


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


@pytest.fixture(scope="module")
def venv_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = find_python("3.10")
    if python is None:
        pytest.skip("no CPython 3.10 on this machine")
    venv = tmp_path_factory.mktemp("venv") / ".venv"
    proc = run([uv_bin(), "venv", "--quiet", "--python", python, str(venv)])
    assert proc.returncode == 0, proc.stderr
    return venv


@pytest.fixture
def to(tmp_path: Path, venv_template: Path) -> Path:
    target = tmp_path / "CosyVoice"
    target.mkdir()
    proc = run([uv_bin(), "venv", "--quiet", "--python", str(venv_template / "bin" / "python"), str(target / ".venv")])
    assert proc.returncode == 0, proc.stderr
    return target


RESOURCE = {"resource/dict.txt": b"words\n", "resource/bin/tool": b"#!/bin/sh\necho tool\n", "resource/readme.txt": b"r\n"}


def apply_offline(to: Path, manifest_file: Path) -> subprocess.CompletedProcess:
    """apply_model_steps in a process with no network, on the oldest CPython the installer supports if present."""
    python = find_python("3.8") or sys.executable
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "from cosyinstall.artifact import ArtifactManifest\n"
        "from cosyinstall.model_steps import apply_model_steps\n"
        "from cosyinstall.progress import Reporter\n"
        "from cosyinstall.tree import InstallTree\n"
        "from cosyinstall.venv import Uv\n"
        "m = ArtifactManifest.from_bytes(open(%r, 'rb').read())\n"
        "tree = InstallTree(%r)\n"
        "apply_model_steps(tree, m, Uv(%r, tree.uv_cache), Reporter())\n"
    ) % (str(REPO / "installer"), str(manifest_file), str(to), uv_bin())
    (to.parent / "steps.py").write_text(script, encoding="utf-8")
    return run(offline("%s %s" % (python, to.parent / "steps.py")))


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = (Path(dirpath) / name).lstat()
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def test_wheels_install_and_archive_unpacks_offline_and_a_second_run_changes_nothing(tmp_path: Path, to: Path,
                                                                                    venv_template: Path) -> None:
    bundle = Bundle(tmp_path, RESOURCE, modes={"resource/bin/tool": 0o100755})
    bundle.extract(to)
    proc = apply_offline(to, bundle.manifest_file(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model_dir = to / "pretrained_models" / MODEL
    for name, data in RESOURCE.items():
        assert (model_dir / name).read_bytes() == data
    assert os.stat(model_dir / "resource/bin/tool").st_mode & stat.S_IXUSR
    imported = run([str(to / ".venv/bin/python"), "-c", "import ttsfrd; print(ttsfrd.VALUE)"])
    assert imported.returncode == 0 and imported.stdout.strip() == "42", imported.stderr
    before = snapshot(to / "pretrained_models"), snapshot(to / ".venv")
    again = apply_offline(to, bundle.manifest_file(tmp_path))
    assert again.returncode == 0, again.stderr
    assert (snapshot(to / "pretrained_models"), snapshot(to / ".venv")) == before
    # A venv rebuilt from scratch gets the wheels again from the same call.
    rebuilt = run([uv_bin(), "venv", "--quiet", "--clear", "--python", str(venv_template / "bin/python"), str(to / ".venv")])
    assert rebuilt.returncode == 0 and run([str(to / ".venv/bin/python"), "-c", "import ttsfrd"]).returncode != 0
    third = apply_offline(to, bundle.manifest_file(tmp_path))
    assert third.returncode == 0, third.stderr
    assert run([str(to / ".venv/bin/python"), "-c", "import ttsfrd"]).returncode == 0


def test_a_new_archive_replaces_what_the_old_one_unpacked(tmp_path: Path, to: Path) -> None:
    old = Bundle(tmp_path / "old", RESOURCE)
    old.extract(to)
    apply_model_steps(InstallTree(str(to)), old.manifest, Uv(uv_bin(), str(tmp_path / "uvc")), NullReporter())
    new = Bundle(tmp_path / "new", {"resource/dict.txt": b"more words\n", "resource/new.txt": b"n\n"})
    new.extract(to)
    apply_model_steps(InstallTree(str(to)), new.manifest, Uv(uv_bin(), str(tmp_path / "uvc")), NullReporter())
    model_dir = to / "pretrained_models" / MODEL
    assert (model_dir / "resource/dict.txt").read_bytes() == b"more words\n"
    assert (model_dir / "resource/new.txt").exists()
    assert not (model_dir / "resource/readme.txt").exists() and not (model_dir / "resource/bin").exists()
    state = json.loads(Path(InstallTree(str(to)).model_steps_record).read_text())
    assert sorted(state["archives"]["%s/resource.zip" % MODEL]["files"]) == [
        "%s/resource/dict.txt" % MODEL, "%s/resource/new.txt" % MODEL]


def test_duplicates_are_recreated_from_the_member_that_holds_their_content(tmp_path: Path, to: Path) -> None:
    probe = Bundle(tmp_path / "probe", RESOURCE)
    entry = probe.manifest.by_path()["%s/resource.zip" % MODEL]
    dup = {"path": "Other/resource.zip", "same-as": entry.path, "size": entry.size, "sha256": entry.sha256}
    meta = {"duplicates": [dup], "models": [
        {"name": MODEL, "steps": {"unzip": ["resource.zip"], "install-wheels": []}},
        {"name": "Other", "steps": {"unzip": ["resource.zip"]}}]}
    bundle = Bundle(tmp_path / "b", RESOURCE, extra_meta=meta)
    bundle.extract(to)
    apply_model_steps(InstallTree(str(to)), bundle.manifest, Uv(uv_bin(), str(tmp_path / "uvc")), NullReporter())
    other = to / "pretrained_models" / "Other"
    assert (other / "resource.zip").read_bytes() == (to / "pretrained_models" / MODEL / "resource.zip").read_bytes()
    assert (other / "resource/dict.txt").read_bytes() == b"words\n"


@pytest.mark.parametrize("members, modes, words", [
    ({"../evil.txt": b"x"}, None, "unsafe member name"),
    ({"resource/link": b"/etc/passwd"}, {"resource/link": 0o120777}, "symbolic link"),
    ({"config.json": b"overwrite"}, None, "would overwrite the model file"),
])
def test_unsafe_archives_are_refused_naming_the_member(tmp_path: Path, to: Path, members, modes, words) -> None:
    bundle = Bundle(tmp_path, members, modes=modes)
    bundle.extract(to)
    with pytest.raises(ArtifactRejected) as err:
        apply_model_steps(InstallTree(str(to)), bundle.manifest, Uv(uv_bin(), str(tmp_path / "uvc")), NullReporter())
    assert err.value.exit_code == 3 and words in str(err.value) and "resource.zip" in str(err.value)
    assert not (tmp_path / "evil.txt").exists() and not (to / "pretrained_models" / "evil.txt").exists()


def test_a_wheel_whose_bytes_differ_from_the_manifest_is_refused(tmp_path: Path, to: Path) -> None:
    bundle = Bundle(tmp_path, RESOURCE)
    bundle.extract(to)
    wheel = to / "pretrained_models" / MODEL / bundle.wheels[1]
    data = bytearray(wheel.read_bytes())
    data[-30] ^= 0x01
    wheel.write_bytes(bytes(data))
    with pytest.raises(ArtifactRejected) as err:
        apply_model_steps(InstallTree(str(to)), bundle.manifest, Uv(uv_bin(), str(tmp_path / "uvc")), NullReporter())
    assert err.value.exit_code == 3 and "model wheels" in str(err.value)
    assert run([str(to / ".venv/bin/python"), "-c", "import ttsfrd"]).returncode != 0


def test_a_run_killed_inside_uv_is_repaired_by_the_next(tmp_path: Path, to: Path) -> None:
    bundle = Bundle(tmp_path, RESOURCE)
    bundle.extract(to)
    apply_model_steps(InstallTree(str(to)), bundle.manifest, Uv(uv_bin(), str(tmp_path / "uvc")), NullReporter())
    # What a SIGKILL inside uv can leave: the dist-info written, a module not; the flag still set.
    module = next((to / ".venv" / "lib").glob("python*/site-packages/ttsfrd/__init__.py"))
    module.unlink()
    state_file = Path(InstallTree(str(to)).model_steps_record)
    state_file.write_text(json.dumps(dict(json.loads(state_file.read_text()), **{"wheels-pending": True})))
    half = Path(InstallTree(str(to)).model_steps_tmp)
    half.mkdir(parents=True)
    (half / "file.half").write_bytes(b"half")
    apply_model_steps(InstallTree(str(to)), bundle.manifest, Uv(uv_bin(), str(tmp_path / "uvc")), NullReporter())
    assert module.exists()
    assert "wheels-pending" not in json.loads(state_file.read_text())
    assert not half.exists()
