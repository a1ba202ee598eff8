"""Hostile bytes in what the installer reads end in exit 3 (or 4) and one sentence, in bounded memory.

Every case runs the real command line (`python3 -m cosyinstall check`, the pyz's entry point,
from the source tree) under a 512 MB address-space limit (RLIMIT_AS), so a parser that holds
a whole hostile file, or builds millions of objects from it, fails the test with a
MemoryError traceback instead of passing. The cases are the issue's: a 200 MB MANIFEST.json of
nested lists, a MANIFEST.json of millions of empty lists, JSON nested 200,000 deep, 300 MB of
SHA256SUMS comments, a 5,000-digit size in SHA256SUMS, 500,000 empty members in a hand-made
zip, a member path 2,494 folders deep, and a file and a folder of the same name.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest

from cosyinstall.tree import InstallTree
from support import REPO, manifest_bytes, one_sentence, rewrite_sums, write_zip

sys.path.insert(0, str(REPO / "tests"))
import zipcraft  # noqa: E402

INSTALLER = str(REPO / "installer")
AS_LIMIT = 512 * 1024 * 1024
MODELS = {"voice/config.json": b'{"sr": 22050}\n', "voice/weights.bin": bytes(range(256)) * 64}


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def cosyinstall_limited(*args: str) -> subprocess.CompletedProcess:
    """The installer's CLI in a child limited to 512 MB of address space."""
    env = dict(os.environ, PYTHONPATH=INSTALLER)
    return subprocess.run([sys.executable, "-m", "cosyinstall", *args], capture_output=True, text=True,
                          env=env, timeout=600, preexec_fn=_limited)


def _models_zip(up: Path, manifest: bytes, files: Dict[str, bytes] = MODELS) -> Path:
    members = [(n, d) for n, d in sorted(files.items())] + [("MANIFEST.json", manifest)]
    return write_zip(up / "pretrained_models.zip", members)


