"""wheelcheck: a wheel with an escaping name, a wrong or incomplete RECORD, or a hostile zip is never packed."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

import zipcraft

from cosybuild.wheelcheck import CHECK_VERSION, check_wheel, check_wheels
from cosyinstall.errors import ArtifactRejected

WHEEL = "demo-1.0-py3-none-any.whl"
FILES = {"demo/__init__.py": b"VALUE = 1\n", "demo/data.bin": b"\x00\x01" * 4000,
         "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
         "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
RECORD = "demo-1.0.dist-info/RECORD"


def _row(name: str, data: bytes, algorithm: str = "sha256") -> str:
    digest = base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=").decode()
    return "%s,%s=%s,%d" % (name, algorithm, digest, len(data))


def _wheel(folder: Path, files: Optional[Dict[str, bytes]] = None, rows: Optional[List[str]] = None,
           extra: Tuple[Tuple[str, bytes], ...] = (), record: bool = True) -> Path:
    files = dict(FILES if files is None else files)
    if rows is None:
        rows = [_row(n, d) for n, d in sorted(files.items())] + ["%s,," % RECORD]
    path = folder / WHEEL
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in sorted(files.items()):
            z.writestr(name, data)
        for name, data in extra:
            z.writestr(name, data)
        if record:
            z.writestr(RECORD, "\n".join(rows) + "\n")
    return path


def _refused(path: Path) -> str:
    with pytest.raises(ArtifactRejected) as err:
        check_wheel(path)
    assert err.value.exit_code == 3
    assert path.name in err.value.message
    return err.value.message


def test_a_sound_wheel_passes_and_is_remembered_by_its_sha256(tmp_path: Path) -> None:
    path = _wheel(tmp_path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    check_wheels([(path, sha)], tmp_path / "memo")
    assert (tmp_path / "memo" / CHECK_VERSION / sha).is_file()


def test_real_wheels_from_the_packed_demo_pass(demo_dist: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(demo_dist / "offline_packages.zip") as z:
        names = [n for n in z.namelist() if n.endswith(".whl")]
        assert names
        paths = []
        for name in names:
            out = tmp_path / name.split("/")[-1]
            out.write_bytes(z.read(name))
            paths.append((out, hashlib.sha256(out.read_bytes()).hexdigest()))
    check_wheels(paths)


@pytest.mark.parametrize("name, why", [("../evil.py", "'..'"), ("/etc/evil.py", "absolute path"),
                                       ("demo/..\\..\\evil.py", "backslash")])
def test_a_member_escaping_the_wheel_is_refused(tmp_path: Path, name: str, why: str) -> None:
    files = dict(FILES, **{name: b"x = 1\n"})
    msg = _refused(_wheel(tmp_path, files))
    assert repr(name) in msg and why in msg


def test_record_missing(tmp_path: Path) -> None:
    assert "no .dist-info/RECORD" in _refused(_wheel(tmp_path, record=False))


def test_a_member_record_does_not_list(tmp_path: Path) -> None:
    msg = _refused(_wheel(tmp_path, extra=(("demo/hidden.py", b"import os\n"),)))
    assert "member demo/hidden.py is not listed in %s" % RECORD in msg


def test_record_listing_a_member_the_wheel_lacks(tmp_path: Path) -> None:
    rows = [_row(n, d) for n, d in sorted(FILES.items())] + [_row("demo/gone.py", b""), "%s,," % RECORD]
    assert "lists demo/gone.py, which the wheel does not hold" in _refused(_wheel(tmp_path, rows=rows))


def test_a_hash_that_does_not_match(tmp_path: Path) -> None:
    rows = [_row(n, b"other" if n == "demo/data.bin" else d) for n, d in sorted(FILES.items())]
    rows = [r.replace(",5", ",8000") if r.startswith("demo/data.bin") else r for r in rows] + ["%s,," % RECORD]
    assert "member demo/data.bin does not match its sha256 in RECORD" in _refused(_wheel(tmp_path, rows=rows))


def test_a_size_that_does_not_match(tmp_path: Path) -> None:
    rows = [_row(n, d) for n, d in sorted(FILES.items())]
    rows = [r.rsplit(",", 1)[0] + ",7" if r.startswith("demo/data.bin") else r for r in rows] + ["%s,," % RECORD]
    assert "member demo/data.bin is 8000 bytes but RECORD says 7" in _refused(_wheel(tmp_path, rows=rows))


def test_weak_or_missing_hashes_are_refused(tmp_path: Path) -> None:
    rows = [_row(n, d, "md5" if n == "demo/__init__.py" else "sha256") for n, d in sorted(FILES.items())]
    assert "demo/__init__.py a md5 hash" in _refused(_wheel(tmp_path, rows=rows + ["%s,," % RECORD]))
    rows = ["demo/__init__.py,," if r.startswith("demo/__init__.py") else r for r in rows]
    (tmp_path / "b").mkdir()
    assert "gives no hash for demo/__init__.py" in _refused(_wheel(tmp_path / "b", rows=rows + ["%s,," % RECORD]))


def test_record_listing_a_member_twice(tmp_path: Path) -> None:
    rows = [_row(n, d) for n, d in sorted(FILES.items())]
    assert "lists demo-1.0.dist-info/METADATA twice" in _refused(_wheel(tmp_path, rows=rows + rows[:1] + ["%s,," % RECORD]))


def test_a_wheel_that_is_a_hostile_zip_is_refused_by_the_installer_checks(tmp_path: Path) -> None:
    path = tmp_path / WHEEL
    path.write_bytes(zipcraft.quoted_overlap_bomb(5, 1 << 20))
    assert "member B.bin overlaps member A.bin" in _refused(path)


def test_a_wheel_whose_local_header_names_another_file_is_refused(tmp_path: Path) -> None:
    members = [zipcraft.Member(b"demo/__init__.py", b"x", local={"name": b"demo/__init__.pz"})]
    path = tmp_path / WHEEL
    path.write_bytes(zipcraft.build(members))
    assert "is named 'demo/__init__.pz' in its local header" in _refused(path)
