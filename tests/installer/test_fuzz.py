"""No input ends in exit 1: a seeded, bounded fuzz of MANIFEST.json, SHA256SUMS, state.json and zip bytes.

Each case mutates one input of the installed demo (one to three mutations: flipped, replaced,
deleted, repeated or inserted bytes, with tokens that break parsers: deep brackets, huge
numbers, NULs, stray quotes), runs `apply` offline and requires exit 0, 3 or 4 with one
sentence and never a traceback; the installed tree must still verify after every case, and
after all of them the original upload converges to the clean install. Upload mutations whose
zip still opens get their SHA256SUMS rewritten, so the mutated bytes reach the parsers behind it.
"""

from __future__ import annotations

import random
import shutil
import zipfile
from pathlib import Path
from typing import Callable, List, Tuple

import pytest

from support import STATE_AND_RECORDS, apply_argv, one_sentence, pyz, rewrite_sums, run, tree_differences, tree_digest
from test_repair import installed  # noqa: F401  (the module's demo install)
from cosyinstall.tree import InstallTree  # noqa: E402  (test_repair puts the installer on sys.path)

SEED = 20261201
TOKENS = [b"[", b"{", b"]", b"}", b'"', b"\\", b"\x00", b"-1", b"1e999", b"9" * 5000, b"[" * 5000, b"\xff\xfe",
          b"null", b"true", b",", b":", b'"size": -5', b'"path": "../x"', b'{"a": ' * 300]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(max(1, len(out)))
        kind = rng.randrange(6)
        if kind == 0 and out:
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and out:
            out[at] = rng.randrange(256)
        elif kind == 2:
            del out[at:at + rng.randint(1, 64)]
        elif kind == 3:
            out[at:at] = out[at:at + rng.randint(1, 64)]
        elif kind == 4:
            out[at:at] = rng.choice(TOKENS)
        else:
            del out[at:]
    return bytes(out)


def _with_manifest(src: Path, dst: Path, manifest: bytes) -> None:
    """src's zip again, its members as they are, with another MANIFEST.json."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            if info.filename != "MANIFEST.json":
                new.writestr(info, old.read(info))
        info = zipfile.ZipInfo("MANIFEST.json", (2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o100644 << 16
        new.writestr(info, manifest, zipfile.ZIP_DEFLATED)


def _manifest_case(rng: random.Random, demo: Path, up: Path) -> None:
    with zipfile.ZipFile(demo / "pretrained_models.zip") as z:
        raw = z.read("MANIFEST.json")
    _with_manifest(demo / "pretrained_models.zip", up / "pretrained_models.zip", mutate(rng, raw))
    rewrite_sums(up)


def _sums_case(rng: random.Random, demo: Path, up: Path) -> None:
    (up / "SHA256SUMS").write_bytes(mutate(rng, (demo / "SHA256SUMS").read_bytes()))


def _zip_case(name: str) -> Callable[[random.Random, Path, Path], None]:
    def case(rng: random.Random, demo: Path, up: Path) -> None:
        (up / name).write_bytes(mutate(rng, (demo / name).read_bytes()))
        rewrite_sums(up)
    return case


KINDS: List[Tuple[str, int, Callable[[random.Random, Path, Path], None]]] = [
    ("MANIFEST.json", 20, _manifest_case),
    ("SHA256SUMS", 10, _sums_case),
    ("pretrained_models.zip bytes", 20, _zip_case("pretrained_models.zip")),
    ("offline_packages.zip bytes", 4, _zip_case("offline_packages.zip")),
]


def _restore(demo: Path, up: Path) -> None:
    for name in ("pretrained_models.zip", "offline_packages.zip", "SHA256SUMS"):
        shutil.copy2(demo / name, up / name)


def _judge(proc, label: str) -> None:
    assert proc.returncode in (0, 3, 4), (label, proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, (label, proc.stderr[-3000:])
    if proc.returncode:
        sentence = one_sentence(proc.stderr)
        assert len(sentence) < 2000 and "\n" not in sentence, (label, sentence[:300])


@pytest.mark.parametrize("kind", [k[0] for k in KINDS])
def test_fuzzed_uploads_end_in_0_3_or_4_and_leave_the_install_intact(
        kind: str, installed: Tuple[Path, dict], demo_dist: Path, tmp_path: Path) -> None:  # noqa: F811
    to, clean = installed
    _label, count, make = next(k for k in KINDS if k[0] == kind)
    rng = random.Random("%d %s" % (SEED, kind))
    up = tmp_path / "upload"
    shutil.copytree(demo_dist, up)
    codes = []
    for number in range(count):
        label = "%s case %d" % (kind, number)
        _restore(demo_dist, up)
        make(rng, demo_dist, up)
        proc = run(apply_argv(up, to))
        _judge(proc, label)
        codes.append(proc.returncode)
        verify = run(pyz(demo_dist, "verify", "--to", str(to)))
        assert verify.returncode == 0, (label, verify.stderr[-2000:])
    print("%s: exit codes %s" % (kind, codes))
    # Most mutations must be refused: a fuzzer whose inputs all pass tests nothing.
    assert codes.count(3) >= count // 2, codes
    back = run(apply_argv(demo_dist, to))
    assert back.returncode == 0, back.stderr
    assert not tree_differences(clean, tree_digest(to, STATE_AND_RECORDS))


def test_fuzzed_journal_is_repaired_by_the_next_apply(installed: Tuple[Path, dict], demo_dist: Path) -> None:  # noqa: F811
    to, clean = installed
    rng = random.Random("%d state.json" % SEED)
    journal = Path(InstallTree(str(to)).journal)
    for number in range(5):
        label = "state.json case %d" % number
        journal.write_bytes(mutate(rng, journal.read_bytes()))
        proc = run(apply_argv(demo_dist, to))
        _judge(proc, label)
        assert proc.returncode == 0, (label, proc.stderr[-3000:])
        verify = run(pyz(demo_dist, "verify", "--to", str(to)))
        assert verify.returncode == 0, (label, verify.stderr[-2000:])
    assert not tree_differences(clean, tree_digest(to, STATE_AND_RECORDS))
