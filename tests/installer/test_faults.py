"""Crash safety: SIGKILL at many moments of apply, then a plain apply finishes the job.

After each kill the tree must equal a clean install's (every file's content and mode, links
and directories; .cosyinstall's logs and state aside) and `cosyinstall verify` must pass.
Kills land on progress lines (each step's extract, publish, venv build, uv install, models)
and at fractions of a clean run's duration, so they fall inside uv's work as well.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import threading
import time
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple

from support import apply_argv, one_sentence, pyz, rewrite_sums, run, tree_digest


def _wipe(to: Path) -> None:
    """Remove an install: the <to> link and its hidden home of generations."""
    if os.path.islink(to):
        os.unlink(to)
    shutil.rmtree(to, ignore_errors=True)
    shutil.rmtree(to.parent / (".%s.cosy" % to.name), ignore_errors=True)


def _saved(to: Path, dest: Path) -> Tuple[Path, str]:
    shutil.copytree(to.parent / (".%s.cosy" % to.name), dest, symlinks=True)
    return dest, os.readlink(to)


def _restore(saved: Tuple[Path, str], to: Path) -> None:
    _wipe(to)
    shutil.copytree(saved[0], to.parent / (".%s.cosy" % to.name), symlinks=True)
    os.symlink(saved[1], to)


def _start(dist: Path, to: Path, *extra: str) -> subprocess.Popen:
    # A session of its own, so the kill takes uv and every other child along, like a crash.
    return subprocess.Popen(apply_argv(dist, to, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _run_and_kill(dist: Path, to: Path, after_lines: Optional[int], after_seconds: Optional[float]) -> Tuple[bool, str]:
    """Start apply and SIGKILL it after N stderr lines or T seconds; (killed before it ended, its stderr)."""
    proc = _start(dist, to)
    timer = None
    if after_seconds is not None:
        timer = threading.Timer(after_seconds, _kill, [proc])
        timer.start()
    seen: List[bytes] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if after_lines is not None and len(seen) >= after_lines:
            _kill(proc)
            break
    proc.communicate()
    if timer is not None:
        timer.cancel()
    return proc.returncode == -signal.SIGKILL, b"".join(seen).decode("utf-8", "replace")


def _finish_and_check(dist: Path, to: Path, clean: dict, label: str) -> None:
    again = run(apply_argv(dist, to))
    assert again.returncode == 0, (label, again.stdout, again.stderr)
    verify = run(pyz(dist, "verify", "--to", str(to)))
    assert verify.returncode == 0, (label, verify.stderr)
    now = tree_digest(to)
    # uv records where it installed a model's wheel from (direct_url.json, and its RECORD line):
    # the generation's folder, whose number differs after an interrupted apply started again.
    differ = sorted(k for k in clean.keys() | now.keys() if clean.get(k) != now.get(k)
                    and not k.endswith(("/direct_url.json", ".dist-info/RECORD")))
    assert not differ, (label, differ[:10])
    leftovers = {"staging", "uv-cache", "work"} & set(os.listdir(to / ".cosyinstall"))
    assert not leftovers, (label, leftovers)


def test_sigkill_at_many_moments_then_apply_completes_like_a_clean_install(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    started = time.monotonic()
    first = run(apply_argv(dist, to))
    clean_seconds = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    clean = tree_digest(to)
    lines = first.stderr.count("\n")
    print("clean apply: %.2fs, %d progress lines" % (clean_seconds, lines))
    moments: List[Tuple[Optional[int], Optional[float]]] = [(n, None) for n in range(1, lines)]
    moments += [(None, clean_seconds * f) for f in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.95)]
    killed = []
    for after_lines, after_seconds in moments:
        _wipe(to)
        was_killed, said = _run_and_kill(dist, to, after_lines, after_seconds)
        label = "kill after %s" % ("%d lines" % after_lines if after_lines else "%.2fs" % after_seconds)
        if was_killed:
            last = said.strip().splitlines()[-1] if said.strip() else "(nothing yet)"
            killed.append("%s: last line %r" % (label, last[:80]))
        _finish_and_check(dist, to, clean, label)
    print("\n".join(killed))
    assert len(killed) >= 10, "only %d runs were killed before they ended: %s" % (len(killed), killed)


def _models_v2(dist: Path, work: Path) -> None:
    """A new pretrained_models.zip: one file changed, one added, one dropped."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "installer"))
    from cosyinstall.artifact import ArtifactManifest
    from cosyinstall.zipwrite import Member, write_artifact

    path = dist / "pretrained_models.zip"
    with zipfile.ZipFile(path) as z:
        manifest = ArtifactManifest.from_bytes(z.read("MANIFEST.json"))
        z.extractall(work, [e.path for e in manifest.files])
    files = sorted(e.path for e in manifest.files if e.path != "demo-voice/config.json")
    (work / "demo-voice" / "voice.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    added = work / "demo-voice" / "added.bin"
    added.write_bytes(os.urandom(2 * 1024 * 1024))
    members = [Member(p, str(work / p), (work / p).stat().st_size) for p in files]
    members.append(Member("demo-voice/added.bin", str(added), added.stat().st_size))
    write_artifact(str(path), "models", manifest.name, manifest.target, members, manifest.meta)
    rewrite_sums(dist)


def test_sigkill_during_an_update_then_apply_completes_the_update(dist: Path, tmp_path: Path) -> None:
    """Interrupted updates leave old and new files mixed; the next apply sorts them out."""
    reference = tmp_path / "reference"
    assert run(apply_argv(dist, reference)).returncode == 0
    v1 = tree_digest(reference)
    base = _saved(reference, tmp_path / "base")
    _models_v2(dist, tmp_path / "v2")
    started = time.monotonic()
    update = run(apply_argv(dist, reference))
    update_seconds = time.monotonic() - started
    assert update.returncode == 0, update.stderr
    clean = tree_digest(reference)
    assert clean != v1
    lines = update.stderr.count("\n")
    killed = 0
    # Every progress line of the update is a moment, the switch ("now current") included.
    moments = [(n, None) for n in range(1, lines)] + [(None, update_seconds * f) for f in (0.3, 0.6, 0.9)]
    for after_lines, after_seconds in moments:
        _restore(base, reference)
        was_killed, _said = _run_and_kill(dist, reference, after_lines, after_seconds)
        killed += was_killed
        _finish_and_check(dist, reference, clean, "update killed after %s" % (after_lines or after_seconds))
    print("update: %.2fs, %d runs killed" % (update_seconds, killed))
    assert killed >= 3


def test_a_second_apply_refuses_while_one_runs_or_waits_with_wait(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    first = _start(dist, to)
    assert first.stderr is not None
    for line in first.stderr:
        if b"step app: extracting" in line:
            # Frozen while it holds the lock: the overlap is certain, not a race.
            os.kill(first.pid, signal.SIGSTOP)
            break
    try:
        second = run(apply_argv(dist, to))
        assert second.returncode == 4, second.stderr
        assert "another cosyinstall apply is working on %s" % to in one_sentence(second.stderr)
        waiter = _start(dist, to, "--wait")
        assert waiter.stderr is not None
        said = b""
        for line in waiter.stderr:
            said += line
            if b"waiting for it to finish" in line:
                break
        assert b"waiting for it to finish" in said
        assert waiter.poll() is None
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    out, err = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, err
    assert b"nothing changed" in out, "the waiting apply must see the finished install, not redo it"
    assert run(pyz(dist, "verify", "--to", str(to))).returncode == 0


def test_the_lock_is_released_when_apply_is_killed(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    was_killed, _ = _run_and_kill(dist, to, after_lines=8, after_seconds=None)
    assert was_killed
    # Before the first switch <to> does not exist yet: the lock is in the shared state beside it.
    with open(to.parent / (".%s.cosy" % to.name) / "state" / "lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
