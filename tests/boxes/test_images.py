"""The box images are what the end-to-end tests take them for: old and new Debian userlands,
their own CPython only, no unzip, and no network once entered."""

from __future__ import annotations

from pathlib import Path

import pytest

from boximages import SUITES, stamp

PROBE = ("import os, sys, shutil; print('%d.%d' % sys.version_info[:2]); "
         "print(os.confstr('CS_GNU_LIBC_VERSION').split()[1]); "
         "print(shutil.which('python3.10') or '-'); print(shutil.which('unzip') or '-')")
NET = ("import socket; s = socket.socket(); s.settimeout(3)\n"
       "try:\n s.connect(('1.1.1.1', 80)); print('online')\nexcept OSError as e: print('offline', e.errno)")


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_image_facts(suite: str, request, make_box, tmp_path: Path) -> None:
    request.getfixturevalue(suite)
    box = make_box(suite, {str(tmp_path / "up"): "/root/autodl-tmp"})
    proc = box.run(["python3", "-c", PROBE])
    assert proc.returncode == 0, proc.stderr
    python, glibc, py310, unzip = proc.stdout.split()
    assert (python, glibc) == (SUITES[suite]["python"], SUITES[suite]["glibc"])
    assert py310 == "-" and unzip == "-"
    net = box.run(["python3", "-c", NET])
    assert net.stdout.startswith("offline"), net.stdout + net.stderr
    # The bind mount is the host folder: what the box writes there, the test reads.
    assert box.run(["sh", "-c", "echo made > /root/autodl-tmp/made"]).returncode == 0
    assert (tmp_path / "up" / "made").read_text() == "made\n"
    info = stamp(suite)
    assert info["seconds"] > 0 and info["bytes"] > 50_000_000


def test_box_writes_stay_out_of_the_cached_image(bullseye: Path, make_box) -> None:
    box = make_box("bullseye")
    assert box.run(["sh", "-c", "echo x > /etc/cosy-test"]).returncode == 0
    assert box.path("/etc/cosy-test").read_text() == "x\n"
    assert not (bullseye / "etc" / "cosy-test").exists()
