"""Opening an artifact: every unsafe or inconsistent central directory is refused before extraction."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from support import manifest_bytes, patch_file, write_zip

from cosyinstall.errors import ArtifactRejected
from cosyinstall.zipread import ArtifactReader

GOOD = {"m/config.json": b'{"a": 1}\n', "m/weights.bin": b"\x01" * 4096}


def _zip(path: Path, files=GOOD, extra=(), manifest=None) -> Path:
    members = [(n, d) for n, d in sorted(files.items())] + list(extra)
    members.append(("MANIFEST.json", manifest if manifest is not None else manifest_bytes("models", files)))
    return write_zip(path, members)


def _refused(path: Path) -> str:
    with pytest.raises(ArtifactRejected) as err:
        ArtifactReader(str(path), "models").close()
    assert err.value.exit_code == 3
    return err.value.message


def test_a_consistent_artifact_opens_and_copies(tmp_path: Path) -> None:
    with ArtifactReader(str(_zip(tmp_path / "a.zip")), "models") as reader:
        out = io.BytesIO()
        entry = reader.manifest.by_path()["m/weights.bin"]
        assert reader.copy_member(entry, out) == entry.sha256
        assert out.getvalue() == GOOD["m/weights.bin"]


def test_member_not_in_the_manifest(tmp_path: Path) -> None:
    msg = _refused(_zip(tmp_path / "a.zip", extra=[("m/extra.txt", b"x")]))
    assert "m/extra.txt" in msg and "does not list" in msg


def test_member_twice(tmp_path: Path) -> None:
    msg = _refused(_zip(tmp_path / "a.zip", extra=[("m/config.json", b"other")]))
    assert "m/config.json twice" in msg


def test_members_that_collide_on_a_case_insensitive_disk(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["m/Config.json"] = b"x"
    with pytest.raises(ArtifactRejected) as err:
        ArtifactReader(str(_zip(tmp_path / "a.zip", files=files)), "models")
    assert "twice" in err.value.message


def test_listed_member_missing_from_the_zip(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["m/tokenizer.json"] = b"{}"
    members = [(n, d) for n, d in sorted(GOOD.items())] + [("MANIFEST.json", manifest_bytes("models", files))]
    msg = _refused(write_zip(tmp_path / "a.zip", members))
    assert "lacks m/tokenizer.json" in msg


def _special(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
    info.create_system = 3
    info.external_attr = mode << 16
    return info


@pytest.mark.parametrize("mode, words", [
    (stat.S_IFLNK | 0o777, "symbolic link"),
    (stat.S_IFCHR | 0o600, "not a regular file"),
    (stat.S_IFIFO | 0o600, "not a regular file"),
])
def test_links_and_devices_even_when_listed(tmp_path: Path, mode: int, words: str) -> None:
    files = dict(GOOD)
    files["m/link"] = b"/etc/passwd"
    members = [(n, d) for n, d in sorted(GOOD.items())] + [(_special("m/link", mode), b"/etc/passwd")]
    members.append(("MANIFEST.json", manifest_bytes("models", files)))
    msg = _refused(write_zip(tmp_path / "a.zip", members))
    assert "m/link" in msg and words in msg


@pytest.mark.parametrize("name, words", [
    ("../evil.txt", "'..'"),
    ("/tmp/evil.txt", "absolute path"),
    ("m\\..\\..\\evil.txt", "backslash"),
    ("C:/evil.txt", "drive letter"),
])
def test_unsafe_names_in_the_zip(tmp_path: Path, name: str, words: str) -> None:
    msg = _refused(_zip(tmp_path / "a.zip", extra=[(name, b"pwned")]))
    assert repr(name) in msg and words in msg


def test_unsafe_name_in_the_manifest(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["../evil.txt"] = b"x"
    members = [(n, d) for n, d in sorted(files.items())] + [("MANIFEST.json", manifest_bytes("models", files))]
    msg = _refused(write_zip(tmp_path / "a.zip", members))
    assert "../evil.txt" in msg and "unsafe" in msg


def test_a_nul_in_a_stored_name(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["m/evilXjpg"] = b"x"
    path = _zip(tmp_path / "a.zip", files=files)
    patch_file(path, b"m/evilXjpg", b"m/evil\x00jpg")
    assert "NUL" in _refused(path)


def test_size_in_manifest_differs_from_the_zip(tmp_path: Path) -> None:
    manifest = manifest_bytes("models", GOOD, sizes={"m/weights.bin": 10})
    msg = _refused(_zip(tmp_path / "a.zip", manifest=manifest))
    assert "m/weights.bin is 4096 bytes in the zip but 10 in its manifest" in msg


def test_unsupported_method_and_encryption_are_refused_up_front(tmp_path: Path) -> None:
    path = _zip(tmp_path / "a.zip")
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("m/config.json")
    data = bytearray(path.read_bytes())
    # The central directory record of m/config.json: method at offset 10, flags at 8, name at 46.
    start = data.find(b"PK\x01\x02")
    while data[start + 46:start + 46 + len(b"m/config.json")] != b"m/config.json":
        start = data.find(b"PK\x01\x02", start + 4)
    data[start + 10:start + 12] = (99).to_bytes(2, "little")
    (tmp_path / "m99.zip").write_bytes(bytes(data))
    assert "compression method 99" in _refused(tmp_path / "m99.zip")
    data[start + 10:start + 12] = info.compress_type.to_bytes(2, "little")
    flags = int.from_bytes(data[start + 8:start + 10], "little") | 1
    data[start + 8:start + 10] = flags.to_bytes(2, "little")
    (tmp_path / "enc.zip").write_bytes(bytes(data))
    assert "encrypted" in _refused(tmp_path / "enc.zip")


def test_a_zip_bomb_stops_at_the_declared_size(tmp_path: Path) -> None:
    # 64 MiB of zeros deflates to ~64 KiB; directory and manifest are made to claim 1000 bytes.
    bomb = b"\0" * (64 * 1024 * 1024)
    files = {"m/bomb.bin": bomb[:1000]}
    path = write_zip(tmp_path / "bomb.zip", [("m/bomb.bin", bomb), ("MANIFEST.json", manifest_bytes("models", files))])
    patch_file(path, (len(bomb)).to_bytes(4, "little"), (1000).to_bytes(4, "little"))
    with ArtifactReader(str(path), "models") as reader:
        entry = reader.manifest.by_path()["m/bomb.bin"]

        class Capped(io.BytesIO):
            def write(self, data):  # the extraction never writes past the declared size
                assert self.tell() + len(data) <= 1000
                return super().write(data)

        with pytest.raises(ArtifactRejected) as err:
            reader.copy_member(entry, Capped())
    assert "m/bomb.bin in bomb.zip is corrupt" in err.value.message


def test_not_a_zip_at_all(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(b"PK\x03\x04 but then nothing")
    assert "not a readable zip" in _refused(path)


def test_truncated_zip_loses_its_directory(tmp_path: Path) -> None:
    path = _zip(tmp_path / "a.zip")
    path.write_bytes(path.read_bytes()[:-40])
    assert "truncated or corrupt" in _refused(path)


def test_wrong_kind(tmp_path: Path) -> None:
    with pytest.raises(ArtifactRejected) as err:
        ArtifactReader(str(_zip(tmp_path / "a.zip")), "packages")
    assert "holds a models artifact where a packages artifact was expected" in err.value.message
