"""zipcheck: every hostile zip of the corpus is refused with exit 3, on every CPython 3.8-3.13 here.

The corpus is made by tests/zipcraft.py, byte by byte, covering what uv's (0.8.6+) and PyPI's
validators reject and the overlap bombs that CPython 3.8.18, 3.11.7 and 3.12.1 still accept.
Each zip is opened and every member read in a subprocess of each interpreter, the way the
installer does (open_zip, then the bounded member streams), so the answer cannot depend on
the patch level of zipfile.
"""

from __future__ import annotations

import bz2
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

import zipcraft
from support import apply_argv, find_python, one_sentence, rewrite_sums, run
from zipcraft import Member, build, deflate

from cosyinstall.errors import ArtifactRejected
from cosyinstall.zipcheck import MAX_MEMBERS, check_zip
from cosyinstall.zipread import open_zip

INSTALLER = str(Path(__file__).resolve().parents[2] / "installer")
MINORS = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"]

# Open the zip as the installer does, read every member through the bounded streams, and
# exit with the error's code and its one sentence (any other exception is a traceback, exit 1).
RUNNER = r"""
import json, os, resource, sys
limit = int(os.environ.get("AS_LIMIT", "0"))
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from cosyinstall.errors import CosyError
from cosyinstall.handmade import HandmadeReader
from cosyinstall.zipread import open_zip
results = {}
for path in sys.argv[1:]:
    try:
        reader = HandmadeReader(path, "models", open_zip(path))
        try:
            damage = reader.find_corrupt_member()
            results[path] = [3 if damage else 0, damage + "." if damage else "", len(reader.members)]
        finally:
            reader.close()
    except CosyError as exc:
        results[path] = [exc.exit_code, exc.sentence(), 0]
print(json.dumps({"results": results, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _two(**kw: object) -> List[Member]:
    return [Member(b"a.txt", b"hello " * 100, **kw), Member(b"b.bin", b"\x01\x02" * 50, method=0)]  # type: ignore[arg-type]


def _name_mismatch() -> bytes:
    return build([Member(b"a.txt", b"hello", local={"name": b"b.txt"}), Member(b"c.txt", b"x")])


def _method_mismatch() -> bytes:
    return build([Member(b"a.txt", b"hello", method=0, local={"method": 8})])


def _crc_mismatch() -> bytes:
    return build([Member(b"a.txt", b"hello", local={"crc": 1234})])


def _size_mismatch() -> bytes:
    return build([Member(b"a.txt", b"hello", local={"usize": 6})])


def _flags_mismatch() -> bytes:
    return build([Member(b"a.txt", b"hello", local={"flags": 0})])


def _full_overlap() -> bytes:
    # Two directory records, one local header: the second name is read from the first's bytes.
    return build([Member(b"a.txt", b"hello"), Member(b"b.txt", b"other", central={"offset": 0})])


def _overlap_into_directory() -> bytes:
    data = deflate(b"hello")
    return build([Member(b"a.txt", b"hello", local={"csize": len(data) + 20}, central={"csize": len(data) + 20})])


def _two_end_records() -> bytes:
    good = build(_two())
    fake = good[-22:]
    # The real end record's comment holds a second one: rfind-style readers take the fake.
    return good[:-2] + struct.pack("<H", len(fake)) + fake


def _bytes_after_the_end() -> bytes:
    return build(_two(), trailer=b"tail bytes")


def _bytes_between_members() -> bytes:
    members = _two()
    members[1].before = b"\0" * 7
    return build(members)


def _bytes_before_the_directory() -> bytes:
    return build(_two(), after=b"PK\x03\x04hidden")


def _prepended() -> bytes:
    members = _two()
    members[0].before = b"#!/bin/sh\nexec something\n"
    return build(members)


def _hidden_local_header() -> bytes:
    # A whole member the directory does not list, between two it does (uv: missing central entry).
    hidden = zipcraft.local_header(b"evil.txt", 0, 0, zlib.crc32(b"evil"), 4, 4) + b"evil"
    members = _two()
    members[1].before = hidden
    return build(members)


def _directory_count_lies() -> bytes:
    return build(_two(), eocd={"count": 1})


def _zip64_locator_wrong() -> bytes:
    return build(_two(), zip64=True, zip64_fields={"locator": 3})


def _zip64_disagrees() -> bytes:
    return build(_two(), zip64=True, zip64_fields={"count": 3})


def _zip64_extra_not_needed() -> bytes:
    extra = struct.pack("<HHQ", 1, 8, 5)
    return build([Member(b"a.txt", b"hello", method=0, central={"extra": extra})])


def _zip64_extra_too_short() -> bytes:
    extra = struct.pack("<HHQ", 1, 8, 5)
    return build([Member(b"a.txt", b"hello", method=0, central={"extra": extra, "usize": 0xFFFFFFFF, "csize": 0xFFFFFFFF})])


def _zip64_saturated_without_extra() -> bytes:
    return build([Member(b"a.txt", b"hello", method=0, central={"usize": 0xFFFFFFFF})])


def _damaged_extra() -> bytes:
    return build([Member(b"a.txt", b"hello", local={"extra": b"\x75\x70\x09"})])


def _unicode_path_disagrees() -> bytes:
    other = b"../../etc/cron.d/x"
    extra = struct.pack("<HHBI", 0x7075, 5 + len(other), 1, zlib.crc32(b"a.txt")) + other
    return build([Member(b"a.txt", b"hello", central={"extra": extra})])


def _control_character() -> bytes:
    return build([Member(b"model/a\x1b[2Jb.txt", b"hello")])


def _newline_in_name() -> bytes:
    return build([Member(b"model/a\nb.txt", b"hello")])


def _dot_dot_name() -> bytes:
    return build([Member(b"../evil.txt", b"hello")])


def _bad_utf8() -> bytes:
    return build([Member(b"a\xff\xfe.txt", b"hello")])


def _bzip2() -> bytes:
    # 64 MiB of zeros in 45 bytes: zipfile would inflate it with no output bound.
    payload = b"\0" * (64 * 1024 * 1024)
    return build([Member(b"a.bin", payload, method=12, raw=bz2.compress(payload))])


def _lzma() -> bytes:
    payload = b"\0" * (1024 * 1024)
    props = lzma._encode_filter_properties({"id": lzma.FILTER_LZMA1})  # type: ignore[attr-defined]
    body = lzma.compress(payload, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA1}])
    return build([Member(b"a.bin", payload, method=14, raw=struct.pack("<BBH", 9, 4, len(props)) + props + body)])


def _encrypted() -> bytes:
    return build([Member(b"a.txt", b"hello", flags=zipcraft.UTF8 | 1)])


def _stored_sizes_differ() -> bytes:
    return build([Member(b"a.txt", b"hello", method=0, local={"usize": 9}, central={"usize": 9})])


def _folder_with_data() -> bytes:
    return build([Member(b"folder/", b"hello", method=0, mode=0o40755)])


def _inflates_beyond() -> bytes:
    payload = b"\0" * (1024 * 1024)
    declared = payload[:1000]
    crc = zlib.crc32(declared)
    m = Member(b"a.bin", declared, raw=deflate(payload), local={"crc": crc}, central={"crc": crc})
    return build([m])


def _inflates_short() -> bytes:
    m = Member(b"a.bin", b"x" * 2000, raw=deflate(b"x" * 1000))
    return build([m])


def _bytes_after_deflate_end() -> bytes:
    return build([Member(b"a.bin", b"hello", raw=deflate(b"hello") + b"junk")])


def _big_declared_size() -> bytes:
    # 1 TiB declared (ZIP64 in both headers), a few bytes of deflate: refused when the stream ends early.
    size = 1 << 40
    local = struct.pack("<HHQQ", 1, 16, size, len(deflate(b"hello")))
    central = struct.pack("<HHQQ", 1, 16, size, len(deflate(b"hello")))
    m = Member(b"a.bin", b"hello", local={"usize": 0xFFFFFFFF, "csize": 0xFFFFFFFF, "extra": local},
               central={"usize": 0xFFFFFFFF, "csize": 0xFFFFFFFF, "extra": central})
    return build([m])


def _descriptor_contradicts() -> bytes:
    data = deflate(b"hello")
    desc = struct.pack("<4s3I", b"PK\x07\x08", 99, len(data), 5)
    return build([Member(b"a.txt", b"hello", flags=zipcraft.UTF8 | 8, local={"crc": 0, "csize": 0, "usize": 0},
                        descriptor=desc)])


def _descriptor_missing() -> bytes:
    return build([Member(b"a.txt", b"hello", flags=zipcraft.UTF8 | 8, local={"crc": 0, "csize": 0, "usize": 0})])


def _too_many_declared() -> bytes:
    return zipcraft.many_empty(3, declared=MAX_MEMBERS + 1)


def _fifield_bomb() -> bytes:
    return zipcraft.quoted_overlap_bomb(20, 8 * 1024 * 1024)


# name -> (bytes, words the sentence must hold besides the zip's name)
CORPUS: Dict[str, Tuple[Callable[[], bytes], str]] = {
    "local and central names differ": (_name_mismatch, "member a.txt is named 'b.txt' in its local header"),
    "local and central methods differ": (_method_mismatch,
                                         "member a.txt uses method 8 in its local header but 0 in the central directory"),
    "local and central CRC differ": (_crc_mismatch, "member a.txt has CRC-32 1234 in its local header"),
    "local and central sizes differ": (_size_mismatch, "member a.txt has size 6 in its local header but 5"),
    "local and central flags differ": (_flags_mismatch, "member a.txt has flags 0x0000 in its local header"),
    "quoted overlap bomb": (_fifield_bomb, "member B.bin overlaps member A.bin"),
    "full overlap": (_full_overlap, "overlaps member"),
    "member overlaps the directory": (_overlap_into_directory, "member a.txt has data running into the central directory"),
    "two end records": (_two_end_records, "does not end where its end record begins"),
    "bytes after the end record": (_bytes_after_the_end, "declares a 0-byte comment but 10 bytes follow it"),
    "bytes between members": (_bytes_between_members, "member b.bin is preceded by 7 bytes that belong to no member"),
    "bytes before the directory": (_bytes_before_the_directory, "bytes between its last member and its central directory"),
    "prepended data": (_prepended, "bytes before its first member (prepended data"),
    "hidden local header": (_hidden_local_header, "member b.bin is preceded by"),
    "directory count lies": (_directory_count_lies, "beyond its 1 declared records"),
    "ZIP64 locator points elsewhere": (_zip64_locator_wrong, "ZIP64 locator points at byte 3"),
    "ZIP64 end record disagrees": (_zip64_disagrees, "end record and its ZIP64 end record disagree"),
    "ZIP64 extra without saturated fields": (_zip64_extra_not_needed, "ZIP64 extra field that does not match"),
    "ZIP64 extra too short": (_zip64_extra_too_short, "ZIP64 extra field too short"),
    "ZIP64 sizes without the extra": (_zip64_saturated_without_extra, "declares ZIP64 sizes"),
    "damaged extra field": (_damaged_extra, "member a.txt has a damaged extra field"),
    "Unicode Path names another file": (_unicode_path_disagrees, "second name '../../etc/cron.d/x'"),
    "control character in a name": (_control_character, "has a control character in its name"),
    "newline in a name": (_newline_in_name, "has a control character in its name"),
    "dot-dot name": (_dot_dot_name, "unsafe member name '../evil.txt'"),
    "name not UTF-8 though flagged": (_bad_utf8, "flagged UTF-8 but its name is not"),
    "bzip2 member": (_bzip2, "member a.bin uses compression method 12 (bzip2)"),
    "LZMA member": (_lzma, "member a.bin uses compression method 14 (LZMA)"),
    "encrypted member": (_encrypted, "member a.txt is encrypted"),
    "stored sizes differ": (_stored_sizes_differ, "is stored but declares 5 compressed and 9 uncompressed bytes"),
    "folder entry with data": (_folder_with_data, "member folder/ is a folder entry holding 5 bytes"),
    "inflates beyond its declared size": (_inflates_beyond, "a.bin inflates beyond its declared 1000 bytes"),
    "inflates to less than its declared size": (_inflates_short, "ends after 1000 of its declared 2000 bytes"),
    "bytes after the deflate stream": (_bytes_after_deflate_end, "bytes follow the end of its deflate stream"),
    "1 TiB declared, 5 bytes inside": (_big_declared_size, "ends after 5 of its declared 1099511627776 bytes"),
    "data descriptor contradicts": (_descriptor_contradicts, "data descriptor (CRC-32 99"),
    "data descriptor missing": (_descriptor_missing, "where its data descriptor should be"),
    "too many members": (_too_many_declared, "declares %d members, more than the %d" % (MAX_MEMBERS + 1, MAX_MEMBERS)),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp("corpus")
    paths = {}
    for i, (case, (make, _words)) in enumerate(sorted(CORPUS.items())):
        path = folder / ("%02d.zip" % i)
        path.write_bytes(make())
        paths[case] = path
    # Controls: well-formed zips the same builder makes are accepted and read back.
    (folder / "good.zip").write_bytes(build(_two()))
    data = deflate(b"hello")
    desc = struct.pack("<4s3I", b"PK\x07\x08", zlib.crc32(b"hello"), len(data), 5)
    (folder / "descriptor.zip").write_bytes(build([Member(b"a.txt", b"hello", flags=zipcraft.UTF8 | 8,
                                                          local={"crc": 0, "csize": 0, "usize": 0}, descriptor=desc)]))
    (folder / "zip64.zip").write_bytes(build(_two(), zip64=True))
    paths["good"] = folder / "good.zip"
    paths["good with a data descriptor"] = folder / "descriptor.zip"
    paths["good with ZIP64 end records"] = folder / "zip64.zip"
    return paths


def _interpreters() -> List[str]:
    return [m for m in MINORS if find_python(m)]


def test_every_cpython_from_3_8_to_3_13_is_here() -> None:
    # The point is the patch levels without the overlap fix: say so if one is missing.
    assert _interpreters() == MINORS, "pyenv should provide CPython %s" % ", ".join(MINORS)


@pytest.mark.parametrize("minor", MINORS)
def test_the_corpus_is_refused_with_exit_3_on_each_cpython(minor: str, corpus: Dict[str, Path]) -> None:
    python = find_python(minor)
    assert python, "CPython %s is not on this machine" % minor
    env = dict(os.environ, PYTHONPATH=INSTALLER)
    proc = subprocess.run([python, "-c", RUNNER] + [str(p) for p in corpus.values()], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    results = json.loads(proc.stdout)["results"]
    for case, path in corpus.items():
        code, sentence, _members = results[str(path)]
        if case.startswith("good"):
            assert (code, sentence) == (0, ""), (minor, case, sentence)
            continue
        words = CORPUS[case][1]
        assert code == 3, (minor, case, sentence)
        assert path.name in sentence and words in sentence, (minor, case, sentence)
        assert sentence.count(". ") == 0 and "\n" not in sentence, (minor, case, sentence)


# Under a 512 MB address space: the too-many-members zips, the limit itself, and a huge declared size.


def test_member_counts_and_declared_sizes_stay_within_512_mb(tmp_path: Path) -> None:
    at_limit = tmp_path / "at-limit.zip"
    at_limit.write_bytes(zipcraft.many_empty(MAX_MEMBERS))
    over = tmp_path / "over-limit.zip"
    over.write_bytes(zipcraft.many_empty(MAX_MEMBERS + 1))
    lying = tmp_path / "lying-count.zip"
    lying.write_bytes(zipcraft.many_empty(10, declared=0xFFFFFFFF))
    huge = tmp_path / "huge.zip"
    huge.write_bytes(_big_declared_size())
    bomb = tmp_path / "bzip2.zip"
    bomb.write_bytes(_bzip2())
    env = dict(os.environ, PYTHONPATH=INSTALLER)
    paths = [at_limit, over, lying, huge, bomb]
    env["AS_LIMIT"] = str(512 * 1024 * 1024)
    proc = subprocess.run([sys.executable, "-c", RUNNER] + [str(p) for p in paths], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    results = report["results"]
    assert results[str(at_limit)][0] == 0 and results[str(at_limit)][2] == MAX_MEMBERS, results[str(at_limit)]
    assert results[str(over)][0] == 3 and "more than the %d" % MAX_MEMBERS in results[str(over)][1]
    assert results[str(lying)][0] == 3 and "declares 4294967295 members" in results[str(lying)][1]
    assert results[str(huge)][0] == 3 and "ends after 5 of its declared" in results[str(huge)][1]
    assert results[str(bomb)][0] == 3 and "compression method 12" in results[str(bomb)][1]
    # A zip of MAX_MEMBERS members opens and is read in far less than the limit: the justification of MAX_MEMBERS.
    assert report["peak_kib"] < 400 * 1024, report["peak_kib"]


def test_a_normal_artifact_and_real_wheels_pass(demo_dist: Path) -> None:
    for name in ("offline_packages.zip", "pretrained_models.zip"):
        archive = check_zip(str(demo_dist / name))
        assert any(i.filename == "MANIFEST.json" for i in archive.infolist())
    with open_zip(str(demo_dist / "offline_packages.zip")) as archive:
        wheels = [i for i in archive.infolist() if i.filename.endswith(".whl")]
        assert wheels


def test_zip_written_by_python_with_a_zip64_member_near_2_gib_passes(tmp_path: Path) -> None:
    # zipfile writes a ZIP64 extra in the local header alone for members it thinks may pass
    # 2 GiB (force_zip64); the directory then has none. Such artifacts must open.
    import zipfile

    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w") as z:
        with z.open(zipfile.ZipInfo("big.bin"), "w", force_zip64=True) as out:
            out.write(b"x" * 1000)
        z.writestr("small.txt", b"y")
    archive = check_zip(str(path))
    with archive.open(archive.getinfo("big.bin")) as src:
        assert src.read() == b"x" * 1000


def test_an_unpacked_model_archive_goes_through_the_same_check(tmp_path: Path) -> None:
    path = tmp_path / "resource.zip"
    path.write_bytes(_fifield_bomb())
    with pytest.raises(ArtifactRejected) as err:
        open_zip(str(path))
    assert err.value.exit_code == 3 and "overlaps member A.bin" in err.value.message


def test_apply_refuses_an_overlap_bomb_in_a_hand_made_zip_with_exit_3(demo_dist: Path, tmp_path: Path) -> None:
    up = tmp_path / "upload"
    up.mkdir()
    for name in ("cosyinstall.pyz", "offline_packages.zip"):
        shutil.copy(demo_dist / name, up)
    (up / "pretrained_models.zip").write_bytes(zipcraft.quoted_overlap_bomb(20, 8 * 1024 * 1024))
    rewrite_sums(up)
    to = tmp_path / "to"
    for minor in ("3.8", "3.12"):
        proc = run(apply_argv(up, to, python=find_python(minor) or "python3"))
        assert proc.returncode == 3, (minor, proc.stdout, proc.stderr)
        sentence = one_sentence(proc.stderr)
        assert "pretrained_models.zip: member B.bin overlaps member A.bin" in sentence, sentence
        assert not list((to / "pretrained_models").rglob("*.bin")), "nothing of the bomb is written"