def _streamed_manifest(up: Path, chunks: Callable[[], object]) -> None:
    """A models zip whose MANIFEST.json is written from chunks (deflated): large inside, small on disk."""
    with zipfile.ZipFile(up / "pretrained_models.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in sorted(MODELS.items()):
            z.writestr(name, data)
        with z.open(zipfile.ZipInfo("MANIFEST.json", (2020, 1, 1, 0, 0, 0)), "w", force_zip64=True) as out:
            for chunk in chunks():  # type: ignore[attr-defined]
                out.write(chunk)


def _manifest_of_200_mb_nested_lists(up: Path) -> str:
    def chunks():
        for _ in range(100):
            yield b"[" * (1 << 20)
        for _ in range(100):
            yield b"]" * (1 << 20)
    _streamed_manifest(up, chunks)
    rewrite_sums(up)
    return "MANIFEST.json in %s is 209715200 bytes, more than the" % (up / "pretrained_models.zip")


def _manifest_of_millions_of_empty_lists(up: Path) -> str:
    # 30 MB, under the byte limit: ten million empty lists would take over 600 MB as objects.
    def chunks():
        yield b'{"format": "cosy-offline/1", "kind": "models", "name": "x", "target": {}, "files": [], "junk": ['
        for _ in range(10):
            yield b"[]," * (1 << 20)
        yield b"[]]}"
    _streamed_manifest(up, chunks)
    rewrite_sums(up)
    return "MANIFEST.json in pretrained_models.zip is refused: it holds more than 2000000 values"


def _manifest_nested_200000_deep(up: Path) -> str:
    _models_zip(up, b"[" * 200000 + b"]" * 200000)
    rewrite_sums(up)
    return "MANIFEST.json in pretrained_models.zip is refused: it nests deeper than"


def _manifest_with_a_5000_digit_size(up: Path) -> str:
    raw = manifest_bytes("models", MODELS).replace(b'"size": 14', b'"size": ' + b"9" * 5000, 1)
    assert b"9" * 5000 in raw
    _models_zip(up, raw)
    rewrite_sums(up)
    return "MANIFEST.json in pretrained_models.zip is refused: it holds a number of 5000 digits"


def _sums_of_300_mb_comments(up: Path) -> str:
    _models_zip(up, manifest_bytes("models", MODELS))
    rewrite_sums(up)
    line = b"# " + b"x" * 77 + b"\n"
    with (up / "SHA256SUMS").open("ab") as out:
        block = line * (1 << 16)
        for _ in range(300 * (1 << 20) // len(block)):
            out.write(block)
    return "SHA256SUMS is larger than 1048576 bytes"


def _models_with_a_sums_size_of(up: Path, digits: int) -> None:
    _models_zip(up, manifest_bytes("models", MODELS))
    rewrite_sums(up)
    sums = up / "SHA256SUMS"
    sums.write_text("# size %s pretrained_models.zip\n" % ("7" * digits) + sums.read_text())


def _sums_with_a_5000_digit_size(up: Path) -> str:
    _models_with_a_sums_size_of(up, 5000)
    return "SHA256SUMS has a line longer than 4096 bytes"


def _sums_with_a_30_digit_size(up: Path) -> str:
    _models_with_a_sums_size_of(up, 30)
    return "SHA256SUMS line 1 gives a size of 30 digits, which no file has"


def _handmade_of_500000_empty_members(up: Path) -> str:
    (up / "pretrained_models.zip").write_bytes(zipcraft.many_empty(500000))
    return "declares 500000 members, more than the"


def _member_2494_folders_deep(up: Path) -> str:
    deep = "/".join(["d"] * 2494) + "/f.bin"
    files = dict(MODELS, **{deep: b"deep"})
    _models_zip(up, manifest_bytes("models", files), files)
    rewrite_sums(up)
    return "holds an unsafe member name"


def _handmade_member_2494_folders_deep(up: Path) -> str:
    deep = "/".join(["d"] * 2494) + "/f.bin"
    write_zip(up / "pretrained_models.zip", [("voice/a.bin", b"a"), (deep, b"deep")])
    return "holds an unsafe member name"


def _file_and_folder_of_one_name(up: Path) -> str:
    files = dict(MODELS, **{"voice/weights.bin/inner.bin": b"inner"})
    _models_zip(up, manifest_bytes("models", files), files)
    rewrite_sums(up)
    return "holds voice/weights.bin as a file and as the folder of voice/weights.bin/inner.bin"


def _handmade_file_and_folder_of_one_name(up: Path) -> str:
    write_zip(up / "pretrained_models.zip", [("voice/a", b"a"), ("voice/a/b", b"b")])
    return "holds voice/a as a file and as the folder of voice/a/b"


def _duplicate_over_a_member_folder(up: Path) -> str:
    import hashlib

    data = MODELS["voice/config.json"]
    dup = {"path": "voice/weights.bin/copy.json", "same-as": "voice/config.json", "size": len(data),
           "sha256": hashlib.sha256(data).hexdigest()}
    _models_zip(up, manifest_bytes("models", MODELS, meta={"duplicates": [dup]}))
    rewrite_sums(up)
    return "holds voice/weights.bin as a file and as the folder of voice/weights.bin/copy.json"


CASES: Dict[str, Callable[[Path], str]] = {
    "MANIFEST.json of 200 MB nested lists": _manifest_of_200_mb_nested_lists,
    "MANIFEST.json of ten million empty lists": _manifest_of_millions_of_empty_lists,
    "MANIFEST.json nested 200,000 deep": _manifest_nested_200000_deep,
    "MANIFEST.json with a 5,000-digit size": _manifest_with_a_5000_digit_size,
    "SHA256SUMS of 300 MB comments": _sums_of_300_mb_comments,
    "SHA256SUMS with a 5,000-digit size": _sums_with_a_5000_digit_size,
    "SHA256SUMS with a 30-digit size": _sums_with_a_30_digit_size,
    "hand-made zip of 500,000 empty members": _handmade_of_500000_empty_members,
    "member path 2,494 folders deep": _member_2494_folders_deep,
    "hand-made member path 2,494 folders deep": _handmade_member_2494_folders_deep,
    "a file and a folder of one name": _file_and_folder_of_one_name,
    "hand-made: a file and a folder of one name": _handmade_file_and_folder_of_one_name,
    "a duplicate inside a member's name": _duplicate_over_a_member_folder,
}


def check_refuses(case: str, tmp_path: Path) -> Tuple[str, str]:
    up = tmp_path / "upload"
    up.mkdir()
    expected = CASES[case](up)
    to = tmp_path / "to"
    proc = cosyinstall_limited("check", "--from", str(up), "--to", str(to))
    assert proc.returncode == 3, (case, proc.stdout, proc.stderr[-3000:])
    assert "MemoryError" not in proc.stderr and "RecursionError" not in proc.stderr, proc.stderr[-3000:]
    return expected, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_upload_is_refused_with_exit_3_in_512_mb(case: str, tmp_path: Path) -> None:
    expected, said = check_refuses(case, tmp_path)
    assert "Traceback" not in said, said[-3000:]
    sentence = one_sentence(said)
    assert expected in said, (case, sentence, said[-2000:])
    assert not (tmp_path / "to").exists(), "check wrote into --to"


def test_the_writer_refuses_a_manifest_the_box_would_refuse(tmp_path: Path) -> None:
    """cosybuild pack writes through zipwrite: a manifest beyond the box's bounds fails at pack time, not after the upload."""
    sys.path.insert(0, INSTALLER)
    from cosyinstall.errors import ArtifactRejected
    from cosyinstall.zipwrite import Member, write_artifact

    source = tmp_path / "a.bin"
    source.write_bytes(b"a")
    deep: object = "leaf"
    for _ in range(40):
        deep = [deep]
    out = tmp_path / "pretrained_models.zip"
    with pytest.raises(ArtifactRejected) as refused:
        write_artifact(str(out), "models", "deep", {}, [Member("voice/a.bin", str(source), 1)], {"pin": deep})
    assert "would be refused by cosyinstall: it nests deeper than 32 levels" in refused.value.message
    assert not out.exists() and list(tmp_path.iterdir()) == [source]


@pytest.mark.parametrize("command", ["status", "stop"])
def test_server_record_nested_200000_deep_is_no_record(command: str, tmp_path: Path) -> None:
    pid = Path(InstallTree(str(tmp_path / "to")).server_pid)
    pid.parent.mkdir(parents=True)
    pid.write_bytes(b"[" * 200000 + b"]" * 200000)
    proc = cosyinstall_limited(command, "--to", str(tmp_path / "to"))
    # A damaged record is no record: status says nothing is installed (its documented exit 3), stop
    # that no server ran (0).
    assert proc.returncode == (3 if command == "status" else 0), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr


def test_json_bounds_are_exact() -> None:
    sys.path.insert(0, INSTALLER)
    from cosyinstall.boundedjson import MAX_DEPTH, MAX_INT_DIGITS, JsonRefused, loads_bounded

    assert loads_bounded(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    with pytest.raises(JsonRefused, match="nests deeper"):
        loads_bounded(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert loads_bounded(b"9" * MAX_INT_DIGITS) == int("9" * MAX_INT_DIGITS)
    with pytest.raises(JsonRefused, match="number of 20 digits"):
        loads_bounded(b"-" + b"9" * (MAX_INT_DIGITS + 1))
    assert loads_bounded(b"[0,1,2]", max_values=4) == [0, 1, 2]
    with pytest.raises(JsonRefused, match="more than 3 values"):
        loads_bounded(b"[0,1,2]", max_values=3)
    with pytest.raises(JsonRefused, match="larger than 4 bytes"):
        loads_bounded(b"[1, 2]", limit=4)
    with pytest.raises(JsonRefused, match="not UTF-8"):
        loads_bounded(b'"\xff"')


def test_file_and_folder_clash_finds_every_shape() -> None:
    sys.path.insert(0, INSTALLER)
    from cosyinstall.errors import ArtifactRejected
    from cosyinstall.nameclash import check_no_clash

    # Siblings that sort between a name and its folder ('a-b', 'a.c' < 'a/'): no clash.
    check_no_clash(["a-b", "a.c", "a0/x", "a/c/d", "a/e", "b"], "zip")
    for paths, file, inner in ((["a", "a/b"], "a", "a/b"), (["x/a-b", "x/a", "x/a/c/d"], "x/a", "x/a/c/d"),
                               (["A/b", "a"], "a", "A/b")):
        with pytest.raises(ArtifactRejected) as refused:
            check_no_clash(paths, "zip")
        assert refused.value.message == "zip holds %s as a file and as the folder of %s" % (file, inner)
