"""Bad uploads are refused by `apply` (offline) with exit 3, one sentence, and nothing written.

Each case changes one thing in an otherwise installable bundle. Some are caught by SHA256SUMS
or the central directory at preflight, some only while extracting (a zip whose SHA256SUMS was
made to match); either way --to is left as it was found and nothing is claimed installed.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Callable, Dict

import pytest

from support import apply_argv, manifest_bytes, one_sentence, patch_file, pyz, rewrite_sums, run, write_zip

APP = {"app/server.py": b"print('hello')\n", "app/asset/speakers/a.json": b"{}\n"}
MODELS = {"voice/config.json": b'{"sr": 22050}\n', "voice/weights.bin": bytes(range(256)) * 64}


def _packages(folder: Path, extra=(), app=APP) -> None:
    files = dict(app)
    files["uv/uv"] = b"#!/bin/sh\nexit 0\n"  # never run: every case fails before the venv step
    files["requirements.txt"] = b"# nothing\n"
    members = [(n, d) for n, d in sorted(files.items())] + list(extra)
    members.append(("MANIFEST.json", manifest_bytes("packages", files, meta={"packages": []})))
    write_zip(folder / "offline_packages.zip", members)


def _models(folder: Path, files=MODELS, extra=(), manifest=None) -> Path:
    members = [(n, d) for n, d in sorted(files.items())] + list(extra)
    members.append(("MANIFEST.json", manifest if manifest is not None else manifest_bytes("models", files)))
    # Stored, like the builder stores weights, so a test can flip a byte of the data in place.
    return write_zip(folder / "pretrained_models.zip", members, compress=zipfile.ZIP_STORED)


def _special(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def _truncated(up: Path) -> str:
    rewrite_sums(up)
    path = up / "pretrained_models.zip"
    path.write_bytes(path.read_bytes()[:-100])
    return "truncated: %d bytes on disk, %d expected" % (path.stat().st_size, path.stat().st_size + 100)


def _flipped(up: Path) -> str:
    rewrite_sums(up)
    patch_file(up / "pretrained_models.zip", b'{"sr": 22050}', b'{"sr": 22051}')
    return "voice/config.json in pretrained_models.zip is corrupt"


def _flipped_with_matching_sums(up: Path) -> str:
    # Whoever changed the byte also rewrote SHA256SUMS: the manifest's sha256 still catches it,
    # during extraction, before anything is moved into --to.
    patch_file(up / "pretrained_models.zip", b'{"sr": 22050}', b'{"sr": 22051}')
    rewrite_sums(up)
    return "voice/config.json in pretrained_models.zip is corrupt"


def _unlisted(up: Path) -> str:
    _models(up, extra=[("voice/extra.txt", b"surprise")])
    rewrite_sums(up)
    return "voice/extra.txt, which its manifest does not list"


def _duplicate(up: Path) -> str:
    _models(up, extra=[("voice/config.json", b'{"sr": 1}\n')])
    rewrite_sums(up)
    return "holds the member voice/config.json twice"


def _symlink(up: Path) -> str:
    files = dict(MODELS, **{"voice/link": b"/etc/passwd"})
    members = [(n, d) for n, d in sorted(MODELS.items())] + [(_special("voice/link", stat.S_IFLNK | 0o777), b"/etc/passwd")]
    members.append(("MANIFEST.json", manifest_bytes("models", files)))
    write_zip(up / "pretrained_models.zip", members)
    rewrite_sums(up)
    return "'voice/link', which is a symbolic link"


def _device(up: Path) -> str:
    files = dict(MODELS, **{"voice/dev": b""})
    members = [(n, d) for n, d in sorted(MODELS.items())] + [(_special("voice/dev", stat.S_IFCHR | 0o600), b"")]
    members.append(("MANIFEST.json", manifest_bytes("models", files)))
    write_zip(up / "pretrained_models.zip", members)
    rewrite_sums(up)
    return "'voice/dev', which is not a regular file"


def _dotdot(up: Path) -> str:
    _models(up, extra=[("../../../evil.txt", b"pwned")])
    rewrite_sums(up)
    return "unsafe member name '../../../evil.txt'"


def _absolute(up: Path) -> str:
    target = up.parent / "abs" / "evil.txt"
    _models(up, extra=[(str(target), b"pwned")])
    rewrite_sums(up)
    return "unsafe member name '%s' (absolute path)" % target


def _backslash(up: Path) -> str:
    _models(up, extra=[("..\\..\\evil.txt", b"pwned")])
    rewrite_sums(up)
    return "(backslash)"


def _size_lie(up: Path) -> str:
    _models(up, manifest=manifest_bytes("models", MODELS, sizes={"voice/weights.bin": 100}))
    rewrite_sums(up)
    return "voice/weights.bin is 16384 bytes in the zip but 100 in its manifest"


def _bomb(up: Path) -> str:
    # 64 MiB + 3: bytes that occur only in the size fields (plain 64 MiB also matched the end record's counts)
    bomb = b"\0" * (64 * 1024 * 1024 + 3)
    files = dict(MODELS, **{"voice/bomb.bin": bomb[:1000]})
    members = [(n, d) for n, d in sorted(MODELS.items())] + [("voice/bomb.bin", bomb)]
    members.append(("MANIFEST.json", manifest_bytes("models", files)))
    path = write_zip(up / "pretrained_models.zip", members)
    patch_file(path, len(bomb).to_bytes(4, "little"), (1000).to_bytes(4, "little"))
    rewrite_sums(up)
    return "voice/bomb.bin in pretrained_models.zip is corrupt"


def _app_over_venv(up: Path) -> str:
    _packages(up, app=dict(APP, **{"app/.venv/bin/python": b"evil"}))
    rewrite_sums(up)
    return "app member app/.venv/bin/python would overwrite the installer's own .venv"


def _missing_member(up: Path) -> str:
    files = dict(MODELS, **{"voice/tokenizer.json": b"{}"})
    _models(up, files=MODELS, manifest=manifest_bytes("models", files))
    rewrite_sums(up)
    return "lacks voice/tokenizer.json, which its manifest lists"


CASES: Dict[str, Callable[[Path], str]] = {
    "truncated upload": _truncated,
    "one flipped byte": _flipped,
    "flipped byte, sums rewritten": _flipped_with_matching_sums,
    "unlisted member": _unlisted,
    "duplicate member": _duplicate,
    "symlink member": _symlink,
    "device member": _device,
    "dot-dot name": _dotdot,
    "absolute name": _absolute,
    "backslash name": _backslash,
    "size lie in the manifest": _size_lie,
    "zip bomb": _bomb,
    "app over .venv": _app_over_venv,
    "member missing": _missing_member,
}


def _listing(root: Path) -> Dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_upload_is_refused_with_exit_3_and_nothing_written(case: str, demo_dist: Path, tmp_path: Path) -> None:
    up = tmp_path / "upload"
    up.mkdir()
    shutil.copy(demo_dist / "cosyinstall.pyz", up)
    _packages(up)
    _models(up)
    expected = CASES[case](up)
    before = _listing(tmp_path)
    to = tmp_path / "to"
    proc = run(apply_argv(up, to))
    assert proc.returncode == 3, (case, proc.stdout, proc.stderr)
    sentence = one_sentence(proc.stderr)
    assert expected in sentence, (case, sentence)
    assert not to.exists(), "a refused apply left %s behind" % sorted(p.name for p in to.iterdir())
    assert _listing(tmp_path) == before, "something was written outside --to"
    assert not (tmp_path / "abs").exists()
    verify = run(pyz(up, "verify", "--to", str(to)))
    assert verify.returncode == 3 and "nothing is installed" in one_sentence(verify.stderr)


def test_refusal_on_an_installed_tree_keeps_it_intact(demo_dist: Path, tmp_path: Path) -> None:
    """A bad update is refused and the working install stays exactly as it was."""
    from support import tree_snapshot

    up = tmp_path / "upload"
    shutil.copytree(demo_dist, up)
    to = tmp_path / "to"
    first = run(apply_argv(up, to))
    assert first.returncode == 0, first.stderr
    before = tree_snapshot(to)
    _flipped_with_matching_sums_models(up)
    proc = run(apply_argv(up, to))
    assert proc.returncode == 3, proc.stderr
    assert "is corrupt" in one_sentence(proc.stderr)
    after = tree_snapshot(to)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= {".cosygen/state.json", ".cosyinstall/install.log"}, changed
    assert run(pyz(up, "verify", "--to", str(to))).returncode == 0


def _flipped_with_matching_sums_models(up: Path) -> None:
    """A new models version (so there is work to do) whose stored weights got a flipped byte."""
    from cosyinstall.artifact import ArtifactManifest
    from cosyinstall.zipwrite import Member, write_artifact

    path = up / "pretrained_models.zip"
    work = up.parent / "models-v2"
    with zipfile.ZipFile(path) as z:
        manifest = ArtifactManifest.from_bytes(z.read("MANIFEST.json"))
        z.extractall(work, [e.path for e in manifest.files])
    weights = work / "demo-voice" / "voice.bin"
    weights.write_bytes(b"\x07" * 8192)
    members = [Member(e.path, str(work / e.path), (work / e.path).stat().st_size, None, e.executable)
               for e in manifest.files]
    write_artifact(str(path), "models", manifest.name, manifest.target, members, manifest.meta)
    patch_file(path, b"\x07" * 16, b"\x06" + b"\x07" * 15)
    rewrite_sums(up)


def test_check_shows_the_table_and_refuses_a_truncated_upload_without_writing(demo_dist: Path, tmp_path: Path) -> None:
    up = tmp_path / "upload"
    shutil.copytree(demo_dist, up)
    zpath = up / "offline_packages.zip"
    full = zpath.stat().st_size
    with zpath.open("r+b") as f:
        f.truncate(full // 2)
    to = tmp_path / "to"
    proc = run(["unshare", "-n", "sh", "-c", "ip link set lo up && exec " + " ".join(
        pyz(up, "check", "--from", str(up), "--to", str(to)))])
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "FAIL  offline_packages.zip" in proc.stdout
    assert "ok    pretrained_models.zip" in proc.stdout and "machine" in proc.stdout
    sentence = one_sentence(proc.stderr)
    assert "offline_packages.zip is truncated: %d bytes on disk, %d expected" % (full // 2, full) in sentence
    assert not to.exists()
