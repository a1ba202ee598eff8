"""cosybuild.pack and cosybuild.lockcmd called directly (no CLI), on a manifest of a local app and a
local model, so that no network is needed."""

from __future__ import annotations

import json
import textwrap
import zipfile
from pathlib import Path

import pytest

from cosybuild.cache import Cache
from cosybuild.lockcmd import ensure_lock, lock_command
from cosybuild.lockfile import Lock, read_lock, write_lock
from cosybuild.pack import pack
from cosybuild.profile import Profile, load_profile
from cosybuild.resolve import LockedFile
from cosyinstall.errors import ArtifactRejected
from cosyinstall.progress import NullReporter
from support import small_manifest

MANIFEST = small_manifest("weights")
TARGET = {"python": "3.10", "platform": "x86_64-manylinux_2_28"}


def project(tmp_path: Path, text: str = MANIFEST) -> Profile:
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "app" / "server.py").write_text("print('ready')\n")
    (tmp_path / "weights").mkdir(exist_ok=True)
    (tmp_path / "weights" / "w.bin").write_bytes(b"weights")
    path = tmp_path / "t.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_profile(str(path))


def packages_only_lock(profile: Profile) -> Lock:
    """A lock holding a packages section made by hand (locking it for real needs the index)."""
    lock = Lock("t", dict(TARGET), {"packages": profile.section_digests()["packages"]},
                [LockedFile("six", "1.16.0", "six-1.16.0-py2.py3-none-any.whl", 11053, "a" * 64)],
                {"uv": LockedFile("uv", "0.8.0", "uv-0.8.0-py3-none-manylinux_2_17_x86_64.whl", 1, "b" * 64)})
    write_lock(lock, profile.lock_path())
    return lock


def sections(profile: Profile) -> dict:
    return json.loads(profile.lock_path().read_text(encoding="utf-8"))


def test_lock_only_models_rewrites_that_section_alone(tmp_path: Path) -> None:
    profile = project(tmp_path)
    packages_only_lock(profile)
    before = sections(profile)
    outcome = lock_command(profile, only="models")
    assert outcome.sections == ["models"] and outcome.path == profile.lock_path()
    after = sections(profile)
    assert after["packages"] == before["packages"]
    assert "app" not in after
    assert after["models"]["models"] == [{"name": "m", "source": "local", "repo": "weights"}]
    assert after["models"]["inputs-digest"] == profile.section_digests()["models"]


def test_lock_only_app_re_pins_a_stale_app_and_keeps_the_rest(tmp_path: Path) -> None:
    profile = project(tmp_path)
    packages_only_lock(profile)
    lock_command(profile, only="models")
    (tmp_path / "app2").mkdir()
    changed = project(tmp_path, MANIFEST.replace('path = "app"', 'path = "app2"'))
    before = sections(changed)
    outcome = lock_command(changed, only="app")
    assert outcome.sections == ["app"]
    after = sections(changed)
    assert after["app"] == {"inputs-digest": changed.section_digests()["app"], "path": "app2"}
    assert after["packages"] == before["packages"] and after["models"] == before["models"]


def test_lock_of_a_current_section_writes_nothing(tmp_path: Path) -> None:
    profile = project(tmp_path)
    packages_only_lock(profile)
    lock_command(profile, only="models")
    text = profile.lock_path().read_text(encoding="utf-8")
    outcome = lock_command(profile, only="models")
    assert outcome.sections == []
    assert profile.lock_path().read_text(encoding="utf-8") == text


def test_ensure_lock_locks_a_missing_section_but_refuses_a_stale_one(tmp_path: Path) -> None:
    profile = project(tmp_path)
    packages_only_lock(profile)
    lock, _path, locked_now = ensure_lock(profile, ["models"])
    assert locked_now == ["models"] and lock.models == [{"name": "m", "source": "local", "repo": "weights"}]
    stale = project(tmp_path, MANIFEST.replace("six==1.16.0", "six==1.17.0"))
    with pytest.raises(ArtifactRejected, match="packages changed"):
        ensure_lock(stale, ["packages", "models"])


def test_pack_writes_nothing_when_a_section_is_stale(tmp_path: Path) -> None:
    profile = project(tmp_path)
    packages_only_lock(profile)
    lock_command(profile, only="models")
    lock_text = profile.lock_path().read_text(encoding="utf-8")
    changed = project(tmp_path, MANIFEST.replace('repo = "weights"', 'repo = "weights"\ninclude = ["*.bin"]'))
    out = tmp_path / "dist"
    with pytest.raises(ArtifactRejected) as info:
        pack(changed, out, NullReporter(), only="models", cache=Cache(tmp_path / "cache"))
    assert info.value.exit_code == 3
    assert str(changed.lock_path()) in str(info.value) and "models changed" in str(info.value)
    assert not out.exists()
    assert changed.lock_path().read_text(encoding="utf-8") == lock_text


def test_pack_only_models_locks_the_missing_section_and_writes_the_models_artifacts(tmp_path: Path) -> None:
    profile = project(tmp_path)
    out = tmp_path / "dist"
    result = pack(profile, out, NullReporter(), only="models", cache=Cache(tmp_path / "cache"))
    assert result.locked_now == ["models"]
    assert sorted(p.name for p in result.written) == ["SHA256SUMS", "cosyinstall.pyz", "pretrained_models.zip"]
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS", "cosyinstall.pyz", "pretrained_models.zip"]
    with zipfile.ZipFile(out / "pretrained_models.zip") as z:
        assert z.read("m/w.bin") == b"weights"
    lock = read_lock(profile.lock_path())
    assert lock is not None and sorted(lock.digests) == ["models"]
