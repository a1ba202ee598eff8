"""Issue 10 end to end, in Debian box images entered offline (chroot under unshare -n):

(a) the demo packed without a bundled CPython, on bullseye (glibc 2.31, python3.9 only):
    exit 4, and the sentence names bundle-python;
(b) the demo packed with bundle-python = true, on bookworm (python3.11, no 3.10): apply, the
    server answers through mpirun, verify is clean, and the venv is made from the bundled CPython;
(c) that same bundle on bullseye, whose glibc 2.31 is older than the bundled CPython's floor:
    exit 4 naming both glibc versions, nothing changed.

The bundled CPython is the loopback STAND-IN of tests/pythonstandin.py (the real relocatable
builds are downloaded from outside the package registries, unreachable here), fetched by the
real `uv python install` at lock time through UV_PYTHON_DOWNLOADS_JSON_URL.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cosyinstall.tree import InstallTree
from boximages import cache_root
from pythonstandin import make_standin, pack_bundled_demo
from support import free_port, one_sentence, tree_snapshot

pytestmark = pytest.mark.e2e

UPLOAD = "/root/autodl-tmp"
TO = UPLOAD + "/CosyVoice"
PYZ = ["python3", UPLOAD + "/cosyinstall.pyz"]


@pytest.fixture(scope="module")
def bundled_dist(tmp_path_factory: pytest.TempPathFactory, build_cache: Path) -> Path:
    """The demo packed with the stand-in CPython bundled (locked through uv from loopback)."""
    work = tmp_path_factory.mktemp("bundled")
    archive = make_standin(cache_root().parent / "standin")
    dist, proc, lock = pack_bundled_demo(work, archive)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bundled CPython 3.10." in proc.stdout + proc.stderr
    assert "adds %.1f MB" % (archive.stat().st_size / 1e6) in proc.stdout + proc.stderr
    pin = lock["python"]
    assert pin["archive"] == archive.name and pin["size"] == archive.stat().st_size
    return dist


def bundled_meta(dist: Path) -> dict:
    import zipfile

    with zipfile.ZipFile(dist / "offline_packages.zip") as z:
        return json.loads(z.read("MANIFEST.json"))["bundled-python"]


def upload(dist: Path, tmp_path: Path) -> Path:
    up = tmp_path / "autodl-tmp"
    shutil.copytree(dist, up)
    return up


def refused_on_bullseye(dist: Path, make_box, tmp_path: Path) -> str:
    """apply of dist on bullseye: exit 4, the uploads untouched, nothing installed; the sentence."""
    up = upload(dist, tmp_path)
    before = tree_snapshot(up)
    box = make_box("bullseye", {str(up): UPLOAD})
    proc = box.run(PYZ + ["apply"], timeout=600)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert tree_snapshot(up) == before
    assert not (up / "CosyVoice").exists()
    return one_sentence(proc.stderr)


def test_a_demo_without_bundle_on_bullseye_names_bundle_python(bullseye: Path, demo_dist: Path, make_box, tmp_path: Path) -> None:
    sentence = refused_on_bullseye(demo_dist, make_box, tmp_path)
    assert "bundle-python" in sentence and "3.9" in sentence, sentence


def test_b_bundled_cpython_on_bookworm_serves_and_verifies(bookworm: Path, bundled_dist: Path, make_box, tmp_path: Path) -> None:
    up = upload(bundled_dist, tmp_path)
    box = make_box("bookworm", {str(up): UPLOAD})
    port = free_port()
    applied = box.run(PYZ + ["apply", "--port", str(port)], timeout=900)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    out = applied.stdout + applied.stderr
    assert "bundled CPython 3.10." in out and "this box has 3.11 only" in out
    assert "server ready: http://127.0.0.1:%d/" % port in out
    page = box.run(["python3", "-c", "import urllib.request as u; print(u.urlopen('http://127.0.0.1:%d/', timeout=10).read().decode())" % port])
    assert page.returncode == 0 and "six 1.16.0, idna 3.10" in page.stdout, page.stdout + page.stderr
    status = box.run(PYZ + ["status", "--json"])
    info = json.loads(status.stdout)
    assert info["running"] is True and info["ready"] is True
    log = (up / "CosyVoice" / ".cosyinstall" / "server.log").read_text(encoding="utf-8")
    assert "mpirun" in log and "启动在端口 %d" % port in log
    verify = box.run(PYZ + ["verify"], timeout=600)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # The venv is made from the bundled CPython unpacked in the tree, whose libpython the
    # server finds through LD_LIBRARY_PATH.
    cfg = (up / "CosyVoice" / ".venv" / "pyvenv.cfg").read_text()
    home = [line.split("=", 1)[1].strip() for line in cfg.splitlines() if line.startswith("home")][0]
    assert home.startswith(InstallTree(TO).bundled_python + "/3.10.") and home.endswith("/bin"), cfg
    base = box.run([TO + "/.venv/bin/python", "-c", "import sys; print(sys.base_prefix, sys.version_info[:2])"])
    assert base.stdout.split()[0] == home[: -len("/bin")], base.stdout + base.stderr
    pid = info["pid"]
    env = box.run(["sh", "-c", "tr '\\0' '\\n' < /proc/%s/environ" % pid]).stdout
    ld = [line for line in env.splitlines() if line.startswith("LD_LIBRARY_PATH=")]
    assert ld and home[: -len("/bin")] + "/lib" in ld[0].split("=", 1)[1].split(":"), env
    stop = box.run(PYZ + ["stop"])
    assert stop.returncode == 0, stop.stdout + stop.stderr


def test_c_bundle_newer_than_bullseye_glibc_names_both(bullseye: Path, bundled_dist: Path, make_box, tmp_path: Path) -> None:
    sentence = refused_on_bullseye(bundled_dist, make_box, tmp_path)
    floor = bundled_meta(bundled_dist)["glibc_floor"]
    assert tuple(map(int, floor.split("."))) > (2, 31), floor  # the stand-in was compiled on a newer glibc
    assert "glibc 2.31" in sentence and "glibc %s" % floor in sentence, sentence
