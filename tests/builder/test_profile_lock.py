"""Build manifests and locks: parsing errors name the file and key; stale sections stop pack."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cosyinstall.errors import ArtifactRejected, UsageError
from cosybuild.lockfile import Lock, read_lock, stale_sections, write_lock
from cosybuild.profile import load_profile
from cosybuild.resolve import LockedFile
from support import cosybuild, one_sentence, small_manifest

GOOD = small_manifest("m")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_good_manifest_loads_and_lock_goes_beside_it(tmp_path: Path) -> None:
    profile = load_profile(str(write(tmp_path, GOOD)))
    assert profile.target.python == "3.10"
    assert profile.server.argv(7000) == ["python", "server.py", "--port", "7000"]
    assert profile.lock_path() == tmp_path / "t.lock.json"


def test_named_manifest_locks_into_lockfiles() -> None:
    profile = load_profile("demo")
    assert profile.lock_path().parent.name == "lockfiles"


@pytest.mark.parametrize("change, words", [
    (('path = "app"', 'path = "app"\ngit = "file:///x"'), "exactly one of git or path"),
    (('source = "local"', 'source = "ftp"'), "source must be one of"),
    (('port = 6008', 'port = 70000'), "port must be a TCP port"),
    (('requirements = ["six==1.16.0"]', 'requirements = []'), "lists no requirements"),
])
def test_bad_manifest_is_a_usage_error_naming_the_file(tmp_path: Path, change, words) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(UsageError) as err:
        load_profile(str(path))
    assert err.value.exit_code == 2
    assert str(path) in str(err.value) and words in str(err.value)


def test_invalid_toml_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n[[[")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_profile(str(path))


def test_unknown_manifest_name_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="demo"):
        load_profile("no-such-manifest")


def test_lock_round_trips_and_detects_stale_sections(tmp_path: Path) -> None:
    profile = load_profile(str(write(tmp_path, GOOD)))
    digests = profile.section_digests()
    lock = Lock("t", {"python": "3.10", "platform": "x86_64-manylinux_2_28"}, dict(digests),
                [LockedFile("six", "1.16.0", "six-1.16.0-py2.py3-none-any.whl", 11053, "a" * 64)],
                {"uv": LockedFile("uv", "0.1.0", "uv.whl", 1, "b" * 64)}, {"path": "app"}, [{"name": "m"}])
    write_lock(lock, profile.lock_path())
    again = read_lock(profile.lock_path())
    assert again is not None and again.to_dict() == lock.to_dict()
    assert "url" not in profile.lock_path().read_text()
    assert stale_sections(again, profile, ["packages", "app", "models"]) == ([], [])
    changed = load_profile(str(write(tmp_path, GOOD.replace("six==1.16.0", "six==1.17.0"))))
    assert stale_sections(again, changed, ["packages", "app", "models"]) == ([], ["packages"])


def test_corrupt_lock_is_rejected_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "x.lock.json"
    path.write_text(json.dumps({"lock-version": 1}), encoding="utf-8")
    with pytest.raises(ArtifactRejected, match="run cosybuild lock"):
        read_lock(path)


def test_pack_on_a_stale_lock_exits_3_and_says_to_lock(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "server.py").write_text("print('hi')\n")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"w")
    path = write(tmp_path, GOOD)
    profile = load_profile(str(path))
    lock = Lock("t", {"python": "3.10", "platform": "x86_64-manylinux_2_28"}, dict(profile.section_digests()))
    lock.digests["packages"] = "0" * 64
    write_lock(lock, profile.lock_path())
    proc = cosybuild("pack", str(path), "--out", str(tmp_path / "dist"))
    assert proc.returncode == 3, proc.stderr
    line = one_sentence(proc.stderr)
    assert "no longer matches" in line and "run cosybuild lock" in line
    assert not (tmp_path / "dist" / "offline_packages.zip").exists()


def test_missing_manifest_path_exits_2(tmp_path: Path) -> None:
    proc = cosybuild("pack", str(tmp_path / "nope.toml"))
    assert proc.returncode == 2
    assert "nope.toml" in one_sentence(proc.stderr)
