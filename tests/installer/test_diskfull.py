"""A full disk: refused up front when preflight can see it, and cleaned up when it fills mid-way.

--to is a small tmpfs (mounted here as root; where mounting is not permitted the tests say so
and skip). To fill the disk *during* extraction, after preflight has passed, the test holds
the apply lock, lets `apply --wait` pass preflight and block, fills the tmpfs, then lets go.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from support import apply_argv, one_sentence, pyz, run

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "installer"))

from cosyinstall.tree import InstallTree  # noqa: E402


@contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted on this machine (%s), so a full disk cannot be made"
                    % (proc.stderr.strip() or "mount exit %d" % proc.returncode))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_too_small_a_disk_is_refused_by_preflight_with_exit_4(dist: Path, tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", "20m") as to:
        proc = run(apply_argv(dist, to))
        assert proc.returncode == 4, proc.stdout + proc.stderr
        sentence = one_sentence(proc.stderr)
        assert "free on %s but about" % to in sentence and "is needed" in sentence
        assert "FAIL  disk" in proc.stdout
        assert os.listdir(to) == [], "a refused apply wrote into --to"


def _fill(root: Path, leave: int) -> Path:
    filler = root / "filler.bin"
    block = b"\0" * (8 << 20)
    with filler.open("wb") as out:
        while True:
            st = os.statvfs(root)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                out.write(block[: min(len(block), free - leave)])
                out.flush()
            except OSError:
                break
    return filler


def apply_with_disk_left(dist: Path, to: Path, leave: int, disk: Path) -> Tuple[subprocess.CompletedProcess, Path]:
    """`apply --wait` of dist into to, `disk` filled to `leave` free bytes once preflight has passed.

    (the finished apply, the ballast file to delete to give the space back)
    """
    lock = Path(InstallTree(str(to)).lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = open(lock, "a+")
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
    proc = subprocess.Popen(apply_argv(dist, to, "--wait"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        said = b""
        for line in proc.stderr:
            said += line
            if b"waiting for it to finish" in line:
                break
        assert b"waiting for it to finish" in said, said.decode()
        # Preflight has passed; now the disk fills (another program, in real life).
        filler = _fill(disk, leave)
    finally:
        holder.close()
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), said.decode() + err.decode()), filler


def test_disk_filling_up_during_extraction_ends_in_one_sentence_and_no_partial_state(dist: Path, tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "600m") as disk:
        # --to inside the disk: <to> becomes the link that switches generations, beside its home.
        to = disk / "CosyVoice"
        done, filler = apply_with_disk_left(dist, to, leave=4 << 20, disk=disk)
        stderr = done.stderr
        assert done.returncode == 4, done.stdout + stderr
        sentence = one_sentence(stderr)
        assert "the disk filled up while writing" in sentence
        assert "free some space and run apply again; nothing was left behind" in sentence
        left = sorted(os.listdir(disk))
        assert left in (["filler.bin"], [".CosyVoice.cosy", "filler.bin"]), "partial state left: %s" % left
        assert not os.path.lexists(to) and not os.path.exists(InstallTree(str(to)).gens)
        verify = run(pyz(dist, "verify", "--to", str(to)))
        assert verify.returncode == 3 and "nothing is installed" in one_sentence(verify.stderr)
        # With the space back, the same command installs.
        filler.unlink()
        again = run(apply_argv(dist, to))
        assert again.returncode == 0, again.stderr
        assert run(pyz(dist, "verify", "--to", str(to))).returncode == 0


def test_models_on_another_disk_through_a_symlink_install(dist: Path, tmp_path: Path) -> None:
    """pretrained_models/ linked to a second disk: files and model steps cross filesystems, still verified."""
    with _tmpfs(tmp_path / "second-disk", "200m") as disk:
        to = tmp_path / "to"
        to.mkdir()
        os.symlink(disk, to / "pretrained_models")
        proc = run(apply_argv(dist, to))
        assert proc.returncode == 0, proc.stderr
        assert (disk / "demo-voice" / "voice.bin").is_file()
        # The demo-frd model's steps ran across the filesystem boundary too.
        assert (disk / "demo-frd" / "resource" / "lexicon.txt").is_file()
        assert not (disk / ".model-steps.tmp").exists()
        assert os.path.islink(to / "pretrained_models")
        assert run(pyz(dist, "verify", "--to", str(to))).returncode == 0
